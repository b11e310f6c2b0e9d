/**
 * Batches that do their own strip I/O: a split-pool worker reads the slots of M strips and opens
 * them, or writes sealed slots, with synchronous positional I/O on the strips' descriptors
 * (device/fd-io.ts). The main thread then pays one message per batch instead of a thread-pool
 * round trip per strip, and the I/O runs beside the crypto on the worker's core. The crypto stays
 * in batch.ts; this module is the worker's only I/O edge, and nothing here decides a strip's
 * health: an I/O error is reported and the volume repeats that work through the device itself.
 */
import { FdIoError, preadFully, pwriteFully } from '../device/fd-io.ts';
import { assert } from '../errors.ts';
import { openBatch, type BatchShape, type BlockOutcome } from './batch.ts';

export interface ReadRun {
  readonly first: number;
  readonly count: number;
}

export interface IoStrip {
  readonly index: number;
  readonly fd: number;
  /** Byte offset of slot 0 on the descriptor. */
  readonly dataOffset: number;
}

export interface ReadOpenBatch extends BatchShape {
  /** The M strips to read, healthy ones (a partial read never rolls back: complete is false). */
  readonly strips: readonly IoStrip[];
  readonly runs: readonly ReadRun[];
  readonly stale: readonly number[];
}

export type ReadOpenResult =
  | {
      readonly ok: true;
      /** Every run's blocks back to back, in run order. */
      readonly blocks: Uint8Array;
      /** Per run: the blocks with something to say (rejections or failure), as openBatch. */
      readonly outcomes: readonly (readonly BlockOutcome[])[];
    }
  | { readonly ok: false; readonly strip: number; readonly errno: string; readonly message: string };

export function readOpenRuns(b: ReadOpenBatch): ReadOpenResult {
  const total = b.runs.reduce((a, r) => a + r.count, 0);
  // Every run's slots back to back per strip, then one open over all of them: a call per run cost
  // more than opening its block (random 4 KiB reads come several runs of one block per message).
  const scratch = b.strips.map(() => Buffer.allocUnsafe(total * b.slotBytes));
  const addresses = new Float64Array(total);
  let at = 0;
  for (const r of b.runs) {
    for (let s = 0; s < b.strips.length; s++) {
      const strip = b.strips[s]!;
      try {
        preadFully(strip.fd, scratch[s]!.subarray(at * b.slotBytes, (at + r.count) * b.slotBytes), strip.dataOffset + r.first * b.slotBytes);
      } catch (e) {
        if (!(e instanceof FdIoError)) throw e;
        return { ok: false, strip: strip.index, errno: e.errno, message: e.message };
      }
    }
    for (let j = 0; j < r.count; j++) addresses[at + j] = r.first + j;
    at += r.count;
  }
  const slots = b.strips.map((strip, s) => [strip.index, scratch[s]!] as const);
  const first = b.runs[0]?.first ?? 0;
  const opened = openBatch({ ...b, first, count: total, addresses, slots, complete: false, stale: b.stale });
  // Outcomes back per run, with block indices relative to their run.
  const outcomes: BlockOutcome[][] = b.runs.map(() => []);
  let run = 0;
  let runStart = 0;
  for (const o of opened.outcomes) {
    while (o.i >= runStart + b.runs[run]!.count) runStart += b.runs[run++]!.count;
    outcomes[run]!.push({ ...o, i: o.i - runStart });
  }
  return { ok: true, blocks: opened.blocks, outcomes };
}

export interface SlotWrite {
  readonly fd: number;
  readonly offset: number;
  readonly data: Uint8Array;
  /** Which flag of SlotWriteBatch.cancel stops this write. */
  readonly group: number;
}

/** Why a write was not done: its caller gave up on the batch (see SlotWriteBatch.cancel). */
export const writeCancelled = 'cancelled';

export interface SlotWriteBatch {
  readonly writes: readonly SlotWrite[];
  /**
   * One flag per group of writes (over a SharedArrayBuffer), set non-zero by the caller when it stops
   * waiting and redoes that group itself: its writes not yet started are skipped, so none of them
   * can land after a later write of the same slots.
   */
  readonly cancel: Int32Array;
}

/**
 * A SlotWriteBatch as it crosses to a worker: each distinct buffer once, and one row of numbers per
 * write, instead of an object and a typed-array view per write. Structured-cloning three views per
 * 4 KiB random write (and making them again on the worker) cost more than the pwrites' own user time.
 */
export interface PackedSlotWrites {
  /** The buffers the writes' data lie in: shared memory as is, anything else copied to exactly its bytes. */
  readonly buffers: readonly ArrayBufferLike[];
  /** slotWriteRowWidth numbers per write: fd, offset, buffer index, byte offset, byte length, group. */
  readonly rows: Float64Array;
  readonly cancel: Int32Array;
}

export const slotWriteRowWidth = 6;

export function packSlotWrites(b: SlotWriteBatch): PackedSlotWrites {
  const buffers: ArrayBufferLike[] = [];
  const index = new Map<ArrayBufferLike, number>();
  const rows = new Float64Array(b.writes.length * slotWriteRowWidth);
  let at = 0;
  for (const w of b.writes) {
    let buffer: ArrayBufferLike = w.data.buffer;
    let byteOffset = w.data.byteOffset;
    if (!(buffer instanceof SharedArrayBuffer)) {
      // Not shared: cloning would copy the whole backing buffer, so only the view's bytes go.
      buffer = new Uint8Array(w.data).buffer; // a copy: Buffer#slice would be a view of the same memory
      byteOffset = 0;
    }
    let k = index.get(buffer);
    if (k === undefined) {
      k = buffers.push(buffer) - 1;
      index.set(buffer, k);
    }
    rows[at++] = w.fd;
    rows[at++] = w.offset;
    rows[at++] = k;
    rows[at++] = byteOffset;
    rows[at++] = w.data.byteLength;
    rows[at++] = w.group;
  }
  return { buffers, rows, cancel: b.cancel };
}

/** The worker's side of packSlotWrites; rows that do not fit their buffer are refused. */
export function unpackSlotWrites(p: PackedSlotWrites): SlotWriteBatch {
  const rows = p.rows;
  assert(rows.length % slotWriteRowWidth === 0, 'packed slot write rows');
  const writes: SlotWrite[] = [];
  for (let at = 0; at < rows.length; at += slotWriteRowWidth) {
    for (let f = at; f < at + slotWriteRowWidth; f++) assert(Number.isSafeInteger(rows[f]) && rows[f]! >= 0, 'packed slot write fields are whole numbers');
    const buffer = p.buffers[rows[at + 2]!];
    assert(buffer !== undefined, 'packed slot write buffer index');
    writes.push({ fd: rows[at]!, offset: rows[at + 1]!, data: new Uint8Array(buffer, rows[at + 3]!, rows[at + 4]!), group: rows[at + 5]! });
  }
  return { writes, cancel: p.cancel };
}

/** Writes each in order; per write, null or why it failed (later writes are still tried). */
export function writeSlotList(batch: SlotWriteBatch): (string | null)[] {
  return batch.writes.map((w) => {
    if (Atomics.load(batch.cancel, w.group) !== 0) return writeCancelled;
    try {
      pwriteFully(w.fd, w.data, w.offset);
      return null;
    } catch (e) {
      if (!(e instanceof FdIoError)) throw e;
      return `${e.errno}: ${e.message}`;
    }
  });
}
