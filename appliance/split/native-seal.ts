/**
 * The native batch seal/open addon (native/seal.cc), loaded when it was built at install. It seals
 * and opens many blocks per call with OpenSSL contexts reused per thread; node:crypto would create
 * 1 CTR + 1 SHA-256 + N GCM objects per block, and that setup costs several times the AES work at
 * 4 KiB (issue 3). Same inputs and byte-identical output as the JavaScript engine in batch.ts;
 * test/split/native-seal.test.ts holds the two to that.
 *
 * Open is a fast path only: a block whose read slots all carry one generation and kind, whose
 * metadata is clean and whose first M shares authenticate is opened natively; anything else
 * (empty, torn, stale, corrupt, degraded beyond one XOR-rebuilt fragment) is reported back and
 * decided by the JavaScript engine, so rollback and repair rules exist in one place only.
 *
 * STRIPVAULT_NATIVE_SEAL=0 forces the JavaScript engine (for comparison, or if the addon is suspect).
 */
import { hash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ErrorCode, fail } from '../errors.ts';
import { sectionBytes } from '../strip/layout.ts';
import type { BatchShape, KeyTable } from './batch.ts';
import { validateBlockBytes, validateGeometry } from './geometry.ts';
import { withRandomBytes } from './random.ts';
import { parityMatrix } from './reed-solomon.ts';
import { addressMax, epochMax, generationMax } from './share-binding.ts';

/** Bad input gets the same typed error the JavaScript engine gives, before the addon sees it. */
function check(ok: boolean, what: string): void {
  if (!ok) fail(ErrorCode.InvalidArgument, `native seal: ${what}`);
}

interface Addon {
  seal(o: object): void;
  open(o: object): void;
  copy(dst: Uint8Array, dstAt: number, src: Uint8Array, srcAt: number, length: number): void;
  sha256Into(src: Uint8Array, srcAt: number, length: number, dst: Uint8Array, dstAt: number): void;
}

const addonFunctions = ['seal', 'open', 'copy', 'sha256Into'] as const;

const aontKeyBytes = 32;
const sha256Bytes = 32;
const sessionKeyBytes = 32;
const volumeIdBytes = 16;
/** Key slots a share can name (one byte in the slot metadata). */
const keySlotsMax = 256;

const addonPath = fileURLToPath(new URL('../../build/Release/stripvault_seal.node', import.meta.url));

function load(): { addon: Addon | null; why: string } {
  if (process.env.STRIPVAULT_NATIVE_SEAL === '0') return { addon: null, why: 'disabled by STRIPVAULT_NATIVE_SEAL=0' };
  if (!existsSync(addonPath)) return { addon: null, why: `not built (${addonPath} missing; run npm run build:native)` };
  try {
    const a = createRequire(import.meta.url)(addonPath) as Partial<Addon>;
    // A build left over from an older checkout lacks newer entry points: off as a whole, not half-used.
    const missing = addonFunctions.filter((f) => typeof a[f] !== 'function');
    if (missing.length > 0) return { addon: null, why: `stale build (no ${missing.join(', ')}; run npm run build:native)` };
    return { addon: a as Addon, why: 'loaded' };
  } catch (e) {
    return { addon: null, why: `failed to load: ${(e as Error).message}` };
  }
}
const loaded = load();
const addon = loaded.addon;

/** Whether the native engine is in use, and if not, why (for logs and the test). */
export const nativeSeal = { available: addon !== null, why: loaded.why } as const;

/** Below this a plain TypedArray#set is cheaper than crossing into the addon. */
export const nativeCopyBytesMin = 1024;

function isCount(x: number): boolean {
  return Number.isSafeInteger(x) && x >= 0;
}

/**
 * Copies `length` bytes of src from srcAt into dst at dstAt. Where either side is shared memory
 * (NBD payload buffers, sealed shares) and the addon is loaded, its memmove does it: V8 copies
 * shared memory with a relaxed-atomic loop several times slower than memcpy.
 */
export function copyBytes(dst: Uint8Array, dstAt: number, src: Uint8Array, srcAt = 0, length = src.length - srcAt): void {
  // No array or closure here: this runs per block cached, and its garbage was measurable.
  const ok = isCount(dstAt) && isCount(srcAt) && isCount(length) && srcAt + length <= src.length && dstAt + length <= dst.length;
  if (!ok) throw new RangeError(`copyBytes: ${length} bytes from ${srcAt} of ${src.length} to ${dstAt} of ${dst.length}`);
  if (addon !== null && length >= nativeCopyBytesMin && (dst.buffer instanceof SharedArrayBuffer || src.buffer instanceof SharedArrayBuffer)) addon.copy(dst, dstAt, src, srcAt, length);
  else dst.set(srcAt === 0 && length === src.length ? src : src.subarray(srcAt, srcAt + length), dstAt);
}

/**
 * SHA-256 of src[srcAt, srcAt + length) written into dst at dstAt. Natively when the addon is
 * loaded (a small digest per journal record: node:crypto's one-shot costs several times the hash).
 */
