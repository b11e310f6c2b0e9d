import test from 'ava';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openBatch, sealRuns, sealedRunOffsets, type BatchShape, type SealRun } from '../../appliance/split/batch.ts';
import { packSlotWrites, readOpenRuns, slotWriteRowWidth, unpackSlotWrites, writeCancelled, writeSlotList, type IoStrip } from '../../appliance/split/io-batch.ts';
import { SplitPool } from '../../appliance/split/split-pool.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';

const slotBytes = slotBytesFor(4096, 2);
const dataOffset = 8192;

function shape(): BatchShape {
  const keys = [0, 1, 2].map(() => [[randomBytes(32), null, null, null]]);
  return { volumeId: randomBytes(16), m: 2, n: 3, blockBytes: 4096, slotBytes, keys: { sectionFirst: 0, keys, active: [[0], [0], [0]] } };
}

async function withFiles(t: { teardown(fn: () => unknown): void }, n: number): Promise<number[]> {
  const dir = await mkdtemp(join(tmpdir(), 'stripvault-io-batch-'));
  const fds: number[] = [];
  for (let i = 0; i < n; i++) {
    const path = join(dir, `s${i}`);
    await writeFile(path, '');
    await truncate(path, dataOffset + 64 * slotBytes);
    fds.push(openSync(path, 'r+'));
  }
  t.teardown(async () => {
    for (const fd of fds) closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  });
  return fds;
}

/** Two writes (runs) of a few blocks each, sealed in one batch. */
function sealTwo(s: BatchShape) {
  const runs: SealRun[] = [
    { first: 3, count: 2, generation: 10, epoch: 1, zero: null, targets: [0, 1, 2] },
    { first: 40, count: 3, generation: 12, epoch: 1, zero: new Uint8Array([0, 1, 0]), targets: [0, 1, 2] },
  ];
  const blocks = randomBytes(5 * 4096);
  blocks.fill(0, 3 * 4096, 4 * 4096);
  return { runs, blocks, sealed: sealRuns({ ...s, blocks, runs }) };
}

/** Every run's shares as slot writes to their strips' files (one group per run). */
function slotWrites(runs: readonly SealRun[], sealed: Uint8Array, fds: readonly number[]) {
  const { offsets } = sealedRunOffsets(runs, slotBytes);
  return runs.flatMap((r, k) =>
    r.targets.map((strip, p) => {
      const span = r.count * slotBytes;
      return { fd: fds[strip]!, offset: dataOffset + r.first * slotBytes, data: sealed.subarray(offsets[k]! + p * span, offsets[k]! + (p + 1) * span), group: k };
    }),
  );
}

test('sealRuns lays out every run as sealedRunOffsets says, and each run opens to its blocks', (t) => {
  const s = shape();
  const { runs, blocks, sealed } = sealTwo(s);
  const { offsets, bytes } = sealedRunOffsets(runs, slotBytes);
  t.is(sealed.length, bytes);
  let at = 0;
  runs.forEach((r, k) => {
    const span = r.count * slotBytes;
    const slots = [1, 2].map((strip) => [strip, sealed.subarray(offsets[k]! + strip * span, offsets[k]! + (strip + 1) * span)] as const);
    const opened = openBatch({ ...s, first: r.first, count: r.count, slots, complete: false });
    t.deepEqual(opened.outcomes, []);
    t.true(Buffer.from(opened.blocks).equals(blocks.subarray(at, at + r.count * 4096)));
    at += r.count * 4096;
  });
  t.throws(() => sealRuns({ ...s, blocks: blocks.subarray(4096), runs }), { message: /blocks do not match/ });
  // One buffer per run (writes received into buffers of their own) seals the same runs.
  const perRun = [Buffer.from(blocks.subarray(0, 2 * 4096)), Buffer.from(blocks.subarray(2 * 4096))];
  const separate = sealRuns({ ...s, blocks: perRun, runs });
  t.is(separate.length, bytes);
  runs.forEach((r, k) => {
    const span = r.count * slotBytes;
    const slots = [0, 2].map((strip) => [strip, separate.subarray(offsets[k]! + strip * span, offsets[k]! + (strip + 1) * span)] as const);
    t.true(Buffer.from(openBatch({ ...s, first: r.first, count: r.count, slots, complete: false }).blocks).equals(perRun[k]!));
  });
  t.throws(() => sealRuns({ ...s, blocks: [perRun[0]!], runs }), { message: /blocks do not match/ });
  t.throws(() => sealRuns({ ...s, blocks: [perRun[1]!, perRun[0]!], runs }), { message: /blocks do not match/ });
});

