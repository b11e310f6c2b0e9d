/**
 * Review of today's read/seal changes below the volume (session 4):
 *  - gathered worker reads (io-batch.ts readOpenRuns: a message's runs read back to back and opened
 *    in one call with per-block addresses), at a 64 GiB key-section boundary with sectionFirst > 0,
 *    in any order, overlapping, with corrupt shares and with a pread that fails part-way;
 *  - the native open's one-fragment XOR rebuild (8 bytes at a time now) and the seal's parity rows
 *    (XOR for all-ones coefficients, GF tables otherwise), for every block size and M up to 16;
 *  - copyBytes (the addon's memmove) at the edges the existing tests leave out;
 *  - sealRuns into a dirty, larger pooled buffer with the JavaScript engine (STRIPVAULT_NATIVE_SEAL=0,
 *    in a child process: the engine is chosen when the module loads).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBatch, openBatchJs, sealIntoJs, sealRuns, sealedRunOffsets, type BatchShape, type KeyTable, type SealRun } from '../../appliance/split/batch.ts';
import { readOpenRuns, writeSlotList, type IoStrip, type ReadRun } from '../../appliance/split/io-batch.ts';
import { copyBytes, nativeCopyBytesMin, nativeSeal, openNative } from '../../appliance/split/native-seal.ts';
import { SplitPool } from '../../appliance/split/split-pool.ts';
import { sectionBytes, sectionOfSlot, slotBytesFor } from '../../appliance/strip/layout.ts';

const blockBytes = 4096;
const slotBytes = slotBytesFor(blockBytes, 2);
const dataOffset = 8192;

/** First address of section `s` (layout.ts sectionOfSlot's boundary). */
function firstOfSection(s: number): number {
  let a = Math.ceil((s * sectionBytes) / slotBytes);
  while (a > 0 && sectionOfSlot(a - 1, slotBytes) >= s) a--;
  while (sectionOfSlot(a, slotBytes) < s) a++;
  return a;
}

/** Strip files, sparse up to slot `slots`. */
async function stripFiles(t: { teardown(fn: () => unknown): void }, n: number, slots: number): Promise<{ fds: number[]; paths: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'sv-s4-split-'));
  const fds: number[] = [];
  const paths: string[] = [];
  for (let i = 0; i < n; i++) {
    const path = join(dir, `s${i}`);
    await writeFile(path, '');
    await truncate(path, dataOffset + slots * slotBytes);
    fds.push(openSync(path, 'r+'));
    paths.push(path);
  }
  t.teardown(async () => {
    for (const fd of fds) closeSync(fd);
    await rm(dir, { recursive: true, force: true });
  });
  return { fds, paths };
}

/**
 * Keys for sections 1 and 2 (sectionFirst 1, not 0): each strip has a different key per section,
 * and section 2's active key sits in another key slot, so a block opened with its neighbour
 * section's key or slot fails.
 */
function twoSectionShape(): BatchShape {
  const keys = [0, 1, 2].map(() => [
    [randomBytes(32), null, null, null],
    [null, randomBytes(32), randomBytes(32), null],
  ]);
  const table: KeyTable = { sectionFirst: 1, keys, active: [0, 1, 2].map(() => [0, 2]) };
  return { volumeId: randomBytes(16), m: 2, n: 3, blockBytes, slotBytes, keys: table };
}

/** Per run, what opening it alone (the JavaScript engine, consecutive addresses) gives. */
function openAlone(s: BatchShape, fds: readonly number[], strips: readonly number[], runs: readonly ReadRun[]) {
  return runs.map((r) => {
    const slots = strips.map((index) => {
      const buf = Buffer.alloc(r.count * slotBytes);
      readSync(fds[index]!, buf, 0, buf.length, dataOffset + r.first * slotBytes);
      return [index, buf] as const;
    });
    return openBatchJs({ ...s, first: r.first, count: r.count, slots, complete: false, stale: [] });
  });
}

