/**
 * The native batch seal/open addon against the JavaScript engine it must match: byte-identical
 * slots for the same AONT keys, identical open results (blocks, outcomes, errors) on clean, degraded,
 * torn and corrupted reads, the same under two worker threads, and typed errors (never a crash) on
 * bad input. Random cases come from a seeded PRNG: STRIPVAULT_TEST_SEED=<seed> replays a failure.
 *
 * With STRIPVAULT_NATIVE_SEAL=0 the addon must be off, and the same cases check the JavaScript
 * engine against itself and round-trip.
 */
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { ErrorCode, StripvaultError, isStripvaultError } from '../../appliance/errors.ts';
import {
  openBatch,
  openBatchJs,
  sealBatch,
  sealIntoJs,
  sealRuns,
  sealedRunOffsets,
  type KeyTable,
  type OpenBatch,
  type OpenBatchResult,
  type SealBatch,
  type SealRun,
  type SealRunsBatch,
} from '../../appliance/split/batch.ts';
import { nativeSeal, openNative, sealNative, type NativeOpenCall, type NativeSealCall } from '../../appliance/split/native-seal.ts';
import { parityMatrix } from '../../appliance/split/reed-solomon.ts';
import { SplitPool } from '../../appliance/split/split-pool.ts';
import { addressMax, epochMax, generationMax } from '../../appliance/split/share-binding.ts';
import { sectionBytes, slotBytesFor, slotMetaBytes } from '../../appliance/strip/layout.ts';
import {
  Prng,
  expectedPlain,
  feedKeys,
  installKeyTap,
  jsKeyStream,
  perBlockKeys,
  prngFor,
  randomFirst,
  randomKeys,
  randomSealBatch,
  randomShape,
  recordJsKeys,
  rekeyed,
  seed,
} from './native-seal-helpers.ts';

installKeyTap();

const disabled = process.env.STRIPVAULT_NATIVE_SEAL === '0';
const native = nativeSeal.available;
const replay = `seed ${seed} (replay: STRIPVAULT_TEST_SEED=${seed})`;

/** Outside the STRIPVAULT_NATIVE_SEAL=0 run, every test needs the addon: a missing one fails, never skips. */
function requireNative(t: ExecutionContext): boolean {
  if (native) return true;
  if (!disabled) t.fail(`native seal addon not in use: ${nativeSeal.why}`);
  return false;
}

function describe(b: Pick<SealBatch, 'm' | 'n' | 'blockBytes' | 'slotBytes' | 'first' | 'count' | 'generation' | 'epoch' | 'targets'>, k: number): string {
  return `case ${k}: ${b.m}-of-${b.n} block ${b.blockBytes} slot ${b.slotBytes} first ${b.first} count ${b.count} gen ${b.generation} epoch ${b.epoch} targets [${b.targets}]; ${replay}`;
}

function slotOf(buf: Uint8Array, at: number, slotBytes: number): Buffer {
  return Buffer.from(buf.buffer, buf.byteOffset + at, slotBytes);
}

// ---- 1. the addon is there ----

test('the native addon is loaded (or deliberately disabled)', (t) => {
  if (disabled) {
    t.false(native, 'STRIPVAULT_NATIVE_SEAL=0 must turn the addon off');
    t.regex(nativeSeal.why, /disabled/);
    const b = randomSealBatch(prngFor('disabled'), 2);
    t.false(sealNative({ ...b, addresses: new Float64Array(0), generations: new Float64Array(0), outs: [], outOffsets: new Float64Array(0) }));
    t.is(openNative({ ...b, slots: [], verifyAll: false }, Buffer.alloc(b.count * b.blockBytes)), null);
    return;
  }
  t.true(native, `native seal addon not in use: ${nativeSeal.why}`);
});

// ---- 2. seal: byte-identical for the same AONT keys ----

interface Layout {
  outs: Buffer[];
  offsets: Float64Array;
  /** Bytes outside every slot, which the seal must leave alone. */
  guards: Array<[buf: Buffer, from: number, to: number]>;
}

const guardByte = 0xa5;

/**
 * Where the native seal writes: one buffer per target, or all slots of all targets interleaved in
 * one buffer with gaps (as sealRuns lays runs out). Pre-filled with a guard byte, so padding the
 * seal fails to zero and writes outside a slot both show.
 */
function nativeLayout(r: Prng, count: number, T: number, slotBytes: number): Layout {
  if (r.bool()) {
    const tail = r.int(0, 64);
    const outs = Array.from({ length: T }, () => Buffer.alloc(count * slotBytes + tail, guardByte));
    const offsets = new Float64Array(count * T);
    for (let i = 0; i < count; i++) for (let p = 0; p < T; p++) offsets[i * T + p] = i * slotBytes;
    return { outs, offsets, guards: outs.map((o) => [o, count * slotBytes, o.length] as [Buffer, number, number]) };
  }
  const gap = r.int(0, 24);
  const lead = r.int(0, 40);
  const buf = Buffer.alloc(lead + count * T * (slotBytes + gap), guardByte);
  const offsets = new Float64Array(count * T);
  const guards: Layout['guards'] = [[buf, 0, lead]];
  // Target-major or block-major, so offsets are not monotonic in the call's order.
  const targetMajor = r.bool();
  for (let i = 0; i < count; i++) {
    for (let p = 0; p < T; p++) {
      const k = targetMajor ? p * count + i : i * T + p;
      const at = lead + k * (slotBytes + gap);
      offsets[i * T + p] = at;
      guards.push([buf, at + slotBytes, at + slotBytes + gap]);
    }
  }
  return { outs: Array.from({ length: T }, () => buf), offsets, guards };
}

function guardsIntact(l: Layout): boolean {
  return l.guards.every(([b, from, to]) => b.subarray(from, to).every((x) => x === guardByte));
}