export function sha256Into(src: Uint8Array, srcAt: number, length: number, dst: Uint8Array, dstAt: number): void {
  const ok = isCount(srcAt) && isCount(length) && isCount(dstAt) && srcAt + length <= src.length && dstAt + sha256Bytes <= dst.length;
  if (!ok) throw new RangeError(`sha256Into: ${length} bytes from ${srcAt} of ${src.length} to ${dstAt} of ${dst.length}`);
  if (addon !== null) addon.sha256Into(src, srcAt, length, dst, dstAt);
  else dst.set(hash('sha256', src.subarray(srcAt, srcAt + length), 'buffer'), dstAt);
}

const parities = new Map<string, Uint8Array>();
function parity(m: number, n: number): Uint8Array {
  const id = `${m}/${n}`;
  let p = parities.get(id);
  if (p === undefined) parities.set(id, (p = parityMatrix(m, n)));
  return p;
}

/** Distinct session keys of a call, packed for the addon; a key is sent once however often it is used. */
class KeyPack {
  private readonly index = new Map<Uint8Array, number>();
  private readonly list: Uint8Array[] = [];
  of(k: Uint8Array): number {
    let i = this.index.get(k);
    if (i === undefined) {
      check(k.length === sessionKeyBytes, 'a session key is not 32 bytes');
      i = this.list.length;
      this.index.set(k, i);
      this.list.push(k);
    }
    return i;
  }
  bytes(): Buffer {
    return Buffer.concat(this.list);
  }
}

function sectionCount(t: KeyTable): number {
  let s = 1;
  for (const x of t.keys) if (x) s = Math.max(s, x.length);
  return s;
}

interface SealKeys {
  readonly sections: number;
  readonly keys: Buffer;
  readonly keyIdx: Int16Array;
  readonly keySlot: Uint8Array;
}

/** The active key of each target per section, as indexes into one packed key buffer. */
function sealKeys(table: KeyTable, targets: readonly number[]): SealKeys {
  const sections = sectionCount(table);
  const pack = new KeyPack();
  const keyIdx = new Int16Array(targets.length * sections).fill(-1);
  const keySlot = new Uint8Array(targets.length * sections);
  targets.forEach((strip, t) => {
    const secs = table.keys[strip];
    const active = table.active[strip];
    if (!secs || !active) return;
    for (let s = 0; s < sections; s++) {
      const slot = active[s];
      const k = slot === undefined ? null : secs[s]?.[slot];
      if (k) {
        keyIdx[t * sections + s] = pack.of(k);
        keySlot[t * sections + s] = slot!;
      }
    }
  });
  return { sections, keys: pack.bytes(), keyIdx, keySlot };
}

export interface NativeSealCall extends BatchShape {
  readonly epoch: number;
  readonly targets: readonly number[];
  /** count × blockBytes, or buffers of whole blocks that hold the count blocks in order. */
  readonly blocks: Uint8Array | readonly Uint8Array[];
  readonly zero: Uint8Array | null;
  readonly addresses: Float64Array;
  readonly generations: Float64Array;
  /** One buffer per target (the same buffer may repeat). */
  readonly outs: readonly Uint8Array[];
  /** count × targets: where block i's slot for target t starts in outs[t]. */
  readonly outOffsets: Float64Array;
}

/**
 * Seals blocks natively; false when the addon is not in use (the caller seals in JavaScript).
 * aontKeys (count × 32) may be injected by the cross-check test; by default they are fresh random
 * and zeroed after the call.
 */
