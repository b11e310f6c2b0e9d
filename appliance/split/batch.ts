/**
 * Seal and open whole runs of consecutive blocks, producing and consuming strip slot bytes. Pure
 * (no I/O, no shared state), so the same code runs inline or in a worker of the split pool; inputs
 * and outputs are plain typed arrays that cross a worker boundary without copying.
 *
 * The native addon (native-seal.ts) does the work when it is built; the JavaScript engine below is
 * the reference it is checked against, the fallback without it, and the judge of every block the
 * native open's fast path declines.
 */
import { assert } from '../errors.ts';
import { openNative, sealNative } from './native-seal.ts';
import { decodeSlot, encodeSlot } from '../strip/slot.ts';
import { sectionOfSlot } from '../strip/layout.ts';
import { NotEnoughSharesError, openBlock, sealBlock, type ShareRejection } from './split.ts';

/**
 * Session keys of the strips for the sections a batch touches: keys[strip][section - sectionFirst][keySlot]
 * (null where a strip or slot has none), active[strip][section - sectionFirst] the slot new writes use.
 */
export interface KeyTable {
  readonly sectionFirst: number;
  readonly keys: ReadonlyArray<ReadonlyArray<ReadonlyArray<Uint8Array | null>> | null>;
  readonly active: ReadonlyArray<ReadonlyArray<number> | null>;
}

export interface BatchGeometry {
  readonly volumeId: Uint8Array;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly slotBytes: number;
  /** Address of the first block. */
  readonly first: number;
  readonly count: number;
  readonly keys: KeyTable;
}

export interface SealBatch extends BatchGeometry {
  /** Generation of the first block; block i gets generation + i. */
  readonly generation: number;
  readonly epoch: number;
  /** count × blockBytes */
  readonly blocks: Uint8Array;
  /** zero[i] !== 0: block i is all zeros and becomes a zero marker. Null: none are. */
  readonly zero: Uint8Array | null;
  /** Strip indices to produce slots for. */
  readonly targets: readonly number[];
}

export interface OpenBatch extends BatchGeometry {
  /** Slot bytes (count × slotBytes) per strip that was read. */
  readonly slots: ReadonlyArray<readonly [stripIndex: number, data: Uint8Array]>;
  readonly complete: boolean;
  /** Strips known to have missed writes (see OpenRequest.stale). */
  readonly stale?: readonly number[];
  /** Authenticate every share, not just M (scrub). */
  readonly verifyAll?: boolean;
  /**
   * Block i's address when the blocks are not consecutive (a worker's runs gathered into one
   * batch: one native call instead of one per run); else first + i.
   */
  readonly addresses?: Float64Array;
}

export interface BlockOutcome {
  readonly i: number;
  readonly rejected: readonly ShareRejection[];
  /** Generation the block opened at (absent when it failed). */
  readonly generation?: number;
  /** Set when the block could not be opened. */
  readonly failed?: { readonly needMore: boolean; readonly message: string };
}

export interface OpenBatchResult {
  /** count × blockBytes; blocks that failed are left zero. */
  readonly blocks: Uint8Array;
  /** Only blocks with something to say (rejections or failure). */
  readonly outcomes: readonly BlockOutcome[];
}

function keyAt(table: KeyTable, strip: number, address: number, slotBytes: number, keySlot: number | null): { key: Uint8Array; keySlot: number } | null {
  const sections = table.keys[strip];
  const active = table.active[strip];
  if (!sections || !active) return null;
  const s = sectionOfSlot(address, slotBytes) - table.sectionFirst;
  const slot = keySlot ?? active[s];
  if (slot === undefined) return null;
  const key = sections[s]?.[slot];
  return key ? { key, keySlot: slot } : null;
}

/** Returns one buffer of count × slotBytes per target, in `targets` order. */
export function sealBatch(b: SealBatch): Uint8Array[] {
  // Unpooled: these may be transferred to another thread, which must not take Node's shared pool along.
  const out = b.targets.map(() => Buffer.allocUnsafeSlow(b.count * b.slotBytes));
  sealInto(b, out);
  return out;
}

/** What a batch of runs shares: the volume's geometry and the keys of every section the runs touch. */
export type BatchShape = Omit<BatchGeometry, 'first' | 'count'>;

/** One write's blocks within a SealRunsBatch. */
export interface SealRun {
  readonly first: number;
  readonly count: number;
  readonly generation: number;
  readonly epoch: number;
  readonly zero: Uint8Array | null;
  readonly targets: readonly number[];
}

