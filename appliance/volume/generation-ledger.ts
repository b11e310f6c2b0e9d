/**
 * Hands out generations for share nonces, never the same one twice for a volume — across
 * overwrites, crashes and restarts. Generations are drawn from a volume-wide counter; before any
 * generation of a batch is used, the batch's upper end is made durable in every reachable strip's
 * header (and, if the caller wants, in the metadata store). Each strip's header therefore bounds
 * every generation ever used on it, and opening a volume starts above the largest bound seen.
 */
import { ErrorCode, assert, fail } from '../errors.ts';
import { generationMax } from '../split/share-binding.ts';

/** Generations reserved per durable header write: one header write per this many block writes. */
export const generationBatch = 1 << 20;

export type PersistReservation = (reservedUpTo: number) => Promise<void>;

export class GenerationLedger {
  /** Next generation to hand out. */
  private next: number;
  /** Exclusive upper bound of what is durably reserved. */
  private reserved: number;
  private pending: Promise<void> | null = null;
  private readonly persist: PersistReservation;

  /** `floor`: the largest reservation any strip (or the store) recorded; all used generations are below it. */
  constructor(floor: number, persist: PersistReservation) {
    assert(Number.isSafeInteger(floor) && floor >= 0, 'generation floor');
    this.next = Math.max(1, floor);
    this.reserved = this.next;
    this.persist = persist;
  }

  /** Raises the floor, e.g. when a strip that was absent at open comes back with a higher reservation. */
  raiseFloor(floor: number): void {
    if (floor > this.next) {
      this.next = floor;
      this.reserved = Math.max(this.reserved, floor);
    }
  }

  get reservedUpTo(): number {
    return this.reserved;
  }

  /** Returns the first of `count` consecutive, never-used generations. */
  async take(count: number): Promise<number> {
    assert(Number.isInteger(count) && count >= 1 && count <= generationBatch, 'generation count');
    while (this.next + count > this.reserved) {
      if (this.pending === null) {
        const target = this.next + count + generationBatch;
        if (target > generationMax) fail(ErrorCode.OutOfRange, 'volume has exhausted its generations');
        this.pending = this.persist(target).then(
          () => {
            this.reserved = Math.max(this.reserved, target);
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
