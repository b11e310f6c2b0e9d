/**
 * Volumes over the fault-injecting device: the scenarios where a careless volume would return old
 * data, reuse a nonce, or refuse to serve while it still could.
 */
import test from 'ava';
import { FaultDevice } from '../../appliance/device/fault-device.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { dataOffset, headerOffset } from '../../appliance/strip/layout.ts';
import { decodeSlot } from '../../appliance/strip/slot.ts';
import { Strip } from '../../appliance/strip/strip.ts';
import { Volume, stripBytesForVolume, type VolumeHooks } from '../../appliance/volume/volume.ts';
import { memoryVolume, testWrapper } from '../helpers/volumes.ts';

const KiB = 1024;

async function faultVolume(m: number, n: number, sizeBytes = 64 * KiB) {
  const stripBytes = stripBytesForVolume(sizeBytes, 4096, m);
  const devs = Array.from({ length: n }, (_, i) => new FaultDevice(new MemoryDevice(stripBytes, { id: `mem${i}` }), { seed: i + 1 }));
  const w = testWrapper();
  // A stand-in for the metadata store's atomic generation allocation.
  let reserved = 0;
  const hooks: VolumeHooks = {
    allocateGenerations: async (min, count) => {
      reserved = Math.max(reserved, min) + count;
      return reserved;
    },
  };
  const volume = await Volume.create({ name: 't', m, n, sizeBytes, blockBytes: 4096, locations: devs.map((device) => ({ device, base: 0 })), wrappers: [w], regionsZeroed: true, hooks });
  const reopen = (present: (FaultDevice | null)[] = devs, withStore = true) =>
    Volume.open({
      locations: present.map((d) => (d ? { device: d, base: 0 } : null)),
      wrappers: [w],
      expectId: volume.id,
      ...(withStore ? { hooks, generationFloor: reserved } : {}),
    });
  return { volume, devs, w, reopen };
}

const fill = (b: number) => Buffer.alloc(4096, b);

test('2-of-4: an acknowledged write on exactly M strips is never rolled back by a transient read error', async (t) => {
  const { volume, devs, reopen } = await faultVolume(2, 4);
  await volume.write(0, fill(0xaa));
  devs[1]!.inject('writeError', { offset: dataOffset });
  devs[2]!.inject('writeError', { offset: dataOffset });
  await volume.write(0, fill(0xbb));
  await volume.flush();
  t.deepEqual(volume.health().strips.map((s) => s.state), ['healthy', 'failed', 'failed', 'healthy']);
  await volume.close();
  const v = await reopen();
  t.deepEqual(v.health().strips.map((s) => s.state), ['healthy', 'stale', 'stale', 'healthy']);
  t.true((await v.read(0, 4096)).equals(fill(0xbb)));
  devs[3]!.inject('readError', { offset: dataOffset });
  const v2 = await reopen();
  // Only one strip with B answers; the old A on the stale strips must not win: a typed error.
  const e = await t.throwsAsync(v2.read(0, 4096));
  t.is((e as { code?: string }).code, ErrorCode.NotEnoughShares);
});

test('2-of-3 degraded: a lost write is an error on read, never the older data', async (t) => {
  const { volume, devs, reopen } = await faultVolume(2, 3);
  await volume.write(0, fill(0xaa));
  await volume.close();
  const degraded = await reopen([devs[0]!, devs[1]!, null]);
  devs[0]!.inject('lostWrite', { offset: dataOffset });
  await degraded.write(0, fill(0xbb));
  await degraded.flush();
  await degraded.close();
  t.is(devs[0]!.faults.filter((f) => f.kind === 'lostWrite').length, 1);
  const v = await reopen();
  t.is(v.health().strips[2]!.state, 'stale');
  const e = await t.throwsAsync(v.read(0, 1));
  t.is((e as { code?: string }).code, ErrorCode.NotEnoughShares);
});

