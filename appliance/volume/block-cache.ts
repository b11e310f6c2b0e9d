/**
 * The write-through cache: recently written (and read) primary blocks, in plaintext, in memory
 * only, bounded in bytes. One cache per open volume, so every NBD connection sees the same
 * blocks. Callers hold the block's range lock while they get or put, which keeps the cache and
 * the strips in step; a write that fails part way drops its blocks (the strips' state is then
 * unknown until read again).
 */
import { assert } from '../errors.ts';

/** Default bytes of plaintext kept per volume. */
export const blockCacheBytesDefault = 32 * 1024 * 1024;
export const blockCacheBytesMax = 4 * 1024 * 1024 * 1024;

export interface BlockCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly blocks: number;
  readonly bytes: number;
}

export class BlockCache {
  readonly blockBytes: number;
  readonly blocksMax: number;
  // Map order is the LRU order: a hit or a put moves the block to the end.
  readonly #blocks = new Map<number, Buffer>();
  #hits = 0;
  #misses = 0;

  constructor(bytesMax: number, blockBytes: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0 && bytesMax <= blockCacheBytesMax, 'cache size');
    this.blockBytes = blockBytes;
    this.blocksMax = Math.floor(bytesMax / blockBytes);
  }

  /** The `count` blocks from `first` as one buffer if every one is cached, else null. */
  getRun(first: number, count: number): Buffer | null {
    if (this.blocksMax === 0 || count > this.blocksMax) return null;
    for (let i = 0; i < count; i++) {
      if (!this.#blocks.has(first + i)) {
        this.#misses++;
        return null;
      }
    }
    const out = Buffer.allocUnsafe(count * this.blockBytes);
    for (let i = 0; i < count; i++) {
      const b = this.#blocks.get(first + i)!;
      this.#blocks.delete(first + i);
      this.#blocks.set(first + i, b);
      b.copy(out, i * this.blockBytes);
    }
    this.#hits++;
    return out;
  }

  /** Caches a copy of `count` consecutive blocks (the caller's buffer may be reused afterwards). */
  putRun(first: number, data: Uint8Array): void {
    if (this.blocksMax === 0) return;
    const count = data.length / this.blockBytes;
    assert(Number.isInteger(count), 'cache put of partial blocks');
    // Only the tail of a run larger than the cache could survive anyway.
    const skip = Math.max(0, count - this.blocksMax);
    for (let i = skip; i < count; i++) {
      const address = first + i;
      let b = this.#blocks.get(address);
      if (b) this.#blocks.delete(address);
      else b = this.#evictFor();
      b.set(data.subarray(i * this.blockBytes, (i + 1) * this.blockBytes));
      this.#blocks.set(address, b);
    }
  }

  invalidate(first: number, count: number): void {
    for (let i = 0; i < count; i++) {
      const b = this.#blocks.get(first + i);
      if (!b) continue;
      b.fill(0);
      this.#blocks.delete(first + i);
    }
  }

  /** Drops and zeroes every block: plaintext does not outlive the volume's keys. */
  clear(): void {
    for (const b of this.#blocks.values()) b.fill(0);
    this.#blocks.clear();
  }

  stats(): BlockCacheStats {
    return { hits: this.#hits, misses: this.#misses, blocks: this.#blocks.size, bytes: this.#blocks.size * this.blockBytes };
  }

  #evictFor(): Buffer {
    if (this.#blocks.size < this.blocksMax) return Buffer.allocUnsafeSlow(this.blockBytes);
    const [oldest, b] = this.#blocks.entries().next().value as [number, Buffer];
    this.#blocks.delete(oldest);
    return b;
  }
}
