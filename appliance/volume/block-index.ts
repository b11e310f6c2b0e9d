/**
 * The block cache's index: block address → cache entry, an open-addressing hash table over typed
 * arrays (linear probing, deletion by backward shift, so no tombstones).
 *
 * Why not a Map: the cache replaces one entry per block written, and a Map that keeps deleting and
 * adding keys rebuilds its table again and again. Those rebuilds and the Map's own entries were a
 * fifth of everything the JavaScript heap allocated during a sequential write, and every byte
 * allocated brings the next garbage collection closer. This table allocates only when it grows.
 */
import { assert } from '../errors.ts';

/** Slots start at this many and double; at most half of them are in use. */
const blockIndexSlotsMin = 64;
const empty = -1;
const twoTo32 = 4294967296;

export class BlockIndex {
  /** Address per slot, `empty` where there is none. */
  #keys = new Float64Array(blockIndexSlotsMin).fill(empty);
  #values = new Int32Array(blockIndexSlotsMin);
  #mask = blockIndexSlotsMin - 1;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** The entry for `address`, or -1. */
  get(address: number): number {
    const keys = this.#keys;
    for (let i = this.#slot(address); ; i = (i + 1) & this.#mask) {
      const k = keys[i]!;
      // Empty first: a lookup of the sentinel itself must not match a free slot.
      if (k === empty) return -1;
      if (k === address) return this.#values[i]!;
    }
  }

  has(address: number): boolean {
    return this.get(address) !== -1;
  }

  set(address: number, entry: number): void {
    assert(Number.isSafeInteger(address) && address >= 0 && Number.isInteger(entry) && entry >= 0 && entry <= 0x7fffffff, 'block index key and value');
    if (2 * (this.#size + 1) > this.#keys.length) this.#grow();
    const keys = this.#keys;
    let i = this.#slot(address);
    while (keys[i] !== empty && keys[i] !== address) i = (i + 1) & this.#mask;
    if (keys[i] === empty) {
      keys[i] = address;
      this.#size++;
    }
    this.#values[i] = entry;
  }

  delete(address: number): boolean {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = this.#slot(address);
    for (;;) {
      const k = keys[i]!;
      if (k === empty) return false;
      if (k === address) break;
      i = (i + 1) & mask;
    }
    // Backward shift: pull later members of the probe run into the hole when the hole lies on their
    // way from their home slot, so every remaining key stays reachable without tombstones.
    let hole = i;
    for (let j = (i + 1) & mask; keys[j] !== empty; j = (j + 1) & mask) {
      const home = this.#slot(keys[j]!);
      // It moves unless its home lies cyclically in (hole, j]: then a probe from home never passes
      // the hole, and the key must stay where it is (distances taken modulo the table).
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        keys[hole] = keys[j]!;
        this.#values[hole] = this.#values[j]!;
        hole = j;
      }
    }
    keys[hole] = empty;
    this.#size--;
    return true;
  }

  clear(): void {
    this.#keys.fill(empty);
    this.#size = 0;
  }

  #slot(address: number): number {
    // Fibonacci hashing of both 32-bit halves: consecutive addresses spread over the table.
    const h = Math.imul((address >>> 0) ^ Math.imul(Math.floor(address / twoTo32), 0x85ebca6b), 0x9e3779b1);
    return (h ^ (h >>> 15)) & this.#mask;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldValues = this.#values;
    this.#keys = new Float64Array(oldKeys.length * 2).fill(empty);
    this.#values = new Int32Array(oldKeys.length * 2);
    this.#mask = oldKeys.length * 2 - 1;
    this.#size = 0;
    for (let i = 0; i < oldKeys.length; i++) if (oldKeys[i] !== empty) this.set(oldKeys[i]!, oldValues[i]!);
  }
}
