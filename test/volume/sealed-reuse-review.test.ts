/**
 * Review of today's write-path change (session 4): one turn's writes are sealed into one buffer
 * from the process-wide shared pool, and that buffer goes back only when every write of the batch
 * released it cleanly (journal append settled, every strip write fulfilled). Anything that may
 * still read or write it — a strip write given up on at its deadline, a worker pwrite under way,
 * a seal worker abandoned mid-job — must keep it out of the pool.
 *
 * The oracle (test/helpers/pool-watch.ts) poisons every buffer as it is given back: a
 * buffer written while in the pool, or a held strip write that lands from memory given back while
 * it waited, is a violation; and every write must read back, live and after a reopen.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { sharedBuffers } from '../../appliance/split/shared-buffers.ts';
import { SplitPool, type SplitRunner } from '../../appliance/split/split-pool.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { Owl, owlRingBytesFor } from '../../appliance/volume/owl.ts';
import { Volume, sealInlineBlocksMax, stripBytesForVolume, uuidToBytes } from '../../appliance/volume/volume.ts';
import { LateRunner, WatchedGateDevice, poisonPool } from '../helpers/pool-watch.ts';
import { fileDevices, testWrapper } from '../helpers/volumes.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const blockBytes = 4096;
const sizeBytes = 8 * MiB;

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sv-s4-volume-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function until(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Made {
  volume: Volume;
  reopen(devices?: readonly StorageDevice[]): Promise<Volume>;
}

async function makeVolume(t: ExecutionContext, dir: string, id: string, devices: readonly StorageDevice[], runner: SplitRunner, ioTimeoutMs: number): Promise<Made> {
  const wrapper = testWrapper();
  const owlPath = join(dir, 'v.owl');
  const owl = await Owl.create(owlPath, uuidToBytes(id), owlRingBytesFor(slotBytesFor(blockBytes, 2), 3, 16 * MiB));
  const volume = await Volume.create({
    id,
    name: 's4',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    runner,
    owl,
    ioTimeoutMs,
    // Reads come from the strips, not from the cache.
    cacheBytes: 0,
  });
  return {
    volume,
    reopen: async (devs = devices) =>
      Volume.open({ locations: devs.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: id, owl: await Owl.open(owlPath, uuidToBytes(id)), cacheBytes: 0 }),
  };
}

/** A write as the NBD session makes it: the payload received into pooled shared memory, given back once answered. */
async function pooledWrite(volume: Volume, offset: number, data: Buffer): Promise<void> {
  const payload = sharedBuffers.take(data.length);
  payload.set(data);
  try {
    await volume.write(offset, payload);
  } finally {
    sharedBuffers.give(payload);
  }
}

type Op = { offset: number; data: Buffer; pooled: boolean };

/** Writes at distinct places: aligned ones of 4–64 KiB (some in pooled memory), a few unaligned. */
function ops(from: number, n: number, seed: number): Op[] {
  const out: Op[] = [];
  for (let k = 0; k < n; k++) {
    const unaligned = (k + seed) % 5 === 4;
    const offset = from + k * 128 * KiB + (unaligned ? 1000 + k : 0);
    const length = unaligned ? 5000 + 37 * k : blockBytes * (1 + ((k * 7 + seed) % 16));
    out.push({ offset, data: randomBytes(length), pooled: !unaligned && (k + seed) % 2 === 0 && length >= 64 * KiB });
  }
  return out;
}

function apply(model: Buffer, list: readonly Op[]): void {
  for (const o of list) o.data.copy(model, o.offset);
}

async function issue(volume: Volume, list: readonly Op[]): Promise<void> {
  await Promise.all(list.map((o) => (o.pooled ? pooledWrite(volume, o.offset, o.data) : volume.write(o.offset, o.data))));
}