test('readOpenRuns across a key-section boundary (sectionFirst 1), runs shuffled and overlapping, opens each block with its own section key and reports outcomes per run', async (t) => {
  const s = twoSectionShape();
  const boundary = firstOfSection(2);
  t.is(sectionOfSlot(boundary - 1, slotBytes), 1);
  t.is(sectionOfSlot(boundary, slotBytes), 2);
  const base = boundary - 6;
  const { fds } = await stripFiles(t, 3, base + 16);
  // Three writes: one wholly in section 1, one straddling the boundary, one wholly in section 2.
  const runs: SealRun[] = [
    { first: base, count: 3, generation: 100, epoch: 4, zero: null, targets: [0, 1, 2] },
    { first: base + 3, count: 6, generation: 103, epoch: 4, zero: Uint8Array.from([0, 0, 1, 0, 0, 0]), targets: [0, 1, 2] },
    { first: base + 9, count: 4, generation: 109, epoch: 4, zero: null, targets: [0, 1, 2] },
  ];
  const blocks = randomBytes(13 * blockBytes);
  blocks.fill(0, 5 * blockBytes, 6 * blockBytes);
  const sealed = sealRuns({ ...s, blocks, runs });
  const { offsets } = sealedRunOffsets(runs, slotBytes);
  const writes = runs.flatMap((r, k) =>
    r.targets.map((strip, p) => ({ fd: fds[strip]!, offset: dataOffset + r.first * slotBytes, data: sealed.subarray(offsets[k]! + (p * r.count) * slotBytes, offsets[k]! + (p + 1) * r.count * slotBytes), group: 0 })),
  );
  t.deepEqual(writeSlotList({ writes, cancel: new Int32Array(new SharedArrayBuffer(4)) }), writes.map(() => null));
  // Corrupt strip 1's share of the first block of section 2 (one past the boundary) and strip 0's
  // of the last block of section 1: each fails only where it is read, at its own index.
  for (const [strip, address] of [
    [1, boundary],
    [0, boundary - 1],
  ] as const) {
    const b = Buffer.alloc(1);
    const at = dataOffset + address * slotBytes + 200;
    readSync(fds[strip]!, b, 0, 1, at);
    b[0] = b[0]! ^ 0x10;
    writeSync(fds[strip]!, b, 0, 1, at);
  }
  const reads: ReadRun[] = [
    { first: boundary, count: 3 },
    { first: base, count: 2 },
    { first: boundary - 2, count: 4 },
    { first: boundary + 9, count: 1 }, // never written: reads as zeros
    { first: boundary - 1, count: 1 },
    { first: base + 1, count: 12 },
  ];
  const plain = (address: number): Buffer => {
    const i = address - base;
    return i >= 0 && i < 13 ? blocks.subarray(i * blockBytes, (i + 1) * blockBytes) : Buffer.alloc(blockBytes);
  };
  for (const strips of [
    [0, 1],
    [0, 2],
    [1, 2],
  ]) {
    const io: IoStrip[] = strips.map((index) => ({ index, fd: fds[index]!, dataOffset }));
    const got = readOpenRuns({ ...s, strips: io, runs: reads, stale: [] });
    if (!got.ok) return t.fail(got.message);
    const want = openAlone(s, fds, strips, reads);
    t.deepEqual(
      got.outcomes.map((o) => o.map((x) => ({ i: x.i, failed: x.failed !== undefined, strips: x.rejected.map((r) => r.stripIndex) }))),
      want.map((w) => w.outcomes.map((x) => ({ i: x.i, failed: x.failed !== undefined, strips: x.rejected.map((r) => r.stripIndex) }))),
      `strips ${strips}: outcomes as each run alone`,
    );
    t.true(Buffer.from(got.blocks).equals(Buffer.concat(want.map((w) => Buffer.from(w.blocks)))), `strips ${strips}: blocks as each run alone`);
    // And the blocks that opened are the plaintext at their own address.
    let at = 0;
    for (const [k, r] of reads.entries()) {
      const failed = new Set(got.outcomes[k]!.filter((o) => o.failed !== undefined).map((o) => o.i));
      for (let j = 0; j < r.count; j++, at++) {
        if (failed.has(j)) continue;
        t.true(Buffer.from(got.blocks).subarray(at * blockBytes, (at + 1) * blockBytes).equals(plain(r.first + j)), `strips ${strips}: run ${k} block ${j} (address ${r.first + j})`);
      }
    }
    // Which blocks fail is known exactly: strip 0's share of boundary - 1 and strip 1's of the
    // boundary are bad, and one good share of two does not open a block. Each run holding such a
    // block reports it at that run's own index, no other run does.
    const failedAt = got.outcomes.map((o) => o.filter((x) => x.failed !== undefined).map((x) => x.i));
    const bad = new Set([...(strips.includes(0) ? [boundary - 1] : []), ...(strips.includes(1) ? [boundary] : [])]);
    t.deepEqual(
      failedAt,
      reads.map((r) => Array.from({ length: r.count }, (_, j) => j).filter((j) => bad.has(r.first + j))),
      `strips ${strips}: failures at their own run and index`,
    );
    if (strips.includes(0) && strips.includes(1)) t.deepEqual(failedAt, [[0], [], [1, 2], [], [0], [4, 5]]);
  }
});

