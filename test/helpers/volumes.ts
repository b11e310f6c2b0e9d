/** Test fixtures: volumes over memory or file devices, with a random wrapping key. */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { createFileDevice } from '../../appliance/device/file-device.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import type { Wrapper } from '../../appliance/strip/header.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';

export function testWrapper(): Wrapper {
  return { id: randomBytes(16), key: randomBytes(32) };
}

export interface Fixture {
  volume: Volume;
  devices: StorageDevice[];
  wrapper: Wrapper;
  reopen(devices?: (StorageDevice | null)[]): Promise<Volume>;
}

export async function memoryVolume(opts: { m: number; n: number; sizeBytes: number; blockBytes?: number }): Promise<Fixture> {
  const blockBytes = opts.blockBytes ?? 4096;
  const stripBytes = stripBytesForVolume(opts.sizeBytes, blockBytes, opts.m);
  const devices = Array.from({ length: opts.n }, (_, i) => new MemoryDevice(stripBytes, { id: `mem${i}` }));
  const wrapper = testWrapper();
  const volume = await Volume.create({
    name: 'test',
    m: opts.m,
    n: opts.n,
    sizeBytes: opts.sizeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
  });
  return {
    volume,
    devices,
    wrapper,
    reopen: (devs = devices) =>
      Volume.open({ locations: devs.map((device) => (device ? { device, base: 0 } : null)), wrappers: [wrapper], expectId: volume.id }),
  };
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'stripvault-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function fileDevices(dir: string, n: number, bytes: number): Promise<StorageDevice[]> {
  const out: StorageDevice[] = [];
  for (let i = 0; i < n; i++) out.push(await createFileDevice(join(dir, `strip${i}.img`), bytes));
  return out;
}
