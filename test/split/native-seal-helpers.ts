/**
 * Helpers for native-seal.test.ts: a seeded PRNG (failures replay from the printed seed), random
 * seal cases, and a tap on crypto.randomFillSync that records the AONT keys the JavaScript engine
 * draws (random.ts hands its pool out in order, 32 bytes per data block) and feeds chosen keys to
 * the native seal's own draw (native-seal.ts fills count × 32 bytes per call), so both engines can
 * be made to use the same keys and must then agree byte for byte.
 */
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import type { KeyTable, SealBatch } from '../../appliance/split/batch.ts';
import { randomBulkBytes, randomKey, withRandomBytes } from '../../appliance/split/random.ts';
import { addressMax, generationMax, epochMax } from '../../appliance/split/share-binding.ts';
import { keySlotsPerSection, sectionOfSlot, slotBytesFor } from '../../appliance/strip/layout.ts';

export const aontKeyBytes = 32;
/** random.ts poolBytes: drawing it whole leaves the pool empty, so the next key comes from a fresh fill. */
const randomPoolBytes = 8192;

// ---- seeded PRNG (sfc32) ----

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Uniform float in [0, 1) with 53 bits. */
  float(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }
  /** Integer in [lo, hi] (inclusive), exact up to 2^53. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }
  bool(pTrue = 0.5): boolean {
    return this.float() < pTrue;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) out.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}

/** The run's seed: STRIPVAULT_TEST_SEED replays a failure. */
export const seed = process.env.STRIPVAULT_TEST_SEED !== undefined ? Number(process.env.STRIPVAULT_TEST_SEED) >>> 0 : crypto.randomInt(2 ** 32);

/** A PRNG per test, so one test's cases replay whatever the others did. */
export function prngFor(testName: string): Prng {
  let h = seed;
  for (const ch of testName) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return new Prng(h);
}

// ---- the key tap ----

type Mode = { kind: 'off' } | { kind: 'record'; fills: Buffer[] } | { kind: 'feed'; pool: Buffer; poolAt: number; native: Buffer; nativeAt: number; nativeCalls: number };

const realFill = crypto.randomFillSync;
let pool: object | null = null;
let capturing = false;
let mode: Mode = { kind: 'off' };

function tapFill<T extends NodeJS.ArrayBufferView>(buf: T, offset?: number, size?: number): T {
  if (capturing) pool = buf;
  const isPool = pool !== null && buf === pool;
  if (offset !== undefined || size !== undefined || mode.kind === 'off') return realFill(buf, offset, size);
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (mode.kind === 'record') {
    realFill(buf);
    if (isPool) mode.fills.push(Buffer.from(bytes));
    return buf;
  }
  // feed: the pool gets the JS keys in order, any other fill (the native seal's) the native keys.
  realFill(buf);
  if (isPool) {
    const n = Math.min(bytes.length, mode.pool.length - mode.poolAt);
    bytes.set(mode.pool.subarray(mode.poolAt, mode.poolAt + n));
    mode.poolAt += n;
  } else {
    const n = Math.min(bytes.length, mode.native.length - mode.nativeAt);
    bytes.set(mode.native.subarray(mode.nativeAt, mode.nativeAt + n));
    mode.nativeAt += n;
    mode.nativeCalls++;
  }
  return buf;
}

let installed = false;
/** Swaps crypto.randomFillSync for the tap (live ESM bindings follow via syncBuiltinESMExports). */
export function installKeyTap(): void {
  if (installed) return;
  installed = true;
  (crypto as { randomFillSync: unknown }).randomFillSync = tapFill;
  syncBuiltinESMExports();
  emptyPool();
  if (pool === null || (pool as Uint8Array).length !== randomPoolBytes) {
    throw new Error('key tap: random.ts no longer refills a pool of 8192 bytes through randomFillSync; update the test helper');
  }
}

/**
 * Leaves random.ts's pools empty (and learns which buffer the key pool is): the next native seal's
 * keys then come from a refill of the bulk pool, which the tap fills.
 */