/** Several writes sealed in one go (one worker message for many small requests). */
export interface SealRunsBatch extends BatchShape {
  /**
   * The runs' blocks back to back, in run order; or one buffer per run, so writes received into
   * buffers of their own need not be packed into one first.
   */
  readonly blocks: Uint8Array | readonly Uint8Array[];
  readonly runs: readonly SealRun[];
  /**
   * Shared memory to seal into, at least sealedRunOffsets' bytes long (the caller's reusable
   * buffer: a fresh one per batch costs a page fault per 4 KiB on the sealing thread). Every byte of
   * every slot is written. Without it, sealRuns allocates.
   */
  readonly out?: Uint8Array;
}

/** Where each run's shares are in sealRuns' output: per run, per target, count × slotBytes. */
export function sealedRunOffsets(runs: readonly Pick<SealRun, 'count' | 'targets'>[], slotBytes: number): { offsets: number[]; bytes: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const r of runs) {
    offsets.push(at);
    at += r.targets.length * r.count * slotBytes;
  }
  return { offsets, bytes: at };
}

/** Seals every run into one buffer laid out as sealedRunOffsets says. */
export function sealRuns(b: SealRunsBatch): Uint8Array {
  const { offsets, bytes } = sealedRunOffsets(b.runs, b.slotBytes);
  const perRun = b.blocks instanceof Uint8Array ? null : b.blocks;
  if (perRun === null) {
    assert((b.blocks as Uint8Array).length === b.runs.reduce((a, r) => a + r.count * b.blockBytes, 0), 'sealRuns: blocks do not match the runs');
  } else {
    assert(perRun.length === b.runs.length && perRun.every((x, k) => x.length === b.runs[k]!.count * b.blockBytes), 'sealRuns: blocks do not match the runs');
  }
  const packed = perRun === null ? (b.blocks as Uint8Array) : null;
  // Shared memory: the shares are ciphertext, and the journal and the strip writers on other threads
  // then use them where they are instead of each receiving a copy.
  const given = b.out;
  if (given !== undefined) assert(given.buffer instanceof SharedArrayBuffer && given.length >= bytes, 'sealRuns: out is not shared memory of the sealed size');
  const out = given !== undefined ? Buffer.from(given.buffer, given.byteOffset, bytes) : Buffer.from(new SharedArrayBuffer(bytes));
  // Runs with the same epoch and targets (normally all of them) go to the native engine in one call,
  // whether packed in one buffer or each in its own (the NBD payloads of a turn's small writes): a
  // call's fixed cost (argument checks, key table, scrubbing the key schedules) is about twice the
  // sealing of a 4 KiB block, so small writes gain most from sharing one.
  let blockAt = 0;
  for (let k = 0; k < b.runs.length; ) {
    const r0 = b.runs[k]!;
    let end = k + 1;
    let blocks = r0.count;
    while (end < b.runs.length && b.runs[end]!.epoch === r0.epoch && sameTargets(b.runs[end]!.targets, r0.targets)) blocks += b.runs[end++]!.count;
    const group = b.runs.slice(k, end);
    const groupBlocks = packed !== null ? packed.subarray(blockAt, blockAt + blocks * b.blockBytes) : perRun!.slice(k, end);
    if (!sealRunsNative(b, group, offsets.slice(k, end), groupBlocks, out)) {
      let at = 0;
      group.forEach((r, j) => {
        const span = r.count * b.slotBytes;
        const o = offsets[k + j]!;
        const dest = r.targets.map((_, p) => out.subarray(o + p * span, o + (p + 1) * span));
        const runBlocks = groupBlocks instanceof Uint8Array ? groupBlocks.subarray(at, at + r.count * b.blockBytes) : groupBlocks[j]!;
        at += r.count * b.blockBytes;
        sealIntoJs({ ...b, ...r, blocks: runBlocks }, dest);
      });
    }
    blockAt += blocks * b.blockBytes;
    k = end;
  }
  return out;
}