test('slots written by writeSlotList are read and opened by readOpenRuns; a bad descriptor is reported, not thrown', async (t) => {
  const s = shape();
  const fds = await withFiles(t, 3);
  const { runs, blocks, sealed } = sealTwo(s);
  const writes = slotWrites(runs, sealed, fds);
  const cancel = new Int32Array(new SharedArrayBuffer(8));
  t.deepEqual(writeSlotList({ writes, cancel }), writes.map(() => null));
  const strips: IoStrip[] = [0, 2].map((index) => ({ index, fd: fds[index]!, dataOffset }));
  const r = readOpenRuns({ ...s, strips, runs: runs.map(({ first, count }) => ({ first, count })), stale: [] });
  if (!r.ok) return t.fail(r.message);
  t.true(Buffer.from(r.blocks).equals(blocks));
  t.deepEqual(r.outcomes, [[], []]);
  // Unwritten slots read as zeros (never written).
  const empty = readOpenRuns({ ...s, strips, runs: [{ first: 20, count: 2 }], stale: [] });
  t.true(empty.ok && Buffer.from(empty.blocks).equals(Buffer.alloc(2 * 4096)));
  // A corrupted share is an outcome (the caller then reads the other strips), not an exception.
  const badFd = readOpenRuns({ ...s, strips: [{ index: 0, fd: 987_654, dataOffset }, strips[1]!], runs: [{ first: 3, count: 1 }], stale: [] });
  t.like(badFd, { ok: false, strip: 0, errno: 'EBADF' });
  t.deepEqual(writeSlotList({ writes: [{ ...writes[0]!, fd: 987_654 }], cancel })[0]?.startsWith('EBADF'), true);
});

test('readOpenRuns opens several runs in one go; a bad share is reported in its own run, at its index in that run', async (t) => {
  const s = shape();
  const fds = await withFiles(t, 3);
  const { runs, blocks, sealed } = sealTwo(s);
  const writes = slotWrites(runs, sealed, fds);
  t.deepEqual(writeSlotList({ writes, cancel: new Int32Array(new SharedArrayBuffer(8)) }), writes.map(() => null));
  // Flip a byte inside the share of the second run's third block (address 42) on strip 0.
  const bad = Buffer.alloc(1);
  const badAt = dataOffset + 42 * slotBytes + 100;
  const { readSync, writeSync } = await import('node:fs');
  readSync(fds[0]!, bad, 0, 1, badAt);
  bad[0] = bad[0]! ^ 0x40;
  writeSync(fds[0]!, bad, 0, 1, badAt);
  const strips: IoStrip[] = [0, 1].map((index) => ({ index, fd: fds[index]!, dataOffset }));
  // Reads in an order of their own, with a run of unwritten slots between them.
  const order = [
    { first: 40, count: 3 },
    { first: 20, count: 2 },
    { first: 3, count: 2 },
  ];
  const r = readOpenRuns({ ...s, strips, runs: order, stale: [] });
  if (!r.ok) return t.fail(r.message);
  t.deepEqual(
    r.outcomes.map((o) => o.map(({ i, failed }) => ({ i, failed: failed !== undefined }))),
    [[{ i: 2, failed: true }], [], []],
    'only the second run\'s third block: with one of its two shares bad it cannot open from these strips',
  );
  t.true(Buffer.from(r.blocks).subarray(0, 2 * 4096).equals(blocks.subarray(2 * 4096, 4 * 4096)), 'the first two blocks of the 40 run open');
  t.true(Buffer.from(r.blocks).subarray(3 * 4096, 5 * 4096).equals(Buffer.alloc(2 * 4096)), 'unwritten slots read as zeros');
  t.true(Buffer.from(r.blocks).subarray(5 * 4096).equals(blocks.subarray(0, 2 * 4096)), 'the 3 run opens');
});

test('a cancelled group is skipped; other groups of the same batch are written', async (t) => {
  const fds = await withFiles(t, 1);
  const cancel = new Int32Array(new SharedArrayBuffer(8));
  Atomics.store(cancel, 1, 1);
  const data = randomBytes(slotBytes);
  const out = writeSlotList({
    writes: [
      { fd: fds[0]!, offset: dataOffset, data, group: 0 },
      { fd: fds[0]!, offset: dataOffset + slotBytes, data, group: 1 },
    ],
    cancel,
  });
  t.deepEqual(out, [null, writeCancelled]);
});