function emptyPool(): void {
  withRandomBytes(randomBulkBytes, () => undefined);
  randomKey(randomPoolBytes).fill(0);
  capturing = true;
  try {
    randomKey(randomPoolBytes).fill(0);
  } finally {
    capturing = false;
  }
}

/** Runs fn and returns the bytes random.ts handed out during it, in order (the JS engine's AONT keys). */
export function recordJsKeys(fn: () => void): Buffer {
  emptyPool();
  const m: Mode = { kind: 'record', fills: [] };
  mode = m;
  try {
    fn();
  } finally {
    mode = { kind: 'off' };
  }
  return Buffer.concat(m.fills);
}

/**
 * Runs fn with random.ts's pool refilled from `jsKeys` and any other randomFillSync (the native
 * seal's AONT keys) filled from `nativeKeys`; returns how much of each was used.
 */
export function feedKeys(jsKeys: Buffer, nativeKeys: Buffer, fn: () => void): { jsUsed: number; nativeUsed: number; nativeCalls: number } {
  emptyPool();
  const m: Mode = { kind: 'feed', pool: jsKeys, poolAt: 0, native: nativeKeys, nativeAt: 0, nativeCalls: 0 };
  mode = m;
  try {
    fn();
  } finally {
    mode = { kind: 'off' };
  }
  return { jsUsed: m.poolAt, nativeUsed: m.nativeAt, nativeCalls: m.nativeCalls };
}

/**
 * Per-block AONT keys (count × 32, zero blocks left zero) from the keys the JS engine drew, which
 * skips zero blocks.
 */
export function perBlockKeys(drawn: Buffer, count: number, zero: Uint8Array | null): Buffer {
  const out = Buffer.alloc(count * aontKeyBytes);
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (zero !== null && zero[i] !== 0) continue;
    if (at + aontKeyBytes > drawn.length) throw new Error(`key tap: the JS engine drew ${drawn.length} bytes, block ${i} needs more`);
    drawn.copy(out, i * aontKeyBytes, at, at + aontKeyBytes);
    at += aontKeyBytes;
  }
  return out;
}

/** The JS engine's key stream (zero blocks skipped) from per-block keys. */
export function jsKeyStream(perBlock: Buffer, zero: Uint8Array | null): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i * aontKeyBytes < perBlock.length; i++) {
    if (zero === null || zero[i] === 0) parts.push(perBlock.subarray(i * aontKeyBytes, (i + 1) * aontKeyBytes));
  }
  return Buffer.concat(parts);
}

// ---- random cases ----

export const geometries: readonly (readonly [number, number])[] = [[2, 3], [3, 5], [4, 6], [1, 2], [3, 3], [1, 1]];

/** First slot of section `section` (the double arithmetic of sectionOfSlot decides the boundary). */
export function firstSlotOfSection(section: number, slotBytes: number): number {
  let s = Math.ceil((section * 64 * 1024 ** 3) / slotBytes);
  while (s > 0 && sectionOfSlot(s - 1, slotBytes) >= section) s--;
  while (sectionOfSlot(s, slotBytes) < section) s++;
  return s;
}

export interface CaseShape {
  readonly volumeId: Buffer;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly slotBytes: number;
}

export function randomShape(r: Prng): CaseShape {
  const [m, n] = r.pick(geometries);
  const blockBytes = r.pick([512, 4096, 4096, 65536]);
  // Now and then a slot with more padding than slotBytesFor leaves, so padding bytes exist to corrupt.
  const slotBytes = slotBytesFor(blockBytes, m) + (r.bool(0.25) ? 8 * r.int(1, 8) : 0);
  return { volumeId: r.bytes(16), m, n, blockBytes, slotBytes };
}

/** Where a batch of `count` blocks starts: low, straddling a 64 GiB section boundary, or near the top. */
export function randomFirst(r: Prng, slotBytes: number, count: number): number {
  const top = addressMax - count + 1;
  const where = r.int(0, 9);
  if (where < 4) return r.int(0, 1_000_000);
  if (where < 9) {
    const maxSection = sectionOfSlot(top, slotBytes);
    const boundary = firstSlotOfSection(r.int(1, maxSection), slotBytes);
    return Math.min(top, Math.max(0, boundary - r.int(1, count)));
  }
  return top - r.int(0, 3);
}