test('1-of-2 with each strip away in turn: the newest write wins once both are back', async (t) => {
  const { volume, devs, reopen } = await faultVolume(1, 2);
  await volume.write(0, fill(0xaa));
  await volume.close();
  let v = await reopen([devs[0]!, null]);
  await v.write(0, fill(0xbb));
  await v.close();
  v = await reopen([null, devs[1]!]);
  await v.write(0, fill(0xcc));
  await v.close();
  v = await reopen();
  t.deepEqual(v.health().strips.map((s) => s.state), ['stale', 'stale']);
  t.true((await v.read(0, 4096)).equals(fill(0xcc)));
});

test('a strip whose reservation could not be written never receives shares above it', async (t) => {
  const { volume, devs, w, reopen } = await faultVolume(1, 2);
  devs[1]!.inject('writeError', { offset: headerOffset });
  await volume.write(0, Buffer.alloc(3 * 4096, 0x11));
  t.is(volume.health().strips[1]!.state, 'failed');
  await volume.close();
  const onDisk = await Strip.load({ device: devs[1]!, base: 0 }, [w]);
  const slots = await onDisk.readSlots(0, 3);
  for (let i = 0; i < 3; i++) {
    const g = decodeSlot(1, slots.subarray(i * onDisk.label.slotBytes, (i + 1) * onDisk.label.slotBytes)).generation;
    t.true(g < onDisk.header.body.generationReserved, `block ${i}: generation ${g} above durable reservation`);
  }
  // and a session with only that strip and no store starts above anything it ever held
  const v2 = await reopen([null, devs[1]!], false);
  await v2.write(0, fill(0x22));
  t.true((await v2.read(0, 4096)).equals(fill(0x22)));
});

test('two openers of one volume sharing a store get disjoint generations', async (t) => {
  const { volume, reopen } = await faultVolume(2, 3);
  await volume.close();
  const a = await reopen();
  const b = await reopen();
  await a.write(0, fill(1));
  await b.write(4096, fill(2));
  const gen = async (v: Volume, block: number) => {
    const s = v.stripAt(0)!;
    return decodeSlot(0, await s.readSlots(block, 1)).generation;
  };
  const ga = await gen(a, 0);
  const gb = await gen(b, 1);
  t.not(ga, gb);
  // Both ranges are wide; they must not overlap at all.
  t.true(Math.abs(ga - gb) >= 1 << 20);
});

test('a strip that refuses its status record at open is failed, and the volume still opens', async (t) => {
  const { volume, devs, reopen } = await faultVolume(2, 3);
  await volume.write(0, fill(1));
  await volume.close();
  devs[2]!.setProbabilities({ writeError: 1 });
  const v = await reopen();
  t.is(v.health().state, 'degraded');
  t.is(v.health().strips[2]!.state, 'failed');
  t.true((await v.read(0, 4096)).equals(fill(1)));
});

test('close waits for in-flight requests, then refuses new ones; nothing is marked stale by it', async (t) => {
  const { volume, devs, w } = await faultVolume(2, 3);
  for (const d of devs) d.inject('delay', { offset: headerOffset, delayMs: 50 });
  const pending = volume.write(0, fill(5));
  await new Promise((r) => setTimeout(r, 5));
  await volume.close();
  await t.notThrowsAsync(pending);
  await t.throwsAsync(volume.write(0, fill(6)), { code: ErrorCode.VolumeClosed } as never);
  for (let i = 0; i < 3; i++) t.is((await Strip.load({ device: devs[i]!, base: 0 }, [w])).header.body.staleStrips, 0);
});

test('a partial-block write that fails (fewer than M strips take it) is an error to its caller and nothing else: no unhandled rejection', async (t) => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => void process.off('unhandledRejection', onUnhandled));
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 1 << 20 });
  await f.volume.write(0, Buffer.alloc(8192, 1));
  for (const i of [1, 2]) f.volume.stripAt(i)!.writeSlots = async () => Promise.reject(new Error('EIO (injected)'));
  // Unaligned, so it goes through the read-modify-write path, which waits only for the write to be done.
  await t.throwsAsync(f.volume.write(512, Buffer.alloc(100, 2)), { code: ErrorCode.VolumeUnavailable } as never);
  await t.throwsAsync(f.volume.writeZeroes(4096 + 7, 9), { code: ErrorCode.VolumeUnavailable } as never);
  await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(unhandled, [], 'Node ends a process on an unhandled rejection: a failed write must not leave one');
});
