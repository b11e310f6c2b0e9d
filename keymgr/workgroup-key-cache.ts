/**
 * Unwrapped workgroup keys held in memory while unsealed, so the data path does not unwrap on every
 * volume open. Bounded; every key leaving the cache (evicted, destroyed, sealed) is zeroed.
 * Callers get copies, never the cached buffer, so zeroing here cannot break an open volume and a
 * caller cannot alter what the cache holds.
 */
import { assert } from '../appliance/errors.ts';

/** Far above the keys any appliance uses at once; the oldest is dropped (zeroed) past it. */
export const cachedWorkgroupKeysMax = 4096;

export class WorkgroupKeyCache {
  readonly #keys = new Map<string, Uint8Array>();

  /** A copy of the cached key, or undefined. */
  copy(id: string): Uint8Array | undefined {
    const key = this.#keys.get(id);
    return key === undefined ? undefined : new Uint8Array(key);
  }

  /** Takes ownership of `key` (it will be zeroed on eviction). */
  put(id: string, key: Uint8Array): void {
    this.wipe(id);
    if (this.#keys.size >= cachedWorkgroupKeysMax) {
      const oldest = this.#keys.keys().next();
      assert(oldest.done !== true, 'a full cache has an oldest entry');
      this.wipe(oldest.value);
    }
    this.#keys.set(id, key);
  }

  wipe(id: string): void {
    const key = this.#keys.get(id);
    if (key === undefined) return;
    key.fill(0);
    this.#keys.delete(id);
  }

  wipeAll(): void {
    for (const key of this.#keys.values()) key.fill(0);
    this.#keys.clear();
  }

  ids(): string[] {
    return [...this.#keys.keys()].sort();
  }
}