/**
 * Keys for every strip and section of [first, last]: 4 key slots per section, some empty, the active
 * one random; a strip may have no keys at all (it cannot be a target). Sometimes a key object is
 * shared by several strips (the native call packs each distinct key once).
 */
export function randomKeys(r: Prng, n: number, slotBytes: number, first: number, last: number): KeyTable {
  const sectionFirst = sectionOfSlot(first, slotBytes);
  const sections = sectionOfSlot(last, slotBytes) - sectionFirst + 1 + (r.bool(0.2) ? 1 : 0);
  const shared = r.bytes(32);
  const keys: ((Uint8Array | null)[][] | null)[] = [];
  const active: (number[] | null)[] = [];
  const keyless = n > 1 && r.bool(0.15) ? r.int(0, n - 1) : -1;
  for (let s = 0; s < n; s++) {
    if (s === keyless) {
      keys.push(null);
      active.push(null);
      continue;
    }
    const secs: (Uint8Array | null)[][] = [];
    const act: number[] = [];
    for (let sec = 0; sec < sections; sec++) {
      const slots = Array.from({ length: keySlotsPerSection }, () => (r.bool(0.3) ? null : r.bool(0.1) ? shared : r.bytes(32)));
      const a = r.int(0, keySlotsPerSection - 1);
      slots[a] ??= r.bytes(32);
      secs.push(slots);
      act.push(a);
    }
    keys.push(secs);
    active.push(act);
  }
  return { sectionFirst, keys, active };
}

/** A copy of the table with other active key slots (a re-key between two writes). */
export function rekeyed(r: Prng, t: KeyTable): KeyTable {
  const active = t.keys.map((secs) =>
    secs === null ? null : secs.map((slots) => {
      const present = slots.map((k, i) => (k ? i : -1)).filter((i) => i >= 0);
      return r.pick(present);
    }),
  );
  return { ...t, active };
}

/** genHeadroom: generations after the batch's own that later writes to the same blocks may take (× count). */
export function randomSealBatch(r: Prng, countMax = 40, genHeadroom = 0): SealBatch {
  const shape = randomShape(r);
  const count = r.int(1, shape.blockBytes >= 65536 ? Math.min(countMax, 6) : countMax);
  const first = randomFirst(r, shape.slotBytes, count);
  const keys = randomKeys(r, shape.n, shape.slotBytes, first, first + count - 1);
  const eligible = keys.keys.map((k, i) => (k ? i : -1)).filter((i) => i >= 0);
  let targets = r.bool(0.6) ? eligible : eligible.filter(() => r.bool(0.6));
  if (targets.length === 0) targets = [r.pick(eligible)];
  if (r.bool(0.3)) targets = r.shuffle([...targets]);
  const zeroMode = r.int(0, 5);
  const zero = zeroMode < 3 ? null : Uint8Array.from({ length: count }, () => (zeroMode === 5 || r.bool(0.35) ? 1 : 0));
  const genTop = generationMax - count * (1 + genHeadroom) + 1;
  const generation = r.bool(0.9) ? r.int(1, 2 ** 40) : genTop - r.int(0, 2);
  const epoch = r.pick([0, epochMax, r.int(0, epochMax), r.int(0, 100)]);
  return { ...shape, first, count, keys, generation, epoch, blocks: r.bytes(count * shape.blockBytes), zero, targets };
}

/** The plaintext a batch should open to: its blocks with zero-marked ones zeroed. */
export function expectedPlain(b: Pick<SealBatch, 'blocks' | 'zero' | 'blockBytes' | 'count'>): Buffer {
  const out = Buffer.from(b.blocks);
  if (b.zero !== null) for (let i = 0; i < b.count; i++) if (b.zero[i] !== 0) out.fill(0, i * b.blockBytes, (i + 1) * b.blockBytes);
  return out;
}