test('seal: sealNative with the JS engine’s AONT keys writes byte-identical slots', (t) => {
  if (!requireNative(t)) {
    // JS engine only: sealBatch round-trips through openBatchJs.
    const r = prngFor('seal-js');
    for (let k = 0; k < 20; k++) {
      const b = randomSealBatch(r, 8);
      const sealed = sealBatch(b);
      const got = openBatchJs({ ...b, slots: b.targets.map((s, p) => [s, sealed[p]!] as const), complete: true });
      if (b.targets.length >= b.m) t.true(Buffer.from(got.blocks).equals(expectedPlain(b)), describe(b, k));
    }
    return;
  }
  const r = prngFor('seal-identity');
  const mismatches: string[] = [];
  let blocks = 0;
  for (let k = 0; k < 110; k++) {
    const b = randomSealBatch(r);
    const T = b.targets.length;
    const js = b.targets.map(() => Buffer.alloc(b.count * b.slotBytes));
    const drawn = recordJsKeys(() => sealIntoJs(b, js));
    const aont = perBlockKeys(drawn, b.count, b.zero);
    // The native call in another block order (addresses need not be consecutive): block i of the
    // call is block order[i] of the batch.
    const order = Array.from({ length: b.count }, (_, i) => i);
    if (r.bool(0.3)) r.shuffle(order);
    const blocksN = Buffer.alloc(b.count * b.blockBytes);
    const aontN = Buffer.alloc(b.count * 32);
    const zeroN = b.zero === null ? null : new Uint8Array(b.count);
    const addresses = new Float64Array(b.count);
    const generations = new Float64Array(b.count);
    order.forEach((o, i) => {
      blocksN.set(b.blocks.subarray(o * b.blockBytes, (o + 1) * b.blockBytes), i * b.blockBytes);
      aont.copy(aontN, i * 32, o * 32, (o + 1) * 32);
      if (zeroN !== null) zeroN[i] = b.zero![o]!;
      addresses[i] = b.first + o;
      generations[i] = b.generation + o;
    });
    const layout = nativeLayout(r, b.count, T, b.slotBytes);
    const call: NativeSealCall = { ...b, blocks: blocksN, zero: zeroN, addresses, generations, outs: layout.outs, outOffsets: layout.offsets };
    t.true(sealNative(call, aontN));
    const what = describe(b, k);
    if (!guardsIntact(layout)) mismatches.push(`${what}: bytes outside the slots changed`);
    order.forEach((o, i) => {
      for (let p = 0; p < T; p++) {
        const want = slotOf(js[p]!, o * b.slotBytes, b.slotBytes);
        const got = slotOf(layout.outs[p]!, layout.offsets[i * T + p]!, b.slotBytes);
        if (!want.equals(got)) mismatches.push(`${what}: block ${o} strip ${b.targets[p]} differs`);
      }
    });
    blocks += b.count;

    // sealBatch's own native call (random keys swapped for the same ones) agrees too.
    let viaBatch: Uint8Array[] = [];
    const used = feedKeys(drawn, aont, () => (viaBatch = sealBatch(b)));
    if (used.nativeUsed !== b.count * 32 || used.jsUsed !== 0) mismatches.push(`${what}: sealBatch did not seal natively (${JSON.stringify(used)})`);
    viaBatch.forEach((o, p) => {
      if (!Buffer.from(o).equals(js[p]!)) mismatches.push(`${what}: sealBatch strip ${b.targets[p]} differs`);
    });
  }
  t.deepEqual(mismatches, [], replay);
  t.log(`${blocks} blocks in 110 batches identical; ${replay}`);
});

/** Several writes in one batch: mostly sharing epoch and targets (one native call), some not. */
function randomRuns(r: Prng): { batch: SealRunsBatch; runBlocks: Buffer[] } {
  const shape = randomShape(r);
  const span = 300;
  const base = randomFirst(r, shape.slotBytes, span);
  const keys = randomKeys(r, shape.n, shape.slotBytes, base, base + span - 1);
  const eligible = keys.keys.map((k, i) => (k ? i : -1)).filter((i) => i >= 0);
  const common = r.bool(0.7) ? eligible : r.shuffle(eligible.filter(() => r.bool(0.7)));
  if (common.length === 0) common.push(eligible[0]!);
  const epoch = r.int(0, epochMax);
  const runs: SealRun[] = [];
  const runBlocks: Buffer[] = [];
  const nRuns = r.int(1, 7);
  for (let k = 0; k < nRuns; k++) {
    const count = r.int(1, shape.blockBytes >= 65536 ? 3 : 10);
    const targets = r.bool(0.8) ? common : r.shuffle(eligible.filter(() => r.bool(0.6)));
    if (targets.length === 0) targets.push(eligible[eligible.length - 1]!);
    runs.push({
      first: base + r.int(0, span - count),
      count,
      generation: r.int(1, 2 ** 40),
      epoch: r.bool(0.8) ? epoch : r.int(0, epochMax),
      zero: r.bool(0.3) ? Uint8Array.from({ length: count }, () => (r.bool(0.4) ? 1 : 0)) : null,
      targets,
    });
    runBlocks.push(r.bytes(count * shape.blockBytes));
  }
  return { batch: { ...shape, keys, blocks: Buffer.concat(runBlocks), runs }, runBlocks };
}

test('seal: sealRuns (runs grouped into native calls) matches the JS engine run by run', (t) => {
  const useNative = requireNative(t);
  const r = prngFor('seal-runs');
  const mismatches: string[] = [];
  for (let k = 0; k < 40; k++) {
    const { batch: b, runBlocks } = randomRuns(r);
    const { offsets, bytes } = sealedRunOffsets(b.runs, b.slotBytes);
    const want = Buffer.alloc(bytes);
    const jsKeys: Buffer[] = [];
    const nativeKeys: Buffer[] = [];
    b.runs.forEach((run, j) => {
      const span = run.count * b.slotBytes;
      const dest = run.targets.map((_, p) => want.subarray(offsets[j]! + p * span, offsets[j]! + (p + 1) * span));
      const drawn = recordJsKeys(() => sealIntoJs({ ...b, ...run, blocks: runBlocks[j]! }, dest));
      const perBlock = perBlockKeys(drawn, run.count, run.zero);
      nativeKeys.push(perBlock);
      jsKeys.push(jsKeyStream(perBlock, run.zero));
    });
    // Every other case seals into reused memory (as the volume's pool hands it out): dirty, and
    // longer than needed. Every byte of every slot must still come out as in a fresh buffer.
    const out = k % 2 === 1 ? Buffer.from(new SharedArrayBuffer(bytes + r.int(0, 5000))).fill(guardByte) : undefined;
    let got: Uint8Array = new Uint8Array(0);
    // Half the cases give each run's blocks in a buffer of its own (NBD payloads), sealed by the same calls.
    const given: SealRunsBatch = k % 4 >= 2 ? { ...b, blocks: runBlocks } : b;
    const used = feedKeys(Buffer.concat(jsKeys), Buffer.concat(nativeKeys), () => (got = sealRuns(out === undefined ? given : { ...given, out })));
    const what = `runs case ${k} (${out === undefined ? 'fresh' : 'reused'} output, ${given.blocks instanceof Uint8Array ? 'packed' : 'per-run'} blocks): ${b.m}-of-${b.n} block ${b.blockBytes} runs ${JSON.stringify(b.runs.map((x) => [x.first, x.count, x.epoch, x.targets]))}; ${replay}`;
    if (out !== undefined && (got.buffer !== out.buffer || got.byteOffset !== 0 || got.length !== bytes)) mismatches.push(`${what}: not sealed into the given buffer`);
    if (out !== undefined && !out.subarray(bytes).every((x) => x === guardByte)) mismatches.push(`${what}: wrote past the sealed bytes`);
    const blocks = b.runs.reduce((a, x) => a + x.count, 0);
    if (useNative && (used.nativeUsed !== blocks * 32 || used.jsUsed !== 0)) mismatches.push(`${what}: not all sealed natively (${JSON.stringify(used)})`);
    if (!Buffer.from(got).equals(want)) mismatches.push(`${what}: output differs`);
  }
  t.deepEqual(mismatches, [], replay);
});

test('sealRuns refuses an output that is not shared memory or is too short', (t) => {
  const { batch: b } = randomRuns(prngFor('seal-runs-out'));
  const { bytes } = sealedRunOffsets(b.runs, b.slotBytes);
  t.throws(() => sealRuns({ ...b, out: Buffer.alloc(bytes) }), { message: /out is not shared memory/ });
  t.throws(() => sealRuns({ ...b, out: Buffer.from(new SharedArrayBuffer(bytes - 1)) }), { message: /out is not shared memory/ });
});

