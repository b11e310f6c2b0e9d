/**
 * Volume-level figures for issue 5, in one run on strip files: sequential write and read throughput
 * healthy and degraded (one strip missing), as a ratio of healthy; and rebuild speed (replace a
 * strip and scrub it full) next to the healthy write speed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { StorageDevice } from '../appliance/device/device.ts';
import { createFileDevice } from '../appliance/device/file-device.ts';
import { SplitPool } from '../appliance/split/split-pool.ts';
import type { Wrapper } from '../appliance/strip/header.ts';
import { Volume, stripBytesForVolume } from '../appliance/volume/volume.ts';
import { table } from './timing.ts';

const MiB = 1024 * 1024;
const volumeBytes = 256 * MiB;
const requestBytes = 1 * MiB;
const concurrency = 4;

async function pass(fn: (offset: number) => Promise<void>): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let o = next; o < volumeBytes; o = next) {
        next += requestBytes;
        await fn(o);
      }
    }),
  );
  return volumeBytes / MiB / ((performance.now() - started) / 1000);
}

export async function benchVolume(): Promise<Array<Record<string, string | number>>> {
  const dir = await mkdtemp(join(tmpdir(), 'stripvault-bench-volume-'));
  const pool = new SplitPool();
  const wrapper: Wrapper = { id: randomBytes(16), key: randomBytes(32) };
  const opened: StorageDevice[] = [];
  try {
    const stripBytes = stripBytesForVolume(volumeBytes, 4096, 2);
    const devices = [];
    for (let i = 0; i < 4; i++) devices.push(await createFileDevice(join(dir, `strip${i}.img`), stripBytes));
    opened.push(...devices);
    const v = await Volume.create({ name: 'bench', m: 2, n: 3, sizeBytes: volumeBytes, blockBytes: 4096, locations: devices.slice(0, 3).map((device) => ({ device, base: 0 })), wrappers: [wrapper], regionsZeroed: true, runner: pool });
    const data = randomBytes(volumeBytes);
    const write = await pass((o) => v.write(o, data.subarray(o, o + requestBytes)));
    const read = await pass(async (o) => void (await v.read(o, requestBytes)));
    await v.close();
    const d = await Volume.open({ locations: [{ device: devices[0]!, base: 0 }, null, { device: devices[2]!, base: 0 }], wrappers: [wrapper], runner: pool });
    const dRead = await pass(async (o) => void (await d.read(o, requestBytes)));
    const dWrite = await pass((o) => d.write(o, data.subarray(o, o + requestBytes)));
    // Rebuild: the missing strip is replaced by an empty one on the fourth file and scrubbed full.
    const started = performance.now();
    await d.replaceStrip(1, { device: devices[3]!, base: 0 }, { regionZeroed: true });
    const report = await d.scrub();
    const rebuild = volumeBytes / MiB / ((performance.now() - started) / 1000);
    await d.close();
    if (report.caughtUp.length !== 1) throw new Error('rebuild did not catch the strip up');
    return [
      { figure: 'sequential write, 1 MiB requests (MB/s)', healthy: write, degraded: dWrite, ratio: dWrite / write },
      { figure: 'sequential read, 1 MiB requests (MB/s)', healthy: read, degraded: dRead, ratio: dRead / read },
      { figure: 'rebuild of one strip, volume MB/s (vs healthy write)', healthy: write, degraded: rebuild, ratio: rebuild / write },
    ];
  } finally {
    await pool.close();
    for (const dev of opened) await dev.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(table(await benchVolume()));
}
