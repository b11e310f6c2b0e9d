/**
 * Reusable shared memory for the write path: blocks on their way to a seal worker, and the sealed
 * shares on their way back to the journal and the strip writers. A fresh SharedArrayBuffer per
 * batch costs a page fault per 4 KiB on the thread that first touches it, and garbage-collector
 * work: a sequential write spent more time making them than copying into them (the seal workers
 * alone: 0.6 s of kernel time each per GiB). Buffers come in power-of-two size classes and only so
 * many bytes are kept. Like Buffer.allocUnsafe, a buffer taken is not cleared: callers fill every
 * byte. What is kept is wiped when a volume closes, so plaintext does not outlive its volume.
 *
 * A buffer is given back only once nothing can touch it any more: blocks when their seal job has
 * settled (a worker abandoned mid-job may still read them — harmless); shares when the journal's
 * writev and every strip write have finished, and never after a job or a write failed or was given
 * up on (a worker or a device may still be writing or reading them; those are left to the GC).
 */
import { assert } from '../errors.ts';

/**
 * Free bytes kept for reuse; beyond this, given-back buffers are left to the garbage collector. A
 * sequential write keeps tens of MiB of blocks and shares in flight (measured: 32 MiB still left a
 * third of the seal outputs freshly allocated).
 */
export const sharedBuffersKeptBytesMax = 128 * 1024 * 1024;
/** Smallest size class: small writes share a handful of buffers instead of one per size. */
const sizeClassBytesMin = 64 * 1024;
/** Larger requests are not pooled (a one-off allocation is cheaper than keeping it). */
const sizeClassBytesMax = 16 * 1024 * 1024;

function sizeClass(bytes: number): number {
  let size = sizeClassBytesMin;
  while (size < bytes) size *= 2;
  return size;
}

export class SharedBuffers {
  readonly #free = new Map<number, SharedArrayBuffer[]>();
  /**
   * Memory handed out and not given back yet (only that may be given back, and only once), with
   * the number of wipes done when it was taken.
   */
  readonly #out = new WeakMap<SharedArrayBuffer, number>();
  #freeBytes = 0;
  #wipes = 0;

  /** A buffer of `bytes` in shared memory, not cleared. */
  take(bytes: number): Buffer {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, 'shared buffer size');
    let sab: SharedArrayBuffer;
    if (bytes > sizeClassBytesMax) sab = new SharedArrayBuffer(bytes);
    else {
      const size = sizeClass(bytes);
      const reused = this.#free.get(size)?.pop();
      if (reused !== undefined) this.#freeBytes -= size;
      sab = reused ?? new SharedArrayBuffer(size);
    }
    this.#out.set(sab, this.#wipes);
    return Buffer.from(sab, 0, bytes);
  }

  /**
   * Keeps the memory of `buf` (from take) for the next take. Giving back anything else, or the same
   * buffer twice, would hand one memory to two owners: that is a broken invariant, not bad input.
   */
  give(buf: Buffer): void {
    const sab = buf.buffer instanceof SharedArrayBuffer && buf.byteOffset === 0 ? buf.buffer : null;
    const takenAt = sab === null ? undefined : this.#out.get(sab);
    assert(sab !== null && takenAt !== undefined, 'given back a buffer that was not taken (or given back twice)');
    this.#out.delete(sab);
    // Out during a wipe: it may hold the plaintext of the volume whose close asked for the wipe.
    if (takenAt !== this.#wipes) new Uint8Array(sab).fill(0);
    const size = sab.byteLength;
    if (size > sizeClassBytesMax || size !== sizeClass(size)) return;
    // Full: what was given back most recently is what the current workload takes next. A sequential
    // write leaves the pool full of large classes; without making room, every small buffer of the
    // random writes that follow would be a fresh allocation (measured: a tenth of the main thread).
    if (!this.#makeRoom(size)) return;
    let list = this.#free.get(size);
    if (list === undefined) this.#free.set(size, (list = []));
    list.push(sab);
    this.#freeBytes += size;
  }

  /**
   * Drops kept buffers of other size classes, largest first, until `size` more bytes fit under the
   * limit. False if they cannot (the limit is reached by this class alone).
   */
  #makeRoom(size: number): boolean {
    if (this.#freeBytes + size <= sharedBuffersKeptBytesMax) return true;
    const others = [...this.#free.keys()].filter((k) => k !== size).sort((a, b) => b - a);
    for (const k of others) {
      const list = this.#free.get(k)!;
      while (list.length > 0 && this.#freeBytes + size > sharedBuffersKeptBytesMax) {
        // Cleared as it goes: the close-time wipe can no longer reach it.
        new Uint8Array(list.pop()!).fill(0);
        this.#freeBytes -= k;
      }
      if (list.length === 0) this.#free.delete(k);
      if (this.#freeBytes + size <= sharedBuffersKeptBytesMax) return true;
    }
    return false;
  }

  /** Zeroes the memory kept for reuse (a closed volume's or sealed appliance's plaintext); buffers in use are untouched. */
  wipe(): void {
    this.#wipes++;
    for (const list of this.#free.values()) for (const sab of list) new Uint8Array(sab).fill(0);
  }

  /** Bytes kept for reuse (for tests and metrics). */
  get keptBytes(): number {
    return this.#freeBytes;
  }
}

/** One per process: every volume's writes draw from it. */
export const sharedBuffers = new SharedBuffers();
