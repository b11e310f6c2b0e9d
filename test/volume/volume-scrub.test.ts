/**
 * Scrub: every share read and authenticated, every bad one repaired by rewriting its block, and a
 * strip that missed writes catches up and stops being stale.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';
import { memoryVolume } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;

test('scrub finds and repairs every corrupted share; a second pass finds nothing', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: 4 * MiB });
  const data = randomBytes(4 * MiB);
  await fx.volume.write(0, data);
  await fx.volume.close();
  // Corrupt shares on strip 2 — the parity strip, which normal reads never touch.
  const slotBytes = fx.volume.slotBytes;
  const hit = new Set<number>();
  for (let k = 0; k < 40; k++) {
    const block = Math.floor(Math.random() * 1024);
    hit.add(block);
    const off = dataOffset + block * slotBytes + 40 + Math.floor(Math.random() * 1000);
    const b = await fx.devices[2]!.read(off, 1);
    b[0]! ^= 0x10;
    await fx.devices[2]!.write(off, b);
  }
  const v = await fx.reopen();
  t.true((await v.read(0, 4 * MiB)).equals(data));
  t.is(v.health().repair.length, 0, 'normal reads use strips 0 and 1 and never see the damage');
  const seen: number[] = [];
  const report = await v.scrub({ onProgress: (p) => seen.push(p.blocksDone) });
  t.is(report.blocksRepaired, hit.size);
  t.is(report.blocksLost, 0);
  t.is(report.nextBlock, 1024);
  t.deepEqual(seen, [256, 512, 768, 1024]);
  t.is((await v.scrub()).blocksRepaired, 0);
  t.true((await v.read(0, 4 * MiB)).equals(data));
  // The repaired strip now serves reads on its own with one other.
  await v.close();
  const without0 = await fx.reopen([null, fx.devices[1]!, fx.devices[2]!]);
  t.true((await without0.read(0, 4 * MiB)).equals(data));
});

test('a strip that missed writes catches up in a scrub and is healthy again', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: 2 * MiB });
  const data = randomBytes(2 * MiB);
  await fx.volume.write(0, data);
  await fx.volume.close();
  const degraded = await fx.reopen([fx.devices[0]!, fx.devices[1]!, null]);
  const newer = randomBytes(MiB);
  await degraded.write(MiB / 2, newer);
  newer.copy(data, MiB / 2);
  await degraded.close();
  const back = await fx.reopen();
  t.is(back.health().strips[2]!.state, 'stale');
  const report = await back.scrub();
  t.is(report.blocksRepaired, 256);
  t.deepEqual(report.caughtUp, [2]);
  t.is(back.health().state, 'healthy');
  await back.close();
  // Stays caught up across a restart, and holds current data: strip 0 may now go.
  const again = await fx.reopen([null, fx.devices[1]!, fx.devices[2]!]);
  t.is(again.health().strips[2]!.state, 'healthy');
  t.true((await again.read(0, 2 * MiB)).equals(data));
});

test('a scrub can be stopped and resumed where it stopped; bad arguments are typed errors', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: 4 * MiB });
  await fx.volume.write(0, randomBytes(4 * MiB));
  const stop = new AbortController();
  const first = await fx.volume.scrub({ onProgress: (p) => p.blocksDone >= 512 && stop.abort(), signal: stop.signal });
  t.is(first.nextBlock, 512);
  const rest = await fx.volume.scrub({ fromBlock: first.nextBlock });
  t.is(rest.nextBlock, 1024);
  await t.throwsAsync(fx.volume.scrub({ fromBlock: 5000 }), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(fx.volume.scrub({ rateBytesPerSec: -1 }), { code: ErrorCode.InvalidArgument } as never);
});

test('blocks with fewer than M good shares are reported lost, never rewritten', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  await fx.volume.write(0, randomBytes(MiB));
  await fx.volume.close();
  for (const d of [1, 2]) {
    const off = dataOffset + 5 * fx.volume.slotBytes + 100;
    const b = await fx.devices[d]!.read(off, 1);
    b[0]! ^= 1;
    await fx.devices[d]!.write(off, b);
  }
  const v = await fx.reopen();
  const before = await fx.devices[0]!.read(dataOffset + 5 * v.slotBytes, v.slotBytes);
  const report = await v.scrub();
  t.is(report.blocksLost, 1);
  t.deepEqual(report.lost, [5]);
  t.true((await fx.devices[0]!.read(dataOffset + 5 * v.slotBytes, v.slotBytes)).equals(before));
  await t.throwsAsync(v.read(5 * 4096, 1), { code: ErrorCode.NotEnoughShares } as never);
});

test('a lost strip is replaced by an empty one on a new device and rebuilt by a scrub', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: 2 * MiB });
  const data = randomBytes(2 * MiB);
  await fx.volume.write(0, data);
  await fx.volume.close();
  const v = await fx.reopen([fx.devices[0]!, null, fx.devices[2]!]);
  // a strip in service is never replaced
  await t.throwsAsync(v.replaceStrip(0, { device: new MemoryDevice(fx.devices[0]!.sizeBytes), base: 0 }), { code: ErrorCode.InvalidArgument } as never);
  const spare = new MemoryDevice(fx.devices[1]!.sizeBytes, { id: 'spare' });
  await v.replaceStrip(1, { device: spare, base: 0 }, { regionZeroed: true });
  t.is(v.health().strips[1]!.state, 'stale');
  const report = await v.scrub();
  t.is(report.blocksRepaired, 512);
  t.deepEqual(report.caughtUp, [1]);
  t.is(v.health().state, 'healthy');
  await v.close();
  // The rebuilt strip carries real data: lose another strip and read from it.
  const after = await fx.reopen([null, spare, fx.devices[2]!]);
  t.true((await after.read(0, 2 * MiB)).equals(data));
  t.is(after.health().strips[1]!.state, 'healthy');
});

test('rebuild of a wiped strip while a client writes: afterwards every share verifies and the data is the latest', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: 4 * MiB });
  const model = randomBytes(4 * MiB);
  await fx.volume.write(0, model);
  await fx.volume.close();
  const v = await fx.reopen([fx.devices[0]!, null, fx.devices[2]!]);
  const spare = new MemoryDevice(fx.devices[1]!.sizeBytes, { id: 'spare' });
  await v.replaceStrip(1, { device: spare, base: 0 }, { regionZeroed: true });
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing || i < 50; i++) {
      // Odd offsets and lengths: partial blocks need read-modify-write against the half-built strip.
      const at = (i * 7919 * 13) % (4 * MiB - 20_000);
      const len = 1 + ((i * 104_729) % 20_000);
      const chunk = randomBytes(len);
      chunk.copy(model, at);
      await v.write(at, chunk);
    }
  })();
  const rebuilt = await v.scrub({ rateBytesPerSec: 64 * MiB });
  writing = false;
  await writer;
  t.deepEqual(rebuilt.caughtUp, [1]);
  const check = await v.scrub();
  t.is(check.blocksRepaired, 0, 'every share of every block verifies');
  t.true((await v.read(0, 4 * MiB)).equals(model));
  await v.close();
  // The rebuilt strip alone with one other serves the latest data.
  const other = await fx.reopen([null, spare, fx.devices[2]!]);
  t.true((await other.read(0, 4 * MiB)).equals(model));
});