test('the identity check can fail: one flipped AONT key bit changes exactly that block', (t) => {
  requireNative(t);
  const r = prngFor('flip');
  const b = { ...randomSealBatch(r, 6), zero: null };
  const js = b.targets.map(() => Buffer.alloc(b.count * b.slotBytes));
  const aont = perBlockKeys(recordJsKeys(() => sealIntoJs(b, js)), b.count, null);
  const victim = r.int(0, b.count - 1);
  aont[victim * 32 + r.int(0, 31)]! ^= 1 << r.int(0, 7);
  let out: Uint8Array[] = [];
  // The flipped keys go to whichever engine sealBatch uses.
  feedKeys(aont, aont, () => (out = sealBatch(b)));
  for (let i = 0; i < b.count; i++) {
    const same = b.targets.every((_, p) => slotOf(out[p]!, i * b.slotBytes, b.slotBytes).equals(slotOf(js[p]!, i * b.slotBytes, b.slotBytes)));
    t.is(same, i !== victim, `block ${i}, victim ${victim}; ${describe(b, 0)}`);
  }
});

// ---- 3. open: the native fast path plus fallback equals the JS engine ----

type Slots = Array<readonly [number, Uint8Array]>;

function run(f: () => OpenBatchResult): { blocks: string; outcomes: unknown } | { error: { name: string; code: unknown; message: string } } {
  try {
    const r = f();
    return { blocks: Buffer.from(r.blocks.buffer, r.blocks.byteOffset, r.blocks.byteLength).toString('hex'), outcomes: r.outcomes };
  } catch (e) {
    const x = e as Error & { code?: unknown };
    return { error: { name: x.name, code: x.code, message: x.message } };
  }
}

function summary(x: ReturnType<typeof run>): string {
  return JSON.stringify('blocks' in x ? { blocksSha: createHash('sha256').update(x.blocks).digest('hex').slice(0, 16), outcomes: x.outcomes } : x);
}

function copySlots(slots: Slots): Slots {
  return slots.map(([s, d]) => [s, Buffer.from(d)] as const);
}

type Region = 'meta' | 'body' | 'tag' | 'padding';

/** Flips one bit of `region` in block i's slot; false if the slot has no such bytes. */
function flip(r: Prng, d: Uint8Array, i: number, slotBytes: number, region: Region): boolean {
  const slot = Buffer.from(d.buffer, d.byteOffset + i * slotBytes, slotBytes);
  const body = slot.readUInt32BE(16);
  if (slot.readBigUInt64BE(0) === 0n || slotMetaBytes + body > slotBytes || body < 16) return false;
  const [from, to] =
    region === 'meta' ? [0, slotMetaBytes] : region === 'body' ? [slotMetaBytes, slotMetaBytes + body - 16] : region === 'tag' ? [slotMetaBytes + body - 16, slotMetaBytes + body] : [slotMetaBytes + body, slotBytes];
  if (to <= from) return false;
  slot[r.int(from, to - 1)]! ^= 1 << r.int(0, 7);
  return true;
}

interface Variant {
  readonly name: string;
  readonly slots: Slots;
  readonly keys?: KeyTable;
  /** Every block should open natively (status 0) on its own. */
  readonly fast?: boolean;
}

/**
 * Whether the native fast path should open a clean read of these strips itself: its first M strips
 * (in strip order) are the data strips, or all but one of them plus strip M, the XOR parity.
 */
function fastRead(m: number, strips: readonly number[], hasData: boolean): boolean {
  const sorted = [...strips].sort((a, b) => a - b);
  if (sorted.length < m) return false;
  const firstM = sorted.slice(0, m);
  const missing = Array.from({ length: m }, (_, j) => j).filter((j) => !firstM.includes(j));
  return missing.length === 0 || !hasData || (missing.length === 1 && firstM.includes(m));
}

function variants(r: Prng, b: SealBatch, sealed: Slots): Variant[] {
  const { m, count, slotBytes } = b;
  const byStrip = [...sealed].sort((x, y) => x[0] - y[0]);
  const hasData = b.zero === null || b.zero.some((z) => z === 0);
  const out: Variant[] = [];
  const fastFor = (strips: number[]): boolean => fastRead(m, strips, hasData);
  const strips = byStrip.map(([s]) => s);
  out.push({ name: 'all strips', slots: r.bool(0.3) ? r.shuffle([...sealed]) : sealed, fast: fastFor(strips) });
  if (byStrip.length > 1) out.push({ name: 'all but the first strip', slots: byStrip.slice(1), fast: fastFor(strips.slice(1)) });
  if (byStrip.length > m) out.push({ name: 'first M strips', slots: byStrip.slice(0, m), fast: fastFor(strips.slice(0, m)) });
  for (const region of ['meta', 'body', 'tag', 'padding'] as const) {
    const d = copySlots(sealed);
    let flipped = 0;
    for (let k = r.int(1, 3); k > 0; k--) if (flip(r, r.pick(d)[1], r.int(0, count - 1), slotBytes, region)) flipped++;
    if (flipped > 0) out.push({ name: `${region} bit flips`, slots: d });
  }
  out.push({ name: 'all empty', slots: sealed.map(([s, d]) => [s, Buffer.alloc(d.length)] as const) });
  {
    const d = copySlots(sealed);
    for (let k = r.int(1, count); k > 0; k--) {
      const [, data] = r.pick(d);
      const i = r.int(0, count - 1);
      (data as Buffer).fill(0, i * slotBytes, (i + 1) * slotBytes);
    }
    out.push({ name: 'some slots empty', slots: d });
  }
  {
    // A share moved from another address (same strip) or from another strip (same address).
    const d = copySlots(sealed);
    const [, victim] = r.pick(d);
    const i = r.int(0, count - 1);
    if (count > 1 && r.bool()) {
      const j = (i + r.int(1, count - 1)) % count;
      victim.copyWithin(i * slotBytes, j * slotBytes, (j + 1) * slotBytes);
    } else {
      const [, other] = r.pick(sealed);
      victim.set(other.subarray(i * slotBytes, (i + 1) * slotBytes), i * slotBytes);
    }
    out.push({ name: 'a share copied from elsewhere', slots: d });
  }
  {
    // A torn write: some blocks resealed at a newer generation under another key slot, reaching only
    // some strips; the rest still hold generation g.
    const next: SealBatch = { ...b, keys: rekeyed(r, b.keys), generation: b.generation + count, blocks: r.bytes(b.blocks.length), zero: r.bool(0.3) ? Uint8Array.from({ length: count }, () => (r.bool() ? 1 : 0)) : null };
    const newer = sealBatch(next);
    const reached = new Set(b.targets.filter(() => r.bool()));
    const blocks = new Set(Array.from({ length: count }, (_, i) => i).filter(() => r.bool(0.6)));
    const d = sealed.map(([s, data]) => {
      const c = Buffer.from(data);
      if (reached.has(s)) {
        const src = newer[b.targets.indexOf(s)]!;
        for (const i of blocks) c.set(src.subarray(i * slotBytes, (i + 1) * slotBytes), i * slotBytes);
      }
      return [s, c] as const;
    });
    // Both key slots stay in the table (the rekeyed one only changes which is active).
    out.push({ name: `torn write (${reached.size} strips at g+${count})`, slots: d });
    if (r.bool(0.5)) {
      const e = copySlots(d);
      const [, victim] = r.pick(e);
      flip(r, victim, r.int(0, count - 1), slotBytes, r.pick(['meta', 'body', 'tag'] as const));
      out.push({ name: 'torn write and a bit flip', slots: e });
    }
  }
  {
    // No key for the slot a share names.
    const s = r.pick(strips);
    const keys: KeyTable = { ...b.keys, keys: b.keys.keys.map((secs, i) => (i === s ? null : secs)) };
    out.push({ name: `no keys for strip ${s}`, slots: sealed, keys });
  }
  return out;
}