function sameTargets(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

/** Runs sharing epoch and targets, sealed in one native call; false without the addon. */
function sealRunsNative(b: SealRunsBatch, runs: readonly SealRun[], offsets: readonly number[], blocks: Uint8Array | readonly Uint8Array[], out: Uint8Array): boolean {
  const count = runs.reduce((a, r) => a + r.count, 0);
  const targets = runs[0]!.targets;
  const T = targets.length;
  const addresses = new Float64Array(count);
  const generations = new Float64Array(count);
  const outOffsets = new Float64Array(count * T);
  const anyZero = runs.some((r) => r.zero !== null);
  const zero = anyZero ? new Uint8Array(count) : null;
  let i = 0;
  runs.forEach((r, k) => {
    const span = r.count * b.slotBytes;
    for (let j = 0; j < r.count; j++, i++) {
      addresses[i] = r.first + j;
      generations[i] = r.generation + j;
      if (zero !== null && r.zero !== null) zero[i] = r.zero[j]!;
      for (let p = 0; p < T; p++) outOffsets[i * T + p] = offsets[k]! + p * span + j * b.slotBytes;
    }
  });
  return sealNative({
    volumeId: b.volumeId,
    m: b.m,
    n: b.n,
    blockBytes: b.blockBytes,
    slotBytes: b.slotBytes,
    keys: b.keys,
    epoch: runs[0]!.epoch,
    targets,
    blocks,
    zero,
    addresses,
    generations,
    outs: targets.map(() => out),
    outOffsets,
  });
}

function sealInto(b: SealBatch, out: readonly Uint8Array[]): void {
  const T = b.targets.length;
  assert(out.length === T, 'sealInto: one output per target');
  const addresses = new Float64Array(b.count);
  const generations = new Float64Array(b.count);
  const outOffsets = new Float64Array(b.count * T);
  for (let i = 0; i < b.count; i++) {
    addresses[i] = b.first + i;
    generations[i] = b.generation + i;
    for (let p = 0; p < T; p++) outOffsets[i * T + p] = i * b.slotBytes;
  }
  const native = sealNative({ ...b, addresses, generations, outs: out, outOffsets });
  if (!native) sealIntoJs(b, out);
}

/** The JavaScript engine: one block at a time through split.ts. */
export function sealIntoJs(b: SealBatch, out: readonly Uint8Array[]): void {
  const position = new Map(b.targets.map((t, p) => [t, p]));
  for (let i = 0; i < b.count; i++) {
    const address = b.first + i;
    const shares = sealBlock({
      volumeId: b.volumeId,
      m: b.m,
      n: b.n,
      blockBytes: b.blockBytes,
      address,
      generation: b.generation + i,
      epoch: b.epoch,
      block: b.zero !== null && b.zero[i] !== 0 ? null : b.blocks.subarray(i * b.blockBytes, (i + 1) * b.blockBytes),
      sessionKey: (strip) => (position.has(strip) ? keyAt(b.keys, strip, address, b.slotBytes, null) : null),
    });
    assert(shares.length === b.targets.length, 'a target strip has no active session key');
    for (const share of shares) {
      const p = position.get(share.stripIndex)!;
      const o = out[p]!;
      encodeSlot(share, Buffer.from(o.buffer, o.byteOffset + i * b.slotBytes, b.slotBytes));
    }
  }
}

export function openBatch(b: OpenBatch): OpenBatchResult {
  const blocks = Buffer.alloc(b.count * b.blockBytes);
  const status = openNative({ ...b, verifyAll: b.verifyAll === true }, blocks);
  return openBatchJs(b, blocks, status);
}

/**
 * The JavaScript engine, for every block whose status is not 0 (all of them without a status):
 * blocks the native fast path opened are already in `blocks`.
 */
export function openBatchJs(b: OpenBatch, blocks: Buffer = Buffer.alloc(b.count * b.blockBytes), status: Uint8Array | null = null): OpenBatchResult {
  const outcomes: BlockOutcome[] = [];
  const slots = b.slots.map(([strip, data]) => [strip, Buffer.from(data.buffer, data.byteOffset, data.byteLength)] as const);
  for (let i = 0; i < b.count; i++) {
    if (status !== null && status[i] === 0) continue;
    const address = b.addresses?.[i] ?? b.first + i;
    const shares = slots.map(([strip, data]) => decodeSlot(strip, data.subarray(i * b.slotBytes, (i + 1) * b.slotBytes)));
    try {
      const r = openBlock({
        volumeId: b.volumeId,
        m: b.m,
        n: b.n,
        blockBytes: b.blockBytes,
        address,
        shares,
        sessionKey: (strip, keySlot) => keyAt(b.keys, strip, address, b.slotBytes, keySlot)?.key,
        complete: b.complete,
        ...(b.stale ? { stale: b.stale } : {}),
        ...(b.verifyAll ? { verifyAll: true } : {}),
      });
      r.block.copy(blocks, i * b.blockBytes);
      if (r.rejected.length > 0) outcomes.push({ i, rejected: r.rejected, generation: r.generation });
    } catch (e) {
      if (!(e instanceof NotEnoughSharesError)) throw e;
      outcomes.push({ i, rejected: e.rejected, failed: { needMore: e.needMore, message: e.message } });
    }
  }
  return { blocks, outcomes };
}