export function sealNative(c: NativeSealCall, aontKeys?: Uint8Array): boolean {
  // Nothing to produce: the JavaScript engine's answer (no slots) is the one to give.
  if (addon === null || c.targets.length === 0) return false;
  validateGeometry(c.m, c.n);
  validateBlockBytes(c.blockBytes);
  check(c.volumeId.length === volumeIdBytes, 'volume id is not 16 bytes');
  const count = c.addresses.length;
  check(c.zero === null || c.zero.length >= count, 'zero marks shorter than the blocks');
  check(new Set(c.targets).size === c.targets.length && c.targets.every((t) => Number.isInteger(t) && t >= 0 && t < c.n), 'bad or duplicate target strip');
  for (let i = 0; i < c.outOffsets.length; i++) {
    const o = c.outOffsets[i]!;
    const out = c.outs[i % c.targets.length];
    check(out !== undefined && Number.isInteger(o) && o >= 0 && o + c.slotBytes <= out.length, 'an output offset is outside its buffer');
  }
  const blocksLength = c.blocks instanceof Uint8Array ? c.blocks.length : c.blocks.reduce((a, b) => (b.length % c.blockBytes === 0 ? a + b.length : Number.NaN), 0);
  check(c.generations.length === count && blocksLength === count * c.blockBytes, 'per-block sizes');
  check(c.outs.length === c.targets.length && c.outOffsets.length === count * c.targets.length, 'outputs');
  check(Number.isInteger(c.epoch) && c.epoch >= 0 && c.epoch <= epochMax, 'epoch');
  for (let i = 0; i < count; i++) {
    const a = c.addresses[i]!;
    const g = c.generations[i]!;
    check(Number.isInteger(a) && a >= 0 && a <= addressMax && Number.isInteger(g) && g >= 1 && g <= generationMax, 'address or generation out of range');
  }
  const engine = addon;
  const sealWith = (keysBuf: Uint8Array): void => {
    let sessionKeys: Uint8Array | null = null;
    try {
      const k = sealKeys(c.keys, c.targets);
      sessionKeys = k.keys;
      engine.seal({
        blocks: c.blocks,
        aontKeys: keysBuf,
        zero: c.zero,
        volumeId: c.volumeId,
        count,
        blockBytes: c.blockBytes,
        m: c.m,
        n: c.n,
        slotBytes: c.slotBytes,
        epoch: c.epoch,
        addresses: c.addresses,
        generations: c.generations,
        parity: parity(c.m, c.n),
        targets: Uint8Array.from(c.targets),
        outs: c.outs,
        outOffsets: c.outOffsets,
        keys: k.keys,
        keyIdx: k.keyIdx,
        keySlot: k.keySlot,
        sections: k.sections,
        sectionFirst: c.keys.sectionFirst,
        sectionBytes,
      });
    } finally {
      // The copy of the session keys is cleared whether the call succeeded or threw.
      sessionKeys?.fill(0);
    }
  };
  // Fresh per-block keys, cleared after the call (withRandomBytes clears its own).
  if (aontKeys !== undefined) sealWith(aontKeys);
  else withRandomBytes(count * aontKeyBytes, sealWith);
  return true;
}

export interface NativeOpenCall extends BatchShape {
  readonly first: number;
  readonly count: number;
  /** Block i's address, when the blocks are not consecutive (runs gathered into one call); else first + i. */
  readonly addresses?: Float64Array;
  readonly slots: ReadonlyArray<readonly [stripIndex: number, data: Uint8Array]>;
  readonly verifyAll: boolean;
}

/**
 * Opens what it can natively into `out` (count × blockBytes); returns per block 0 = opened, 1 = the
 * caller must decide this block in JavaScript. Null when the addon is not in use.
 */
export function openNative(c: NativeOpenCall, out: Uint8Array): Uint8Array | null {
  if (addon === null) return null;
  validateGeometry(c.m, c.n);
  validateBlockBytes(c.blockBytes);
  check(c.volumeId.length === volumeIdBytes, 'volume id is not 16 bytes');
  check(Number.isInteger(c.count) && c.count >= 0 && Number.isInteger(c.first) && c.first >= 0, 'address out of range');
  if (c.addresses === undefined) check(c.first + c.count - 1 <= addressMax, 'address out of range');
  else check(c.addresses.length === c.count && c.addresses.every((a) => Number.isInteger(a) && a >= 0 && a <= addressMax), 'address out of range');
  check(out.length >= c.count * c.blockBytes, 'output size');
  const sorted = [...c.slots].sort((x, y) => x[0] - y[0]);
  // A bad strip list is the JavaScript engine's to refuse, with its own error.
  if (!sorted.every(([strip], i) => Number.isInteger(strip) && strip >= 0 && strip < c.n && (i === 0 || strip !== sorted[i - 1]![0]))) return null;
  for (const [, d] of sorted) check(d.length >= c.count * c.slotBytes, 'slot data size');
  const sections = sectionCount(c.keys);
  const pack = new KeyPack();
  const keyIdx = new Int16Array(sorted.length * sections * keySlotsMax).fill(-1);
  sorted.forEach(([strip], s) => {
    const secs = c.keys.keys[strip];
    // As batch.ts keyAt: a strip without an active-slot table has no keys at all.
    if (!secs || !c.keys.active[strip]) return;
    for (let sec = 0; sec < sections; sec++) {
      secs[sec]?.forEach((k, slot) => {
        if (k && slot < keySlotsMax) keyIdx[(s * sections + sec) * keySlotsMax + slot] = pack.of(k);
      });
    }
  });
  const status = new Uint8Array(c.count);
  const keys = pack.bytes();
  try {
    addon.open({
      slots: sorted.map(([, d]) => d),
      strips: Uint8Array.from(sorted.map(([s]) => s)),
      volumeId: c.volumeId,
      count: c.count,
      blockBytes: c.blockBytes,
      m: c.m,
      n: c.n,
      slotBytes: c.slotBytes,
      // With addresses, first is not used (and first + count need not be an address).
      first: c.addresses === undefined ? c.first : 0,
      addresses: c.addresses,
      keys,
      keyIdx,
      sections,
      sectionFirst: c.keys.sectionFirst,
      sectionBytes,
      verifyAll: c.verifyAll,
      out,
      status,
    });
  } finally {
    keys.fill(0);
  }
  return status;
}