function openCompare(t: ExecutionContext, r: Prng, b: SealBatch, sealed: Slots, what: string, mismatches: string[]): { fast: number; blocks: number } {
  let fast = 0;
  let blocks = 0;
  for (const v of variants(r, b, sealed)) {
    for (let rep = 0; rep < 2; rep++) {
      const stale = r.bool(0.3) ? b.targets.filter(() => r.bool(0.3)) : undefined;
      const ob: OpenBatch = {
        ...b,
        keys: v.keys ?? b.keys,
        slots: v.slots,
        complete: r.bool(),
        verifyAll: r.bool(),
        ...(stale ? { stale } : {}),
      };
      const got = run(() => openBatch(ob));
      const want = run(() => openBatchJs(ob));
      const name = `${what}; ${v.name} complete ${ob.complete} verifyAll ${ob.verifyAll} stale [${stale ?? ''}]`;
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        if (mismatches.length === 0) t.log('first open mismatch:', name, '\nnative:', summary(got), '\njs:', summary(want));
        mismatches.push(name);
      }
      if (native && v.fast && rep === 0) {
        const status = openNative({ ...ob, verifyAll: ob.verifyAll === true }, Buffer.alloc(b.count * b.blockBytes))!;
        const declined = status.reduce((a, x) => a + x, 0);
        if (declined !== 0) mismatches.push(`${name}: the fast path declined ${declined} clean blocks`);
        fast += b.count - declined;
      }
      if (v.fast && 'blocks' in want && want.blocks !== expectedPlain(b).toString('hex')) mismatches.push(`${name}: did not open to the plaintext`);
      blocks += b.count;
    }
  }
  return { fast, blocks };
}

test('open: openBatch (native fast path + fallback) equals openBatchJs on clean, degraded, torn and corrupted reads', (t) => {
  requireNative(t);
  const r = prngFor('open');
  const mismatches: string[] = [];
  let fast = 0;
  let blocks = 0;
  for (let k = 0; k < 40; k++) {
    const b = randomSealBatch(r, 10, 1);
    const sealed = sealBatch(b);
    const slots: Slots = b.targets.map((s, p) => [s, sealed[p]!] as const);
    const c = openCompare(t, r, b, slots, describe(b, k), mismatches);
    fast += c.fast;
    blocks += c.blocks;
  }
  t.deepEqual(mismatches, [], replay);
  if (native) t.true(fast > 0, 'the native fast path opened nothing');
  t.log(`${blocks} block opens compared, ${fast} checked to open natively; ${replay}`);
});

test('open: a mix of generations across strips at every block, with stale strips, matches the JS engine', (t) => {
  requireNative(t);
  const r = prngFor('open-mix');
  const mismatches: string[] = [];
  for (let k = 0; k < 25; k++) {
    const b = { ...randomSealBatch(r, 8, 2), targets: [] as number[] };
    const eligible = b.keys.keys.map((x, i) => (x ? i : -1)).filter((i) => i >= 0);
    const full = { ...b, targets: eligible };
    if (eligible.length < b.m) continue;
    // Three writes to the same blocks: g, g+count, g+2·count, each reaching a random set of strips.
    const writes = [0, 1, 2].map((w) => {
      const wb: SealBatch = { ...full, keys: w === 0 ? full.keys : rekeyed(r, full.keys), generation: full.generation + w * full.count, blocks: r.bytes(full.blocks.length) };
      return sealBatch(wb);
    });
    const slots: Slots = eligible.map((s, p) => {
      const d = Buffer.alloc(full.count * full.slotBytes);
      for (let i = 0; i < full.count; i++) {
        const w = r.int(-1, 2);
        if (w >= 0) d.set(writes[w]![p]!.subarray(i * full.slotBytes, (i + 1) * full.slotBytes), i * full.slotBytes);
      }
      return [s, d] as const;
    });
    for (const complete of [true, false]) {
      for (const verifyAll of [false, true]) {
        const stale = r.bool() ? eligible.filter(() => r.bool(0.3)) : [];
        // Every key slot the writes used stays in the table, whichever is active.
        const ob: OpenBatch = { ...full, slots, complete, verifyAll, stale };
        const got = run(() => openBatch(ob));
        const want = run(() => openBatchJs(ob));
        if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push(`${describe(full, k)} complete ${complete} verifyAll ${verifyAll} stale [${stale}]`);
      }
    }
  }
  t.deepEqual(mismatches, [], replay);
});

test('open: bad strip lists throw what the JS engine throws (typed), never a plain addon error', (t) => {
  requireNative(t);
  const { open, b } = validCall();
  const [d0, d1] = [open.slots[0]![1], open.slots[1]![1]];
  const lists = [
    [[0, d0], [0, d0]],
    [[0, d0], [1, d1], [1, d1]],
    [[0, d0], [3, d1]],
    [[0, d0], [-1, d1]],
    [[0, d0], [257, d1]],
    [[0, d0], [1.5, d1]],
  ] as Slots[];
  const outcome = (f: () => OpenBatchResult) => ({ ...run(f), blocks: undefined });
  const got = lists.map((slots) => ({ strips: slots.map(([x]) => x), ...outcome(() => openBatch({ ...b, slots, complete: true })) }));
  const want = lists.map((slots) => ({ strips: slots.map(([x]) => x), ...outcome(() => openBatchJs({ ...b, slots, complete: true })) }));
  t.deepEqual(got, want);
});

