/**
 * Serialises operations on overlapping block ranges: readers share, writers exclude. Grants are
 * FIFO among overlapping requests, so a stream of readers cannot starve a writer. The number of
 * waiters is bounded by the callers' own in-flight limits (NBD requests per connection).
 *
 * Requests are indexed by bucket of rangeLockBucketBlocks blocks, so a request is checked only
 * against those near it: a volume holds each written range until its shares are on the strips, a
 * few hundred ranges at 4 KiB random writes, and a scan of all of them on every acquire and
 * release was about 3.5 µs of each write's main-thread time (profile, qd32).
 */
import { assert } from '../errors.ts';

export type LockMode = 'shared' | 'exclusive';

/** Blocks per bucket of the index. */
export const rangeLockBucketBlocks = 256;
/**
 * A request spanning more buckets than this (a whole-volume lock, a large zeroing) is kept on a
 * short list that every request checks, instead of in each of its buckets.
 */
export const rangeLockWideBuckets = 8;

interface Request {
  readonly first: number;
  readonly last: number;
  readonly mode: LockMode;
  /** Arrival order: a request waits only for earlier ones. */
  readonly seq: number;
  grant: (() => void) | undefined;
}

function conflicts(a: Request, b: Request): boolean {
  return a.first <= b.last && b.first <= a.last && (a.mode === 'exclusive' || b.mode === 'exclusive');
}

const bucketOf = (block: number): number => Math.floor(block / rangeLockBucketBlocks);
const isWide = (r: Request): boolean => bucketOf(r.last) - bucketOf(r.first) >= rangeLockWideBuckets;

export class RangeLock {
  #seq = 0;
  #size = 0;
  /** Requests (granted or waiting) that are not wide, by each bucket they touch, in arrival order. */
  readonly #buckets = new Map<number, Request[]>();
  /** Wide requests, granted or waiting, in arrival order. */
  readonly #wide: Request[] = [];
  /** Requests not granted yet, in arrival order. */
  readonly #waiting: Request[] = [];

  /**
   * `onWait` is told when a request has to wait for an earlier one (e.g. to hurry that one along);
   * the function it returns, if any, is called once the request is granted.
   */
  constructor(private readonly onWait: () => (() => void) | undefined = () => undefined) {}

  /** Locks blocks [first, last]; resolves to the release function. */
  async acquire(first: number, last: number, mode: LockMode): Promise<() => void> {
    // An empty or reversed range would be indexed under no bucket and exclude nothing.
    assert(Number.isSafeInteger(first) && Number.isSafeInteger(last) && 0 <= first && first <= last, 'RangeLock: a range of at least one block');
    const req: Request = { first, last, mode, seq: this.#seq++, grant: undefined };
    this.#add(req);
    if (this.#blocked(req)) {
      this.#waiting.push(req);
      const granted = this.onWait();
      await new Promise<void>((resolve) => (req.grant = resolve));
      granted?.();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#remove(req);
      if (this.#waiting.length > 0) this.#wake();
    };
  }

  /** Requests held or waiting. */
  get size(): number {
    return this.#size;
  }

  /** Requests waiting for an earlier one (diagnostics and tests). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Buckets of the index with a request in them (diagnostics and tests: zero when nothing is held). */
  get indexedBuckets(): number {
    return this.#buckets.size;
  }

  #add(req: Request): void {
    this.#size++;
    if (isWide(req)) {
      this.#wide.push(req);
      return;
    }
    for (let b = bucketOf(req.first); b <= bucketOf(req.last); b++) {
      const list = this.#buckets.get(b);
      if (list === undefined) this.#buckets.set(b, [req]);
      else list.push(req);
    }
  }

  #remove(req: Request): void {
    this.#size--;
    if (isWide(req)) {
      removeFrom(this.#wide, req);
      return;
    }
    for (let b = bucketOf(req.first); b <= bucketOf(req.last); b++) {
      const list = this.#buckets.get(b)!;
      if (list.length === 1) this.#buckets.delete(b);
      else removeFrom(list, req);
    }
  }

  /** A request waits while any earlier request (granted or not) conflicts with it. */
  #blocked(req: Request): boolean {
    for (const other of this.#wide) {
      if (other.seq >= req.seq) break;
      if (conflicts(other, req)) return true;
    }
    if (isWide(req)) {
      // Rare (whole-volume operations): every narrow request is a candidate.
      for (const list of this.#buckets.values()) if (earlierConflict(list, req)) return true;
      return false;
    }
    for (let b = bucketOf(req.first); b <= bucketOf(req.last); b++) {
      const list = this.#buckets.get(b);
      if (list !== undefined && earlierConflict(list, req)) return true;
    }
    return false;
  }

  #wake(): void {
    for (let k = 0; k < this.#waiting.length; ) {
      const req = this.#waiting[k]!;
      if (this.#blocked(req)) {
        k++;
        continue;
      }
      this.#waiting.splice(k, 1);
      req.grant!();
    }
  }
}

/** Whether a request earlier than `req` in `list` (arrival order) conflicts with it. */
function earlierConflict(list: readonly Request[], req: Request): boolean {
  for (const other of list) {
    if (other.seq >= req.seq) return false;
    if (conflicts(other, req)) return true;
  }
  return false;
}

function removeFrom(list: Request[], req: Request): void {
  const k = list.lastIndexOf(req);
  if (k >= 0) list.splice(k, 1);
}