async function readsBack(t: ExecutionContext, volume: Volume, model: Buffer, what: string): Promise<void> {
  const got = await volume.read(0, sizeBytes);
  const bad: number[] = [];
  for (let at = 0; at < sizeBytes && bad.length < 8; at += blockBytes) {
    if (!got.subarray(at, at + blockBytes).equals(model.subarray(at, at + blockBytes))) bad.push(at / blockBytes);
  }
  t.deepEqual(bad, [], `${what}: blocks that do not read back`);
}

test.serial('strip writes held past their deadline keep their batch\'s shares out of the pool; when they land they carry their own shares', async (t) => {
  t.timeout(60_000);
  const watch = poisonPool(t);
  const dir = await tempDir(t);
  const memory = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytesForVolume(sizeBytes, blockBytes, 2), { id: `mem${i}` }));
  const gated = memory.map((d) => new WatchedGateDevice(d, watch));
  const pool = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => pool.close());
  const { volume, reopen } = await makeVolume(t, dir, '6d1f0a2b-3c4e-4f50-8a6b-7c8d9e0f1a2b', gated, pool, 400);
  const model = Buffer.alloc(sizeBytes);

  // Strip 2 stops answering: its writes wait at the gate until they are given up on.
  gated[2]!.hold();
  const first = ops(0, 12, 1);
  apply(model, first);
  await issue(volume, first);
  // Acknowledged at the journal; the strip writes (and strip 2's deadline) come after.
  await volume.settleAcknowledged();
  t.true(gated[2]!.held > 0, 'writes were held on strip 2');
  t.is(volume.health().strips[2]!.state, 'failed', 'strip 2 failed at its deadline');
  // Degraded writes reuse pooled memory meanwhile: shares given back must be only clean ones.
  const givesBefore = watch.gives;
  for (let r = 0; r < 3; r++) {
    const more = ops(2 * MiB + r * 2 * MiB, 12, 2 + r);
    apply(model, more);
    await issue(volume, more);
    await volume.settleAcknowledged();
  }
  t.true(watch.gives > givesBefore, 'later writes gave memory back to the pool');
  // Now the held writes land, from whatever memory they were handed.
  gated[2]!.openGate();
  await until(() => gated[2]!.landed === gated[2]!.held, 'the held writes to land');
  t.deepEqual(watch.violations, []);
  await readsBack(t, volume, model, 'live');
  await volume.close();
  // The strips as they are (strip 2 holds older shares, and is marked stale on the others).
  const again = await reopen(memory);
  t.teardown(() => again.close());
  await readsBack(t, again, model, 'after a reopen');
  t.deepEqual(watch.violations, []);
});

