import test from 'ava';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { openBatch, sealBatch, type SealBatch } from '../../appliance/split/batch.ts';
import { SplitPool, workerStuckMessage } from '../../appliance/split/split-pool.ts';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;

function batch(count: number): SealBatch {
  const keys = [0, 1, 2].map(() => [[randomBytes(32), null, null, null]]);
  return {
    volumeId: randomBytes(16),
    m: 2,
    n: 3,
    blockBytes: 4096,
    slotBytes: slotBytesFor(4096, 2),
    first: 10,
    count,
    keys: { sectionFirst: 0, keys, active: [[0], [0], [0]] },
    generation: 100,
    epoch: 1,
    blocks: randomBytes(count * 4096),
    zero: null,
    targets: [0, 1, 2],
  };
}

test('the pool seals what opens inline, and opens what seals inline', async (t) => {
  const pool = new SplitPool(2);
  t.teardown(() => pool.close());
  const b = batch(64);
  const pooled = await pool.seal(b);
  const opened = openBatch({ ...b, slots: [[1, pooled[1]!], [2, pooled[2]!]], complete: false });
  t.deepEqual(opened.outcomes, []);
  t.true(Buffer.from(opened.blocks).equals(Buffer.from(b.blocks)));
  const inline = sealBatch(b);
  const back = await pool.open({ ...b, slots: [[0, inline[0]!], [2, inline[2]!]], complete: false });
  t.true(Buffer.from(back.blocks).equals(Buffer.from(b.blocks)));
  // Corruption found in a worker is reported just as inline.
  const bad = Buffer.from(inline[0]!);
  bad[100]! ^= 1;
  const r = await pool.open({ ...b, slots: [[0, bad], [1, inline[1]!], [2, inline[2]!]], complete: true });
  t.true(Buffer.from(r.blocks).equals(Buffer.from(b.blocks)));
  t.deepEqual(r.outcomes.map((o) => [o.i, o.rejected.map((x) => [x.stripIndex, x.reason])]), [[0, [[0, 'auth']]]]);
});

test('many concurrent batches complete; a closed pool refuses with a typed error', async (t) => {
  const pool = new SplitPool(2);
  const jobs = Array.from({ length: 40 }, () => batch(8));
  const results = await Promise.all(jobs.map((b) => pool.seal(b)));
  t.is(results.length, 40);
  await pool.close();
  await t.throwsAsync(pool.seal(batch(1)), { code: ErrorCode.VolumeClosed } as never);
});

test('a volume on a pool reads back what it wrote, including degraded', async (t) => {
  const pool = new SplitPool(2);
  t.teardown(() => pool.close());
  const size = 8 * MiB;
  const devices = [0, 1, 2].map(() => new MemoryDevice(stripBytesForVolume(size, 4096, 2)));
  const wrapper = testWrapper();
  const v = await Volume.create({ name: 'p', m: 2, n: 3, sizeBytes: size, blockBytes: 4096, locations: devices.map((device) => ({ device, base: 0 })), wrappers: [wrapper], regionsZeroed: true, runner: pool });
  const data = randomBytes(size);
  await Promise.all([0, 1, 2, 3].map((k) => v.write(k * 2 * MiB, data.subarray(k * 2 * MiB, (k + 1) * 2 * MiB))));
  t.true((await v.read(0, size)).equals(data));
  await v.close();
  const d = await Volume.open({ locations: [null, { device: devices[1]!, base: 0 }, { device: devices[2]!, base: 0 }], wrappers: [wrapper], runner: pool });
  t.true((await d.read(12345, 3 * MiB)).equals(data.subarray(12345, 12345 + 3 * MiB)));
});

test('a worker that dies fails its batches, is replaced, and callers waiting for room are served', async (t) => {
  const pool = new SplitPool(1);
  t.teardown(() => pool.close());
  // More batches than one worker takes at once: some wait for room in the queue.
  const jobs = Array.from({ length: 12 }, () => pool.seal(batch(64)).then(() => 'ok', (e: Error) => `failed: ${e.message}`));
  await new Promise((r) => setTimeout(r, 20));
  await (pool as unknown as { slots: Array<{ worker: { terminate(): Promise<number> } }> }).slots[0]!.worker.terminate();
  const outcomes = await Promise.race([Promise.all(jobs), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000))]);
  t.not(outcomes, 'hung', 'every batch settles without waiting for close()');
  t.true((outcomes as string[]).includes('ok'), 'the replacement worker served the waiting batches');
  // and the pool keeps working
  t.is((await pool.seal(batch(4))).length, 3);
});

test('a worker-side StripvaultError keeps its stable code', async (t) => {
  const pool = new SplitPool(1);
  t.teardown(() => pool.close());
  const b = batch(2);
  // A key table with no active key for strip 0: the engine refuses with a typed error.
  const bad: SealBatch = { ...b, keys: { ...b.keys, keys: [[[new Uint8Array(5), null, null, null]], ...b.keys.keys.slice(1)] } };
  const e = await t.throwsAsync(pool.seal(bad));
  t.is((e as { code?: string }).code, ErrorCode.InvalidArgument);
});

test('a worker whose strip I/O does not answer is replaced: the jobs queued behind it fail, later ones are served', async (t) => {
  // 50 ms stands in for workerIoStuckMs; a large seal ahead of the I/O job keeps it from answering
  // (no separate I/O workers here, so both share the one worker).
  const pool = new SplitPool(1, { ioStuckMs: 50, ioWorkers: 0 });
  t.teardown(() => pool.close());
  const dir = await mkdtemp(join(tmpdir(), 'sv-stuck-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const fh = await open(join(dir, 'f'), 'w+');
  t.teardown(() => fh.close());
  const long = pool.seal(batch(4096)).then(() => 'ok', (e: Error) => e.message);
  const io = pool.writeSlots({ writes: [{ fd: fh.fd, offset: 0, data: new Uint8Array(4096), group: 0 }], cancel: new Int32Array(new SharedArrayBuffer(4)) }).then(
    () => 'ok',
    (e: Error) => e.message,
  );
  t.is(await io, workerStuckMessage);
  t.is(await long, workerStuckMessage, 'what was queued on the stuck worker fails too, rather than waiting');
  t.is((await pool.seal(batch(4))).length, 3, 'the replacement worker serves');
});
