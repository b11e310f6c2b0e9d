/**
 * Hands out generations for share nonces, never the same one twice for a volume — across
 * overwrites, crashes, restarts and several openers. Generations come in ranges: before any
 * generation of a range is used, the range is reserved durably — by the metadata store when there
 * is one (an atomic allocation, so two appliances opening the same volume get disjoint ranges) and
 * in every written strip's header (so each header bounds every generation ever used on its strip,
 * even if the store is lost or restored from an old backup).
 */
import { ErrorCode, assert, fail } from '../errors.ts';
import { generationMax } from '../split/share-binding.ts';

/** Generations reserved per range: one reservation (header writes, a store update) per this many block writes. */
export const generationBatch = 1 << 20;

export interface GenerationRange {
  /** First usable generation. */
  readonly start: number;
  /** Exclusive end. */
  readonly end: number;
}

/** Reserves a range of at least `count` generations, none below `min`, and makes it durable. */
export type ReserveGenerations = (min: number, count: number) => Promise<GenerationRange>;

export class GenerationLedger {
  /** Next generation to hand out. */
  private next: number;
  /** Exclusive end of the current durable range. */
  private end: number;
  private pending: Promise<void> | null = null;
  private readonly reserve: ReserveGenerations;

  /** `floor`: the largest reservation any strip (or the store) recorded; all used generations are below it. */
  constructor(floor: number, reserve: ReserveGenerations) {
    assert(Number.isSafeInteger(floor) && floor >= 0, 'generation floor');
    this.next = Math.max(1, floor);
    this.end = this.next;
    this.reserve = reserve;
  }

  /** Returns the first of `count` consecutive, never-used generations. */
  async take(count: number): Promise<number> {
    assert(Number.isInteger(count) && count >= 1 && count <= generationBatch, 'generation count');
    while (this.next + count > this.end) {
      if (this.pending === null) {
        const min = Math.max(this.next, this.end);
        if (min + count + generationBatch > generationMax) fail(ErrorCode.OutOfRange, 'volume has exhausted its generations');
        this.pending = this.reserve(min, count + generationBatch).then(
          (range) => {
            assert(range.start >= min && range.end - range.start >= count, 'reserved generation range');
            this.next = range.start;
            this.end = range.end;
            this.pending = null;
          },
          (e: unknown) => {
            this.pending = null;
            throw e;
          },
        );
      }
      await this.pending;
    }
    const first = this.next;
    this.next += count;
    return first;
  }
}