test('open: runs gathered into one call by addresses open like each run alone, also where shares are corrupt', (t) => {
  requireNative(t);
  const r = prngFor('open-addresses');
  const mismatches: string[] = [];
  let gatheredBlocks = 0;
  for (let k = 0; k < 40; k++) {
    const { batch: b } = randomRuns(r);
    const targets = b.runs[0]!.targets;
    if (targets.length < b.m) continue;
    // Only runs written to the same strips can be read back from one set of strips.
    const runs = b.runs.filter((x) => x.targets.length === targets.length && x.targets.every((s, i) => s === targets[i]));
    const sealed = sealRuns(b);
    const { offsets } = sealedRunOffsets(b.runs, b.slotBytes);
    // Corrupt a few bytes here and there: those blocks decline to the JavaScript engine, which
    // must then use the right address for them too.
    for (let c = r.int(0, 3); c > 0; c--) {
      const at = r.int(0, sealed.length - 1);
      sealed[at] = sealed[at]! ^ (1 << r.int(0, 7));
    }
    const perStrip = (x: SealRun) => {
      const j = b.runs.indexOf(x);
      const span = x.count * b.slotBytes;
      return targets.map((_, p) => Buffer.from(sealed.subarray(offsets[j]! + p * span, offsets[j]! + (p + 1) * span)));
    };
    const alone = runs.map((x) => openBatchJs({ ...b, first: x.first, count: x.count, slots: targets.map((s, p) => [s, perStrip(x)[p]!] as const), complete: false }));
    const total = runs.reduce((a, x) => a + x.count, 0);
    const addresses = Float64Array.from(runs.flatMap((x) => Array.from({ length: x.count }, (_, j) => x.first + j)));
    const slots = targets.map((s, p) => [s, Buffer.concat(runs.map((x) => perStrip(x)[p]!))] as const);
    const gathered = openBatch({ ...b, first: 0, count: total, addresses, slots, complete: false });
    const what = `case ${k}: ${b.m}-of-${b.n} runs ${JSON.stringify(runs.map((x) => [x.first, x.count]))}; ${replay}`;
    if (!Buffer.from(gathered.blocks).equals(Buffer.concat(alone.map((a) => Buffer.from(a.blocks))))) mismatches.push(`${what}: blocks differ`);
    let at = 0;
    const want = alone.flatMap((a, j) => {
      const shifted = a.outcomes.map((o) => ({ ...o, i: o.i + at }));
      at += runs[j]!.count;
      return shifted;
    });
    if (JSON.stringify(gathered.outcomes) !== JSON.stringify(want)) mismatches.push(`${what}: outcomes differ`);
    gatheredBlocks += total;
  }
  t.deepEqual(mismatches, [], replay);
  t.true(gatheredBlocks > 100, 'enough blocks were gathered to mean something');
});

test('open: bad addresses throw typed errors; the raw addon refuses them too', (t) => {
  const b = randomSealBatch(prngFor('open-bad-addresses'), 4);
  const out = sealBatch(b);
  const call = { ...b, slots: b.targets.map((s, p) => [s, out[p]!] as const), verifyAll: false };
  const bad = [new Float64Array(b.count + 1), Float64Array.from({ length: b.count }, () => -1), Float64Array.from({ length: b.count }, () => 0.5), Float64Array.from({ length: b.count }, () => addressMax + 1), Float64Array.from({ length: b.count }, () => NaN)];
  if (!requireNative(t)) {
    // Off: openNative declines before looking at anything, and the JS engine does the work.
    for (const addresses of bad) t.is(openNative({ ...call, addresses }, Buffer.alloc(b.count * b.blockBytes)), null);
    return;
  }
  for (const addresses of bad) {
    const e = t.throws(() => openNative({ ...call, addresses }, Buffer.alloc(b.count * b.blockBytes)));
    t.true(isStripvaultError(e) && e.code === ErrorCode.InvalidArgument, String(e));
  }
  const addon = createRequire(import.meta.url)('../../build/Release/stripvault_seal.node') as Addon;
  const { open } = rawArgs();
  for (const addresses of [new Float64Array(1), new Float64Array(3), Float64Array.of(-1, 0), Float64Array.of(0, NaN), Float64Array.of(2 ** 41, 0), Uint8Array.of(0, 1), new BigInt64Array(2), 'x', 7]) {
    t.throws(() => addon.open({ ...open, addresses }), { instanceOf: Error }, label(addresses));
  }
});

test('round trips: sealed natively opens in JS, sealed in JS opens natively', (t) => {
  const useNative = requireNative(t);
  const r = prngFor('round-trip');
  for (let k = 0; k < 30; k++) {
    const b = randomSealBatch(r, 12);
    if (b.targets.length < b.m) continue;
    const want = expectedPlain(b);
    const what = describe(b, k);
    const nat = sealBatch(b); // native when available
    const js = b.targets.map(() => Buffer.alloc(b.count * b.slotBytes));
    sealIntoJs(b, js);
    const ob = (data: Uint8Array[]): OpenBatch => ({ ...b, slots: b.targets.map((s, p) => [s, data[p]!] as const), complete: true, verifyAll: r.bool() });
    const viaJs = openBatchJs(ob(nat));
    t.deepEqual(viaJs.outcomes, [], what);
    t.true(Buffer.from(viaJs.blocks).equals(want), what);
    const viaNative = openBatch(ob(js));
    t.deepEqual(viaNative.outcomes, [], what);
    t.true(Buffer.from(viaNative.blocks).equals(want), what);
    if (useNative && fastRead(b.m, b.targets, true)) {
      const out = Buffer.alloc(b.count * b.blockBytes);
      const status = openNative({ ...ob(js), verifyAll: true }, out)!;
      t.deepEqual([...status], new Array<number>(b.count).fill(0), `${what}: the fast path declined JS-sealed blocks`);
      t.true(out.equals(want), what);
    }
  }
});

// ---- 4. worker threads ----