test('readOpenRuns through a worker of the pool: the same gathered result as inline, and a pread failing in the last run fails the message naming its strip', async (t) => {
  const s = twoSectionShape();
  const boundary = firstOfSection(2);
  const base = boundary - 4;
  const { fds, paths } = await stripFiles(t, 3, base + 12);
  const runs: SealRun[] = [{ first: base, count: 8, generation: 7, epoch: 1, zero: null, targets: [0, 1, 2] }];
  const blocks = randomBytes(8 * blockBytes);
  const sealed = sealRuns({ ...s, blocks, runs });
  t.deepEqual(
    writeSlotList({ writes: [0, 1, 2].map((p) => ({ fd: fds[p]!, offset: dataOffset + base * slotBytes, data: sealed.subarray(p * 8 * slotBytes, (p + 1) * 8 * slotBytes), group: 0 })), cancel: new Int32Array(new SharedArrayBuffer(4)) }),
    [null, null, null],
  );
  const pool = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => pool.close());
  const reads: ReadRun[] = [
    { first: base + 5, count: 3 },
    { first: base, count: 4 },
    { first: base + 3, count: 2 },
  ];
  const io: IoStrip[] = [1, 2].map((index) => ({ index, fd: fds[index]!, dataOffset }));
  const inline = readOpenRuns({ ...s, strips: io, runs: reads, stale: [] });
  const viaPool = await pool.readOpen({ ...s, strips: io, runs: reads, stale: [] });
  if (!inline.ok || !viaPool.ok) return t.fail('a read failed');
  const want = Buffer.concat(reads.map((r) => blocks.subarray((r.first - base) * blockBytes, (r.first - base + r.count) * blockBytes)));
  t.true(Buffer.from(inline.blocks).equals(want));
  t.true(Buffer.from(viaPool.blocks).equals(want));
  t.deepEqual(viaPool.outcomes, [[], [], []]);
  // Strip 2's file ends inside the last run: its read is short.
  await truncate(paths[2]!, dataOffset + (base + 4) * slotBytes);
  const short = readOpenRuns({ ...s, strips: io, runs: [...reads, { first: base + 3, count: 2 }], stale: [] });
  t.false(short.ok);
  if (!short.ok) {
    t.is(short.strip, 2);
    t.is(short.errno, 'SHORT_READ');
  }
});

// ---- the native open's XOR rebuild and the seal's parity rows, every block size and M ----

const blockSizes = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/** Geometries with M up to 16: one parity strip (XOR only) and two or three (GF rows as well). */
function geometries(): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let m = 1; m <= 15; m++) {
    out.push([m, m + 1]);
    if (m + 3 <= 16) out.push([m, m + 3]);
  }
  out.push([16, 16]);
  return out;
}

function keyTableFor(n: number): KeyTable {
  return { sectionFirst: 0, keys: Array.from({ length: n }, () => [[randomBytes(32), null, null, null]]), active: Array.from({ length: n }, () => [0]) };
}

test('degraded opens for every block size and M up to 16: one data fragment missing is rebuilt natively (XOR), more go to the JS engine (GF rows); all give the plaintext', (t) => {
  const disabled = process.env.STRIPVAULT_NATIVE_SEAL === '0';
  if (!disabled) t.true(nativeSeal.available, nativeSeal.why);
  const problems: string[] = [];
  let xorRebuilt = 0;
  let gfOpened = 0;
  for (const [m, n] of geometries()) {
    for (const bb of blockSizes) {
      const sb = slotBytesFor(bb, m);
      const count = 2;
      const first = 12_345;
      const shape = { volumeId: randomBytes(16), m, n, blockBytes: bb, slotBytes: sb, keys: keyTableFor(n) };
      const blocks = randomBytes(count * bb);
      const targets = Array.from({ length: n }, (_, i) => i);
      // Native seal (sealRuns' native call) and the JavaScript engine's: both must open either way.
      const native = sealRuns({ ...shape, blocks, runs: [{ first, count, generation: 9, epoch: 2, zero: null, targets }] });
      const js = targets.map(() => Buffer.alloc(count * sb));
      sealIntoJs({ ...shape, first, count, generation: 9, epoch: 2, blocks, zero: null, targets }, js);
      for (const [engine, perStrip] of [
        ['native', targets.map((p) => Buffer.from(native.buffer, native.byteOffset + p * count * sb, count * sb))],
        ['js', js],
      ] as const) {
        // Every strip set of size M that drops at most two data strips, and the first M+1.
        const sets: number[][] = [];
        for (let j = 0; j < m; j++) sets.push(targets.filter((x) => x !== j).slice(0, m));
        if (n - m >= 2 && m >= 2) sets.push(targets.filter((x) => x !== 0 && x !== m - 1).slice(0, m));
        if (n - m >= 3 && m >= 3) sets.push(targets.filter((x) => x !== 1 && x !== m).slice(0, m));
        for (const set of sets) {
          if (set.length < m) continue;
          const what = `${engine} seal ${m}-of-${n} block ${bb} strips [${set}]`;
          const ob = { ...shape, first, count, slots: set.map((x) => [x, perStrip[x]!] as const), complete: false };
          const got = openBatch(ob);
          if (!Buffer.from(got.blocks).equals(blocks)) problems.push(`${what}: wrong plaintext`);
          if (got.outcomes.length !== 0) problems.push(`${what}: outcomes ${JSON.stringify(got.outcomes)}`);
          if (!disabled) {
            const status = openNative({ ...ob, verifyAll: false }, Buffer.alloc(count * bb))!;
            const missingData = Array.from({ length: m }, (_, j) => j).filter((j) => !set.includes(j)).length;
            const fast = missingData === 0 || (missingData === 1 && set.includes(m) && m < n);
            if (fast && status.some((x) => x !== 0)) problems.push(`${what}: the native path declined a block it should rebuild`);
            if (!fast && status.some((x) => x !== 1)) problems.push(`${what}: the native path opened a block it cannot (${missingData} data fragments missing)`);
            if (fast && missingData === 1) xorRebuilt += count;
            if (!fast) gfOpened += count;
          }
        }
      }
    }
  }
  t.deepEqual(problems, []);
  if (!disabled) {
    t.true(xorRebuilt > 1000, `XOR rebuilds exercised: ${xorRebuilt}`);
    t.true(gfOpened > 100, `GF opens exercised: ${gfOpened}`);
  }
});

