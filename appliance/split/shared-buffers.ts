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
 * Shares sealed on the calling thread that failed to seal go back at once: nothing else had them.
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
  /** Every kept buffer, oldest given back first: the order in which a full pool drops them. */
  readonly #kept = new Set<SharedArrayBuffer>();
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
      if (reused !== undefined) {
        this.#freeBytes -= size;
        this.#kept.delete(reused);
      }
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
    // Full: what was given back most recently is what the current workload takes next, so the
    // buffers kept longest go first. A sequential write leaves the pool full of large classes;
    // without making room, every small buffer of the random writes that follow would be a fresh
    // allocation (measured: a tenth of the main thread). Oldest first rather than by class, so a
    // workload that cycles through a few classes does not evict (and clear) its own buffers.
    if (!this.#makeRoom(size)) return;
    let list = this.#free.get(size);
    if (list === undefined) this.#free.set(size, (list = []));
    list.push(sab);
    this.#kept.add(sab);
    this.#freeBytes += size;
  }

  /**
   * Drops the buffers kept longest until `size` more bytes fit under the limit. False if even an
   * empty pool could not keep it.
   */
  #makeRoom(size: number): boolean {
    if (size > sharedBuffersKeptBytesMax) return false;
    for (const oldest of this.#kept) {
      if (this.#freeBytes + size <= sharedBuffersKeptBytesMax) break;
      const bytes = oldest.byteLength;
      const list = this.#free.get(bytes)!;
      // Within a class the oldest is at the bottom of its stack (takes pop from the top).
      assert(list[0] === oldest, 'shared buffer pool order');
      list.shift();
      if (list.length === 0) this.#free.delete(bytes);
      this.#kept.delete(oldest);
      this.#freeBytes -= bytes;
      // Cleared as it goes: the close-time wipe can no longer reach it.
      new Uint8Array(oldest).fill(0);
    }
    return true;
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