test('two worker threads sealing and opening at once agree with the JS engine inline', async (t) => {
  const useNative = requireNative(t);
  // The addon loads in a worker thread as it does here.
  const inWorker = await new Promise<unknown>((resolve, reject) => {
    const w = new Worker(
      `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(new URL('../../appliance/split/native-seal.ts', import.meta.url).href)}); })
        .then((m) => require('node:worker_threads').parentPort.postMessage(m.nativeSeal.available), (e) => { throw e; });`,
      { eval: true },
    );
    w.once('message', (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
  t.is(inWorker, useNative, 'the addon must load in a worker thread exactly when it loads here');

  const pool = new SplitPool(2);
  t.teardown(() => pool.close());
  const r = prngFor('workers');
  const jobs = Array.from({ length: 24 }, (_, k) => {
    const b = randomSealBatch(r, 16);
    const corrupt = r.bool();
    const region = r.pick(['meta', 'body', 'tag'] as const);
    const flipAt = r.int(0, b.count - 1);
    const verifyAll = r.bool();
    const jr = new Prng(r.u32());
    return (async () => {
      const what = describe(b, k);
      const sealed = await pool.seal(b);
      const slots: Slots = b.targets.map((s, p) => [s, sealed[p]!] as const);
      if (corrupt) flip(jr, jr.pick(slots)[1], flipAt, b.slotBytes, region);
      const ob: OpenBatch = { ...b, slots, complete: true, verifyAll };
      const [pooled, inline] = [await pool.open(ob), openBatchJs(ob)];
      t.deepEqual({ ...pooled, blocks: Buffer.from(pooled.blocks) }, { ...inline, blocks: Buffer.from(inline.blocks) }, what);
      if (!corrupt && b.targets.length >= b.m) t.true(Buffer.from(pooled.blocks).equals(expectedPlain(b)), what);
      // And JS-sealed slots opened in a worker.
      const js = b.targets.map(() => Buffer.alloc(b.count * b.slotBytes));
      sealIntoJs(b, js);
      const ob2: OpenBatch = { ...b, slots: b.targets.map((s, p) => [s, js[p]!] as const), complete: true, verifyAll };
      const [back, inline2] = [await pool.open(ob2), openBatchJs(ob2)];
      t.deepEqual({ ...back, blocks: Buffer.from(back.blocks) }, { ...inline2, blocks: Buffer.from(inline2.blocks) }, what);
    })();
  });
  const runJobs = Array.from({ length: 8 }, () => {
    const { batch: b, runBlocks } = randomRuns(r);
    return (async () => {
      const out = await pool.sealRuns(b);
      const { offsets } = sealedRunOffsets(b.runs, b.slotBytes);
      b.runs.forEach((x, j) => {
        if (x.targets.length < b.m) return;
        const span = x.count * b.slotBytes;
        const slots: Slots = x.targets.map((s, p) => [s, out.subarray(offsets[j]! + p * span, offsets[j]! + (p + 1) * span)] as const);
        const got = openBatchJs({ ...b, first: x.first, count: x.count, slots, complete: true });
        t.deepEqual(got.outcomes, [], replay);
        t.true(Buffer.from(got.blocks).equals(expectedPlain({ ...b, ...x, blocks: runBlocks[j]! })), `run ${j}; ${replay}`);
      });
    })();
  });
  await Promise.all([...jobs, ...runJobs]);
});

// ---- 5. bad input ----

function validCall(): { seal: NativeSealCall; open: NativeOpenCall; b: SealBatch } {
  const r = new Prng(7);
  const m = 2;
  const n = 3;
  const blockBytes = 4096;
  const slotBytes = slotBytesFor(blockBytes, m);
  const count = 2;
  const keys: KeyTable = { sectionFirst: 0, keys: [0, 1, 2].map(() => [[r.bytes(32), null, null, null]]), active: [[0], [0], [0]] };
  const b: SealBatch = { volumeId: r.bytes(16), m, n, blockBytes, slotBytes, first: 5, count, keys, generation: 9, epoch: 1, blocks: r.bytes(count * blockBytes), zero: null, targets: [0, 1, 2] };
  const seal: NativeSealCall = {
    ...b,
    addresses: Float64Array.of(5, 6),
    generations: Float64Array.of(9, 10),
    outs: [0, 1, 2].map(() => Buffer.alloc(count * slotBytes)),
    outOffsets: Float64Array.of(0, 0, 0, slotBytes, slotBytes, slotBytes),
  };
  const sealed = sealBatch(b);
  const open: NativeOpenCall = { ...b, slots: sealed.map((d, i) => [i, d] as const), verifyAll: false };
  return { seal, open, b };
}

function typedError(t: ExecutionContext, f: () => unknown, code: ErrorCode, what: string): void {
  try {
    f();
    t.fail(`${what}: did not throw`);
  } catch (e) {
    t.true(isStripvaultError(e, code), `${what}: threw ${(e as Error)?.constructor?.name} ${(e as { code?: string }).code ?? ''} ${(e as Error)?.message} instead of ${code}`);
  }
}

test('bad input to sealNative and openNative throws typed errors', (t) => {
  const { seal, open } = validCall();
  if (!requireNative(t)) {
    // Off: both decline before looking at anything, and the JS engine does the work.
    t.false(sealNative({ ...seal, epoch: -1 }));
    t.is(openNative({ ...open, first: -1 }, Buffer.alloc(0)), null);
    return;
  }
  t.true(sealNative(seal), 'the valid call seals');
  const sealBlocks = seal.blocks as Uint8Array;
  t.deepEqual([...openNative(open, Buffer.alloc(2 * 4096))!], [0, 0], 'the valid call opens');
  const { InvalidArgument: A, InvalidGeometry: G } = ErrorCode;
  const bad: Array<[string, Partial<NativeSealCall>, ErrorCode]> = [
    ['blocks one byte short', { blocks: sealBlocks.subarray(1) }, A],
    ['blocks one byte long', { blocks: Buffer.concat([sealBlocks, Buffer.alloc(1)]) }, A],
    ['one buffer of blocks short', { blocks: [sealBlocks.subarray(0, 4096)] }, A],
    ['one buffer of blocks long', { blocks: [sealBlocks, sealBlocks.subarray(0, 4096)] }, A],
    ['a buffer of blocks not whole blocks', { blocks: [sealBlocks.subarray(0, 4095), sealBlocks.subarray(4095)] }, A],
    ['session key of 31 bytes', { keys: { ...seal.keys, keys: [[[Buffer.alloc(31)]], ...seal.keys.keys.slice(1)] } }, A],
    ['session key of 33 bytes', { keys: { ...seal.keys, keys: [...seal.keys.keys.slice(0, 2), [[Buffer.alloc(33)]]] } }, A],
    ['negative address', { addresses: Float64Array.of(5, -1) }, A],
    ['fractional address', { addresses: Float64Array.of(5.5, 6) }, A],
    ['address 2^40', { addresses: Float64Array.of(5, addressMax + 1) }, A],
    ['NaN address', { addresses: Float64Array.of(NaN, 6) }, A],
    ['generation 0', { generations: Float64Array.of(0, 10) }, A],
    ['negative generation', { generations: Float64Array.of(9, -10) }, A],
    ['fractional generation', { generations: Float64Array.of(9, 10.25) }, A],
    ['generation 2^48', { generations: Float64Array.of(9, generationMax + 1) }, A],
    ['infinite generation', { generations: Float64Array.of(9, Infinity) }, A],
    ['addresses and generations of different lengths', { generations: Float64Array.of(9) }, A],
    ['negative epoch', { epoch: -1 }, A],
    ['epoch 2^32', { epoch: epochMax + 1 }, A],
    ['fractional epoch', { epoch: 1.5 }, A],
    ['NaN epoch', { epoch: NaN }, A],
    ['one out fewer than targets', { outs: seal.outs.slice(1) }, A],
    ['one out more than targets', { outs: [...seal.outs, Buffer.alloc(1 << 16)] }, A],
    ['outOffsets of the wrong count', { outOffsets: seal.outOffsets.subarray(1) }, A],
    ['m = 0', { m: 0 }, G],
    ['m > n', { m: 4 }, G],
    ['n = 17', { n: 17 }, G],
    ['block size not a power of two', { blockBytes: 4000 }, G],
  ];
  for (const [what, over, code] of bad) typedError(t, () => sealNative({ ...seal, ...over }), code, `sealNative: ${what}`);
  const badOpen: Array<[string, Partial<NativeOpenCall>, ErrorCode, number?]> = [
    ['negative first', { first: -1 }, A],
    ['fractional first', { first: 1.5 }, A],
    ['first + count past 2^40', { first: addressMax }, A],
    ['negative count', { count: -1 }, A],
    ['fractional count', { count: 1.5 }, A],
    ['slot data one byte short', { slots: open.slots.map(([s, d], i) => [s, i === 1 ? d.subarray(1) : d] as const) }, A],
    ['session key of 31 bytes', { keys: { ...open.keys, keys: [[[Buffer.alloc(31)]], ...open.keys.keys.slice(1)] } }, A],
    ['output one byte short', {}, A, 2 * 4096 - 1],
    ['m = 0', { m: 0 }, G],
    ['n = 17', { n: 17 }, G],
    ['block size not a power of two', { blockBytes: 3000 }, G],
  ];
  for (const [what, over, code, outBytes] of badOpen) typedError(t, () => openNative({ ...open, ...over }, Buffer.alloc(outBytes ?? 2 * 4096)), code, `openNative: ${what}`);
});

test('bad input to sealNative: outOffsets past the output throw typed errors and write nothing', (t) => {
  const { seal } = validCall();
  if (!requireNative(t)) {
    t.false(sealNative({ ...seal, outOffsets: Float64Array.of(0, 0, 0, 1e9, 1e9, 1e9) }));
    return;
  }
  const slotBytes = seal.slotBytes;
  const offsets: Array<[string, number]> = [
    ['one byte past', slotBytes + 1],
    ['far past', 2 ** 40],
    ['negative', -1],
    ['fractional', 0.5],
    ['NaN', NaN],
  ];
  const problems: string[] = [];
  for (const [what, at] of offsets) {
    const outs = seal.outs.map((o) => Buffer.alloc(o.length, guardByte));
    try {
      sealNative({ ...seal, outs, outOffsets: Float64Array.of(0, 0, 0, slotBytes, slotBytes, at) });
      problems.push(`${what}: accepted`);
    } catch (e) {
      if (!isStripvaultError(e, ErrorCode.InvalidArgument)) problems.push(`${what}: threw ${(e as Error).name} ${(e as Error).message}, not ${ErrorCode.InvalidArgument}`);
    }
    if (!outs.every((o) => o.every((x) => x === guardByte))) problems.push(`${what}: a failed call wrote output`);
  }
  t.deepEqual(problems, []);
});

// ---- the raw addon with garbage: always a thrown Error, never a crash ----

interface Addon {
  seal(o?: unknown): unknown;
  open(o?: unknown): unknown;
}

function rawArgs(): { seal: Record<string, unknown>; open: Record<string, unknown> } {
  const r = new Prng(11);
  const m = 2;
  const n = 3;
  const blockBytes = 4096;
  const slotBytes = slotBytesFor(blockBytes, m);
  const count = 2;
  const keys = r.bytes(3 * 32);
  const seal = {
    blocks: r.bytes(count * blockBytes),
    aontKeys: r.bytes(count * 32),
    zero: null,
    volumeId: r.bytes(16),
    count,
    blockBytes,
    m,
    n,
    slotBytes,
    epoch: 3,
    addresses: Float64Array.of(5, 6),
    generations: Float64Array.of(9, 10),
    parity: parityMatrix(m, n),
    targets: Uint8Array.of(0, 1, 2),
    outs: [0, 1, 2].map(() => Buffer.alloc(count * slotBytes)),
    outOffsets: Float64Array.of(0, 0, 0, slotBytes, slotBytes, slotBytes),
    keys,
    keyIdx: Int16Array.of(0, 1, 2),
    keySlot: Uint8Array.of(0, 0, 0),
    sections: 1,
    sectionFirst: 0,
    sectionBytes,
  };
  const keyIdx = new Int16Array(3 * 256).fill(-1);
  keyIdx[0] = 0;
  keyIdx[256] = 1;
  keyIdx[512] = 2;
  const open = {
    /** Set to sealed slots by the caller. */
    slots: [] as Uint8Array[],
    strips: Uint8Array.of(0, 1, 2),
    volumeId: seal.volumeId,
    count,
    blockBytes,
    m,
    n,
    slotBytes,
    first: 5,
    keys,
    keyIdx,
    sections: 1,
    sectionFirst: 0,
    sectionBytes,
    verifyAll: true,
    out: Buffer.alloc(count * blockBytes),
    status: new Uint8Array(count),
  };
  return { seal, open };
}

function detached(bytes: number): Uint8Array {
  const a = new Uint8Array(bytes);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

/** For every field: missing, and a set of wrong values; plus wrong values for particular fields. */
function garbage(base: Record<string, unknown>, specific: Record<string, unknown[]>): Array<[string, unknown]> {
  const general: unknown[] = [undefined, null, 'x', 1, -1, NaN, Infinity, 2 ** 53, {}, [], true, new Float64Array(4), new Uint8Array(0), new BigInt64Array(2), new DataView(new ArrayBuffer(8)), detached(64)];
  const cases: Array<[string, unknown]> = [];
  for (const key of Object.keys(base)) {
    const { [key]: _omit, ...without } = base;
    cases.push([`${key} missing`, without]);
    for (const v of [...general, ...(specific[key] ?? [])]) cases.push([`${key} = ${label(v)}`, { ...base, [key]: v }]);
  }
  return cases;
}

function label(v: unknown): string {
  if (ArrayBuffer.isView(v)) {
    const n = (v as Uint8Array).length ?? v.byteLength;
    const small = n <= 8 && !(v instanceof DataView) && v.byteLength > 0 ? ` [${[...(v as Uint8Array)].join(',')}]` : '';
    return `${v.constructor.name}(${n})${small}`;
  }
  if (Array.isArray(v)) return `Array(${v.length})`;
  return typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined ? String(v) : typeof v;
}

test('the raw addon throws an Error for garbage arguments and keeps working', (t) => {
  if (!requireNative(t)) {
    t.pass('addon disabled: nothing native to feed garbage to');
    return;
  }
  const addon = createRequire(import.meta.url)('../../build/Release/stripvault_seal.node') as Addon;
  const { seal, open } = rawArgs();
  const slotBytes = seal.slotBytes as number;
  // The bases are valid: the garbage below is what makes each call fail.
  addon.seal(seal);
  open.slots = (seal.outs as Buffer[]).map((o) => Buffer.from(o));
  addon.open(open);
  t.deepEqual([...(open.status as Uint8Array)], [0, 0], 'the valid raw open opens');
  t.true((open.out as Buffer).equals(seal.blocks as Buffer), 'the valid raw open returns the blocks');

  // Blocks given as buffers of whole blocks seal exactly as the same blocks in one buffer.
  const whole = (seal.outs as Buffer[]).map((o) => Buffer.from(o));
  const b0 = seal.blocks as Buffer;
  const split = { ...seal, blocks: [b0.subarray(0, 4096), b0.subarray(4096)], outs: (seal.outs as Buffer[]).map((o) => Buffer.alloc(o.length)) };
  addon.seal(split);
  t.true((split.outs as Buffer[]).every((o, i) => o.equals(whole[i]!)), 'blocks in two buffers seal as in one');
  const sealGarbage = garbage(seal, {
    blocks: [
      new Float64Array(1024),
      (seal.blocks as Buffer).subarray(1),
      [(seal.blocks as Buffer).subarray(0, 4096)],
      [seal.blocks, (seal.blocks as Buffer).subarray(0, 4096)],
      [(seal.blocks as Buffer).subarray(0, 4095), (seal.blocks as Buffer).subarray(4095)],
      [(seal.blocks as Buffer).subarray(0, 4096), 'x'],
      [null, seal.blocks],
      [new Float64Array(512), (seal.blocks as Buffer).subarray(4096)],
    ],
    aontKeys: [new Uint8Array(63)],
    volumeId: [new Uint8Array(15), new Float64Array(2)],
    count: [2 ** 20 + 1, 2 ** 31, 2 ** 32, 1e300, 1.5, -(2 ** 31), 3],
    blockBytes: [511, 2 ** 20 + 1, 2 ** 31, 4095],
    m: [0, 17, 4, 2.5],
    n: [1, 17, 256, 2 ** 32 + 3],
    slotBytes: [0, 16, 100, 2 ** 22, 2 ** 32 + slotBytes],
    epoch: [2 ** 32, -0.5],
    addresses: [Float64Array.of(5), Float64Array.of(5, -1), Float64Array.of(5, 2 ** 40), Float64Array.of(5, NaN), Uint8Array.of(5, 6), new Float32Array(2)],
    generations: [Float64Array.of(9), Float64Array.of(0, 9), Float64Array.of(9, 2 ** 48), Float64Array.of(9, -Infinity), new Float64Array(2)],
    parity: [new Uint8Array(1), new Uint8Array(3), new Float64Array(2)],
    targets: [Uint8Array.of(0, 1, 3), Uint8Array.of(0, 0, 1), Uint8Array.of(0, 1, 255), Uint8Array.of(0, 1, 2, 0), new Uint8Array(0), Float64Array.of(0, 1, 2)],
    outs: [[Buffer.alloc(10), Buffer.alloc(10), Buffer.alloc(10)], [1, 2, 3], [null, null, null], (seal.outs as Buffer[]).slice(1), [...(seal.outs as Buffer[]), Buffer.alloc(1 << 14)], new Array(3), Object.assign([], { length: 2 ** 31 })],
    outOffsets: [
      Float64Array.of(0, 0, 0, slotBytes, slotBytes, slotBytes + 1),
      Float64Array.of(0, 0, 0, slotBytes, slotBytes, -1),
      Float64Array.of(0, 0, 0, slotBytes, slotBytes, 2 ** 60),
      Float64Array.of(0, 0, 0, slotBytes, slotBytes, NaN),
      Float64Array.of(0, 0, 0, slotBytes, slotBytes, 2 ** 64),
      Float64Array.of(0, 0, 0),
    ],
    keys: [new Uint8Array(31), new Uint8Array(0)],
    keyIdx: [Int16Array.of(0, 1, 3), Int16Array.of(0, 1, 32767), Int16Array.of(0, 1, -2), Int16Array.of(0, 1), new Int16Array(3 * 1000)],
    keySlot: [Uint8Array.of(0, 0)],
    zero: [Uint8Array.of(1), new Float64Array(2)],
    sections: [0, 2, 2 ** 16 + 1, 2 ** 40],
    sectionFirst: [1, -1, 2 ** 41, 2 ** 60],
    sectionBytes: [0, 1, 2 ** 51],
  });
  const openGarbage = garbage(open, {
    slots: [(open.slots as Buffer[]).slice(1), [...(open.slots as Buffer[]), Buffer.alloc(1 << 14)], [Buffer.alloc(10), Buffer.alloc(10), Buffer.alloc(10)], [1, 2, 3], Object.assign([], { length: 2 ** 31 })],
    strips: [Uint8Array.of(1, 0, 2), Uint8Array.of(0, 0, 1), Uint8Array.of(0, 1, 3), Uint8Array.of(0, 1, 2, 3), Uint8Array.of(0, 1)],
    volumeId: [new Uint8Array(17)],
    count: [3, 2 ** 20 + 1, 2 ** 40, 1e300, -0.5],
    blockBytes: [511, 8192, 2 ** 21],
    m: [0, 4, 17],
    n: [1, 2, 17],
    slotBytes: [0, 64, 2 ** 22, slotBytes * 2],
    first: [-1, 2 ** 40, 2 ** 40 - 1, 0.5],
    keys: [new Uint8Array(31)],
    keyIdx: [new Int16Array(3 * 256 - 1), new Int16Array(3 * 256).fill(5), new Int16Array(3 * 256).fill(-7)],
    sections: [0, 2, 2 ** 16 + 1],
    sectionFirst: [1, -1, 2 ** 41],
    sectionBytes: [0, 2 ** 51],
    out: [Buffer.alloc(2 * 4096 - 1), new Float64Array(1023)],
    status: [new Uint8Array(1)],
    verifyAll: ['yes', 1, null],
  });
  /**
   * Calls the addon may accept, each checked after the call: valid values that the general list
   * happens to hold, null/empty `zero` (no zero blocks), anything for verifyAll (not true is false),
   * and open calls whose keys or sections make every block decline to the JS engine (status 1).
   */
  const accepted: Record<string, 'sealed' | 'opened' | 'declined'> = {
    'seal: zero missing': 'sealed',
    'seal: zero = undefined': 'sealed',
    'seal: zero = null': 'sealed',
    'seal: zero = Uint8Array(0)': 'sealed',
    'seal: epoch = 1': 'sealed',
    'seal: sections = 1': 'sealed',
    'open: count = 1': 'opened',
    'open: first = 1': 'declined',
    'open: sections = 1': 'opened',
    'open: sectionFirst = 1': 'declined',
    'open: sectionBytes = 1': 'declined',
    'open: keys = Uint8Array(0)': 'declined',
    'open: keyIdx = Int16Array(768)': 'declined',
  };
  const problems: string[] = [];
  const status = open.status as Uint8Array;
  const outs = seal.outs as Buffer[];
  const untouched = 0xee;
  // The key table is consulted block by block, so a bad key index stops a seal midway (as the JS
  // engine stops at a missing key); every other refusal comes before any output.
  const stopsMidway = /^seal: keyIdx = Int16Array\(3\) \[0,1,(3|32767|-2)\]$/;
  const call = (f: (o?: unknown) => unknown, name: string, arg: unknown): void => {
    status.fill(untouched);
    for (const o of outs) o.fill(untouched);
    try {
      f(arg);
    } catch (e) {
      if (!(e instanceof Error)) problems.push(`${name}: threw ${String(e)}`);
      else if (e instanceof StripvaultError) problems.push(`${name}: a StripvaultError from the raw addon?`);
      if (!stopsMidway.test(name) && outs.some((o) => o.some((x) => x !== untouched))) problems.push(`${name}: refused, but wrote slots`);
      if (status.some((x) => x !== untouched)) problems.push(`${name}: refused, but wrote status`);
      return;
    }
    const want = /^open: verifyAll/.test(name) ? 'opened' : accepted[name];
    if (want === undefined) return void problems.push(`${name}: accepted`);
    const count = (arg as { count: number }).count;
    const got = [...status.subarray(0, count)];
    if (want === 'opened' && got.some((x) => x !== 0)) problems.push(`${name}: status ${got}`);
    if (want === 'declined' && got.some((x) => x !== 1)) problems.push(`${name}: status ${got}`);
  };
  for (const [name, o] of sealGarbage) call((x) => addon.seal(x), `seal: ${name}`, o);
  for (const [name, o] of openGarbage) call((x) => addon.open(x), `open: ${name}`, o);
  for (const f of [addon.seal, addon.open]) {
    for (const arg of [undefined, null, 0, 'x', [], () => 0]) call(f, `${f.name}(${label(arg)})`, arg);
    call(() => f(), `${f.name}()`, undefined);
  }
  t.deepEqual(problems, [], 'every garbage call is refused with an Error, or accepted and harmless');

  // Still sound afterwards: a valid seal/open round-trips, and matches the typed-array outputs above.
  const { seal: seal2, open: open2 } = rawArgs();
  addon.seal(seal2);
  open2.slots = seal2.outs;
  addon.open(open2);
  t.deepEqual([...(open2.status as Uint8Array)], [0, 0]);
  t.true((open2.out as Buffer).equals(seal2.blocks as Buffer));
});