test('the pool runs sealRuns, readOpen and writeSlots as inline does', async (t) => {
  const pool = new SplitPool(2);
  t.teardown(() => pool.close());
  const s = shape();
  const fds = await withFiles(t, 3);
  const { runs, blocks } = sealTwo(s);
  const packed = Buffer.from(blocks);
  const sealed = await pool.sealRuns({ ...s, blocks: packed, runs });
  t.true(packed.equals(blocks), 'the caller keeps its blocks (the pool copied them to shared memory)');
  t.true(sealed.buffer instanceof SharedArrayBuffer, 'the shares come back in shared memory, so the writers get them without a copy');
  const { offsets } = sealedRunOffsets(runs, slotBytes);
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const writes = runs.flatMap((r, k) => r.targets.map((strip, p) => ({ fd: fds[strip]!, offset: dataOffset + r.first * slotBytes, data: sealed.subarray(offsets[k]! + p * r.count * slotBytes, offsets[k]! + (p + 1) * r.count * slotBytes), group: 0 })));
  t.deepEqual(await pool.writeSlots({ writes, cancel }), writes.map(() => null));
  const r = await pool.readOpen({ ...s, strips: [1, 2].map((index) => ({ index, fd: fds[index]!, dataOffset })), runs, stale: [] });
  t.true(r.ok && Buffer.from(r.blocks).equals(blocks));
});

test('packed slot writes send each shared buffer once and unpack to the same writes; unshared data goes as exactly its bytes', (t) => {
  const shared = new Uint8Array(new SharedArrayBuffer(4 * slotBytes));
  shared.set(randomBytes(shared.length));
  // A small view into a large unshared buffer: only the view's bytes may cross, not the whole buffer.
  const big = randomBytes(1 << 20);
  const plain = big.subarray(5000, 5000 + slotBytes);
  const cancel = new Int32Array(new SharedArrayBuffer(8));
  const writes = [
    { fd: 7, offset: dataOffset, data: shared.subarray(0, slotBytes), group: 0 },
    { fd: 8, offset: dataOffset + 9 * slotBytes, data: shared.subarray(slotBytes, 3 * slotBytes), group: 1 },
    { fd: 9, offset: 2 ** 40, data: plain, group: 1 },
  ];
  const packed = packSlotWrites({ writes, cancel });
  t.is(packed.buffers.length, 2);
  t.is(packed.buffers[0], shared.buffer, 'shared memory goes as itself');
  t.is(packed.buffers[1]!.byteLength, slotBytes, 'unshared data is cut to its own bytes');
  t.is(packed.rows.length, writes.length * slotWriteRowWidth);
  t.is(packed.cancel, cancel);
  const back = unpackSlotWrites(structuredClone(packed));
  t.is(back.writes.length, writes.length);
  back.writes.forEach((w, i) => {
    t.is(w.fd, writes[i]!.fd);
    t.is(w.offset, writes[i]!.offset);
    t.is(w.group, writes[i]!.group);
    t.deepEqual(Buffer.from(w.data), Buffer.from(writes[i]!.data));
  });
  t.true(back.writes[0]!.data.buffer instanceof SharedArrayBuffer);
});

test('packed slot writes that do not fit their buffers are refused, not written elsewhere', (t) => {
  const buf = new SharedArrayBuffer(slotBytes);
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const row = (r: number[]) => ({ buffers: [buf], rows: new Float64Array(r), cancel });
  t.throws(() => unpackSlotWrites(row([3, 0, 0, 0, slotBytes])), { message: /rows/ }, 'a short row');
  t.throws(() => unpackSlotWrites(row([3, 0, 1, 0, slotBytes, 0])), { message: /buffer index/ }, 'no such buffer');
  t.throws(() => unpackSlotWrites(row([3, 0, -1, 0, slotBytes, 0])), { message: /whole numbers/ });
  t.throws(() => unpackSlotWrites(row([3, 0, 0.5, 0, slotBytes, 0])), { message: /whole numbers/ });
  t.throws(() => unpackSlotWrites(row([3, 0, 0, 1, slotBytes, 0])), { instanceOf: RangeError }, 'past the buffer end');
  t.throws(() => unpackSlotWrites(row([3, 0, 0, 0, slotBytes + 1, 0])), { instanceOf: RangeError });
  t.throws(() => unpackSlotWrites(row([3, 0, 0, Number.NaN, 1, 0])), { message: /whole numbers/ });
  t.throws(() => unpackSlotWrites(row([3, -4096, 0, 0, 1, 0])), { message: /whole numbers/ }, 'a negative offset');
});

test('the pool reports each failed write of a packed batch at its own index', async (t) => {
  const pool = new SplitPool(1);
  t.teardown(() => pool.close());
  const fds = await withFiles(t, 1);
  const data = new Uint8Array(new SharedArrayBuffer(slotBytes));
  const cancel = new Int32Array(new SharedArrayBuffer(4));
  const out = await pool.writeSlots({
    writes: [
      { fd: fds[0]!, offset: dataOffset, data, group: 0 },
      { fd: 1_000_000, offset: dataOffset, data, group: 0 },
      { fd: fds[0]!, offset: dataOffset + slotBytes, data, group: 0 },
    ],
    cancel,
  });
  t.is(out[0], null);
  t.regex(out[1] ?? '', /EBADF/);
  t.is(out[2], null);
});
