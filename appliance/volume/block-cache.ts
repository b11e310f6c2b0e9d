/**
 * The write-through cache: recently written (and read) primary blocks, in plaintext, in memory
 * only, bounded in bytes. One cache per open volume, so every NBD connection sees the same
 * blocks. Callers hold the block's range lock while they get or put, which keeps the cache and
 * the strips in step; a write that fails part way drops its blocks (the strips' state is then
 * unknown until read again).
 *
 * The LRU order is an intrusive doubly linked list over entry indexes, not a Map's insertion
 * order: evicting through a Map iterator walks the holes that deletions leave at its front, which
 * made a sequential write spend more time evicting than sealing.
 */
import { assert } from '../errors.ts';
import { copyBytes } from '../split/native-seal.ts';
import { BlockIndex } from './block-index.ts';

/** Default bytes of plaintext kept per volume. */
export const blockCacheBytesDefault = 32 * 1024 * 1024;
export const blockCacheBytesMax = 4 * 1024 * 1024 * 1024;

export interface BlockCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly blocks: number;
  readonly bytes: number;
}

const none = -1;

export class BlockCache {
  readonly blockBytes: number;
  readonly blocksMax: number;
  /** address → entry index (not a Map: see block-index.ts) */
  readonly #index = new BlockIndex();
  /** Per entry: its block (allocated on first use), its address, and its neighbours in LRU order. */
  readonly #data: Buffer[] = [];
  #address: Float64Array;
  #prev: Int32Array;
  #next: Int32Array;
  /** Least recently used entry (evicted first) and most recently used. */
  #head = none;
  #tail = none;
  #hits = 0;
  #misses = 0;

  constructor(bytesMax: number, blockBytes: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0 && bytesMax <= blockCacheBytesMax, 'cache size');
    this.blockBytes = blockBytes;
    this.blocksMax = Math.floor(bytesMax / blockBytes);
    this.#address = new Float64Array(0);
    this.#prev = new Int32Array(0);
    this.#next = new Int32Array(0);
  }

  /** The `count` blocks from `first` as one buffer if every one is cached, else null. */
  getRun(first: number, count: number): Buffer | null {
    if (this.blocksMax === 0 || count > this.blocksMax) return null;
    for (let i = 0; i < count; i++) {
      if (!this.#index.has(first + i)) {
        this.#misses++;
        return null;
      }
    }
    const out = Buffer.allocUnsafe(count * this.blockBytes);
    for (let i = 0; i < count; i++) {
      const e = this.#index.get(first + i);
      this.#touch(e);
      this.#data[e]!.copy(out, i * this.blockBytes);
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
    // Copies with offsets: a view per block cost more than copying the block.
    for (let i = skip; i < count; i++) {
      const address = first + i;
      let e = this.#index.get(address);
      if (e === -1) {
        e = this.#take();
        this.#address[e] = address;
        this.#index.set(address, e);
        this.#append(e);
      } else this.#touch(e);
      copyBytes(this.#data[e]!, 0, data, i * this.blockBytes, this.blockBytes);
    }
  }

  invalidate(first: number, count: number): void {
    for (let i = 0; i < count; i++) {
      const e = this.#index.get(first + i);
      if (e === -1) continue;
      this.#data[e]!.fill(0);
      this.#index.delete(first + i);
      this.#unlink(e);
      this.#free.push(e);
    }
  }

  /** Drops and zeroes every block: plaintext does not outlive the volume's keys. */
  clear(): void {
    for (const b of this.#data) b.fill(0);
    this.#index.clear();
    this.#free.length = 0;
    for (let e = 0; e < this.#data.length; e++) this.#free.push(e);
    this.#head = this.#tail = none;
  }

  stats(): BlockCacheStats {
    return { hits: this.#hits, misses: this.#misses, blocks: this.#index.size, bytes: this.#index.size * this.blockBytes };
  }

  /** Entries not in the list (invalidated or cleared), reused before new ones are made. */
  readonly #free: number[] = [];

  /** An entry for a new block: a free one, a new one while below the bound, else the LRU one. */
  #take(): number {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    if (this.#data.length < this.blocksMax) {
      const e = this.#data.length;
      if (e >= this.#prev.length) this.#grow();
      this.#data.push(Buffer.allocUnsafeSlow(this.blockBytes));
      return e;
    }
    const e = this.#head;
    assert(e !== none, 'cache full with an empty list');
    this.#index.delete(this.#address[e]!);
    this.#unlink(e);
    return e;
  }

  #grow(): void {
    const size = Math.min(this.blocksMax, Math.max(64, this.#prev.length * 2));
    const address = new Float64Array(size);
    const prev = new Int32Array(size);
    const next = new Int32Array(size);
    address.set(this.#address);
    prev.set(this.#prev);
    next.set(this.#next);
    this.#address = address;
    this.#prev = prev;
    this.#next = next;
  }

  #touch(e: number): void {
    if (this.#tail === e) return;
    this.#unlink(e);
    this.#append(e);
  }

  #append(e: number): void {
    this.#prev[e] = this.#tail;
    this.#next[e] = none;
    if (this.#tail !== none) this.#next[this.#tail] = e;
    else this.#head = e;
    this.#tail = e;
  }

  #unlink(e: number): void {
    const p = this.#prev[e]!;
    const n = this.#next[e]!;
    if (p !== none) this.#next[p] = n;
    else this.#head = n;
    if (n !== none) this.#prev[n] = p;
    else this.#tail = p;
  }
}
