/**
 * Batches that do their own strip I/O: a split-pool worker reads the slots of M strips and opens
 * them, or writes sealed slots, with synchronous positional I/O on the strips' descriptors
 * (device/fd-io.ts). The main thread then pays one message per batch instead of a thread-pool
 * round trip per strip, and the I/O runs beside the crypto on the worker's core. The crypto stays
 * in batch.ts; this module is the worker's only I/O edge, and nothing here decides a strip's
 * health: an I/O error is reported and the volume repeats that work through the device itself.
 */
import { FdIoError, preadFully, pwriteFully } from '../device/fd-io.ts';
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
  const blocks = Buffer.allocUnsafeSlow(total * b.blockBytes);
  const outcomes: BlockOutcome[][] = [];
  let at = 0;
  const scratch = b.strips.map(() => Buffer.allocUnsafe(Math.max(...b.runs.map((r) => r.count)) * b.slotBytes));
  for (const r of b.runs) {
    const span = r.count * b.slotBytes;
    const slots: Array<readonly [number, Uint8Array]> = [];
    for (let s = 0; s < b.strips.length; s++) {
      const strip = b.strips[s]!;
      const buf = scratch[s]!.subarray(0, span);
      try {
        preadFully(strip.fd, buf, strip.dataOffset + r.first * b.slotBytes);
      } catch (e) {
        if (!(e instanceof FdIoError)) throw e;
        return { ok: false, strip: strip.index, errno: e.errno, message: e.message };
      }
      slots.push([strip.index, buf]);
    }
    const opened = openBatch({ ...b, first: r.first, count: r.count, slots, complete: false, stale: b.stale });
    blocks.set(opened.blocks, at);
    at += r.count * b.blockBytes;
    outcomes.push([...opened.outcomes]);
  }
  return { ok: true, blocks, outcomes };
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
