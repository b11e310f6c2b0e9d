/**
 * Reusable shared memory for blocks on their way to a seal worker. A fresh SharedArrayBuffer per
 * batch costs page faults on every byte and garbage-collector work: a sequential write spent more
 * time making them than copying into them. Buffers come in power-of-two size classes and only so
 * many bytes are kept. Like Buffer.allocUnsafe, a buffer taken is not cleared: callers fill every
 * byte. What is kept is wiped when a volume closes, so plaintext does not outlive its volume.
 *
 * Only for memory a worker reads during one job and never writes: a buffer is given back when the
 * job has settled, and a worker abandoned mid-job may still read it later — which is harmless.
 */
import { assert } from '../errors.ts';

/** Free bytes kept for reuse; beyond this, given-back buffers are left to the garbage collector. */
export const sharedBuffersKeptBytesMax = 32 * 1024 * 1024;
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
  /** Memory handed out and not given back yet: only that may be given back, and only once. */
  readonly #out = new WeakSet<SharedArrayBuffer>();
  #freeBytes = 0;

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
    this.#out.add(sab);
    return Buffer.from(sab, 0, bytes);
  }

  /**
   * Keeps the memory of `buf` (from take) for the next take. Giving back anything else, or the same
   * buffer twice, would hand one memory to two owners: that is a broken invariant, not bad input.
   */
  give(buf: Buffer): void {
    const sab = buf.buffer;
    assert(sab instanceof SharedArrayBuffer && buf.byteOffset === 0 && this.#out.has(sab), 'given back a buffer that was not taken (or given back twice)');
    this.#out.delete(sab);
    const size = sab.byteLength;
    if (size > sizeClassBytesMax || size !== sizeClass(size) || this.#freeBytes + size > sharedBuffersKeptBytesMax) return;
    let list = this.#free.get(size);
    if (list === undefined) this.#free.set(size, (list = []));
    list.push(sab);
    this.#freeBytes += size;
  }

  /** Zeroes the memory kept for reuse (a closed volume's or sealed appliance's plaintext); buffers in use are untouched. */
  wipe(): void {
    for (const list of this.#free.values()) for (const sab of list) new Uint8Array(sab).fill(0);
  }

  /** Bytes kept for reuse (for tests and metrics). */
  get keptBytes(): number {
    return this.#freeBytes;
  }
}

/** One per process: every volume's writes draw from it. */
export const sharedBuffers = new SharedBuffers();