test.serial('a worker pwrite answered late (after its write was redone through the devices) and one abandoned as stuck never read memory given back', async (t) => {
  t.timeout(60_000);
  const watch = poisonPool(t);
  const dir = await tempDir(t);
  const devices = await fileDevices(dir, 3, stripBytesForVolume(sizeBytes, blockBytes, 2));
  t.teardown(async () => {
    for (const d of devices) await d.close().catch(() => undefined);
  });
  const inner = new SplitPool(1, { ioWorkers: 1 });
  t.teardown(() => inner.close());
  // The I/O worker started and answering before the volume's 300 ms deadlines apply: a worker still
  // loading (seconds on a loaded machine) would time out writes that this test does not mean to.
  const scratch = await open(join(dir, 'warm-up'), 'w+');
  t.deepEqual(await inner.writeSlots({ writes: [{ fd: scratch.fd, offset: 0, data: new Uint8Array(4096), group: 0 }], cancel: new Int32Array(new SharedArrayBuffer(4)) }), [null]);
  await scratch.close();
  // The next slot write is either answered only once its writer gave up on it (its cancel flag is
  // set) — the pwrite already under way still happens — or abandoned (as SplitPool.abandon does),
  // its pwrite landing much later. The others go to the pool's I/O worker.
  let next: 'late' | 'abandon' | null = null;
  const runner = new LateRunner(
    inner,
    {
      writeSlots: () => {
        const now = next;
        next = null;
        return now;
      },
    },
    watch,
  );
  const { volume, reopen } = await makeVolume(t, dir, '7e2a1b3c-4d5f-4a61-9b7c-8d9e0f1a2b3c', devices, runner, 300);
  const model = Buffer.alloc(sizeBytes);

  // One journal record, one slot write: 16 KiB.
  const a = randomBytes(16 * KiB);
  next = 'late';
  await volume.write(0, a);
  a.copy(model, 0);
  await volume.settleAcknowledged();
  t.is(volume.health().state, 'healthy', 'a late answer is not a failure');
  t.is(next as 'late' | 'abandon' | null, null, 'the late job was taken');
  // Memory given back by that write goes round.
  const between = ops(2 * MiB, 4, 6).filter((o) => o.offset % blockBytes === 0);
  apply(model, between);
  await issue(volume, between);
  await volume.settleAcknowledged();

  // The abandoned one: acknowledged at the journal, then its strips are failed (the pwrite may land
  // any time): the volume fails closed until it is reopened.
  const b = randomBytes(16 * KiB);
  next = 'abandon';
  await volume.write(1 * MiB, b);
  b.copy(model, 1 * MiB);
  await t.throwsAsync(volume.settleAcknowledged());
  t.is(runner.deferred.length, 1, 'the abandoned pwrite is still to come');
  t.deepEqual(watch.violations, []);
  // A close wipes the pool…
  await volume.close();
  // …and then the abandoned pwrite lands.
  runner.release();
  t.deepEqual(watch.violations, []);
  const again = await reopen();
  t.teardown(() => again.close());
  // The write was journalled: the reopen replays it.
  await readsBack(t, again, model, 'after a reopen');
});

test.serial('a seal job abandoned mid-way fails its writes and keeps its output out of the pool; the seal that finishes later writes only into that output', async (t) => {
  t.timeout(60_000);
  const watch = poisonPool(t);
  const dir = await tempDir(t);
  const memory = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytesForVolume(sizeBytes, blockBytes, 2), { id: `mem${i}` }));
  const inner = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => inner.close());
  let abandonNext = false;
  const runner = new LateRunner(
    inner,
    {
      sealRuns: () => {
        const now = abandonNext;
        abandonNext = false;
        return now;
      },
    },
    watch,
  );
  const { volume, reopen } = await makeVolume(t, dir, '8f3b2c4d-5e6a-4b72-8c8d-9e0f1a2b3c4d', memory, runner, 2000);
  const model = Buffer.alloc(sizeBytes);
  const before = ops(0, 6, 3);
  apply(model, before);
  await issue(volume, before);
  await volume.settleAcknowledged();
  // The next seal is abandoned: its write fails, nothing of it is journalled. (Writes larger than
  // sealInlineBlocksMax: smaller groups are sealed on this thread, with no job to abandon.)
  const sealedByWorker = (sealInlineBlocksMax + 16) * blockBytes;
  abandonNext = true;
  await t.throwsAsync(pooledWrite(volume, 4 * MiB, randomBytes(sealedByWorker)));
  abandonNext = true;
  await t.throwsAsync(volume.write(5 * MiB, randomBytes(sealedByWorker)));
  t.is(volume.health().state, 'healthy', 'a failed seal fails its write, not the strips');
  // Later writes reuse the pool (the abandoned seal's input went back).
  const after = ops(6 * MiB, 8, 4);
  apply(model, after);
  await issue(volume, after);
  t.is(runner.deferred.length, 2);
  runner.release();
  const more = ops(2 * MiB, 8, 5);
  apply(model, more);
  await issue(volume, more);
  t.deepEqual(watch.violations, []);
  await readsBack(t, volume, model, 'live');
  await volume.close();
  const again = await reopen();
  t.teardown(() => again.close());
  await readsBack(t, again, model, 'after a reopen');
});