// ---- copyBytes at the edges ----

test('copyBytes: zero bytes at the very end, views deep into shared memory at the native threshold, and backward overlap match TypedArray#set', (t) => {
  const sab = new SharedArrayBuffer(64 * 1024);
  const whole = new Uint8Array(sab);
  whole.set(randomBytes(whole.length));
  // Zero-length copies at dst.length and src.length are legal no-ops.
  const dst = Buffer.from(sab, 1000, 5000);
  const before = Buffer.from(whole);
  copyBytes(dst, dst.length, whole, whole.length, 0);
  copyBytes(dst, dst.length, whole, whole.length);
  t.true(Buffer.from(whole).equals(before));
  t.throws(() => copyBytes(dst, dst.length + 1, whole, 0, 0), { instanceOf: RangeError });
  // Threshold sizes from views with odd offsets, both directions between shared and ordinary memory.
  for (const len of [nativeCopyBytesMin - 1, nativeCopyBytesMin, nativeCopyBytesMin + 1, 4093]) {
    const plain = Buffer.alloc(len + 50, 0x33);
    const src = new Uint8Array(sab, 7777, len + 3);
    const want = Buffer.from(plain);
    want.set(src.subarray(3, 3 + len), 11);
    copyBytes(plain.subarray(0, len + 20), 11, src, 3, len);
    t.true(plain.equals(want), `into ordinary memory, ${len} bytes`);
    const into = new Uint8Array(sab, 33_001, len + 9);
    const w2 = Buffer.from(whole);
    w2.set(plain.subarray(5, 5 + len), 33_001 + 9);
    copyBytes(into, 9, plain, 5, len);
    t.true(Buffer.from(whole).equals(w2), `into shared memory, ${len} bytes`);
  }
  // Backward overlap (destination before source) in one shared buffer, through two views.
  const a = new Uint8Array(sab, 2048, 20_000);
  const b = new Uint8Array(sab, 1024, 20_000);
  const want = Buffer.from(whole);
  want.copyWithin(1024 + 10, 2048 + 100, 2048 + 100 + 8000);
  copyBytes(b, 10, a, 100, 8000);
  t.true(Buffer.from(whole).equals(want));
});

test('copyBytes from or into a detached buffer refuses any non-empty range', (t) => {
  const ab = new ArrayBuffer(8192);
  const detached = new Uint8Array(ab);
  structuredClone(ab, { transfer: [ab] });
  t.is(detached.length, 0);
  const shared = Buffer.from(new SharedArrayBuffer(8192));
  t.throws(() => copyBytes(shared, 0, detached, 0, 4096), { instanceOf: RangeError });
  t.throws(() => copyBytes(detached, 0, shared, 0, 4096), { instanceOf: RangeError });
  t.true(shared.every((x) => x === 0));
});

// ---- sealRuns into dirty pooled memory, JavaScript engine ----

const jsEngineHelper = fileURLToPath(new URL('../helpers/js-seal-child.ts', import.meta.url));

test('with STRIPVAULT_NATIVE_SEAL=0, sealRuns into a dirty, oversized shared buffer writes every slot byte (clean padding), nothing past its bytes, and every block opens', (t) => {
  const r = spawnSync(process.execPath, ['--import=tsx', jsEngineHelper], { env: { ...process.env, STRIPVAULT_NATIVE_SEAL: '0' }, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { engine: string; cases: number; problems: string[] };
  t.is(report.engine, 'js');
  t.true(report.cases > 10);
  t.deepEqual(report.problems, []);
});
