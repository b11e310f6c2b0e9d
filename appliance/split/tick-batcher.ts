/**
 * Gathers the requests made in one turn of the event loop and hands them over together, so many
 * small concurrent requests (4 KiB random I/O at a deep queue) cost one worker message instead of
 * one each. A turn's requests are cut into at most `parallelism` groups of about equal weight (and
 * none heavier than weightMax unless one request alone is), so every worker gets a share.
 */
import { assert } from '../errors.ts';

interface Pending<T, R> {
  readonly item: T;
  readonly resolve: (r: R) => void;
  readonly reject: (e: unknown) => void;
}

export interface TickBatcherOptions<T, R> {
  /** Runs one group; resolves with one result per item, in order. */
  readonly run: (items: readonly T[]) => Promise<R[]>;
  /** How much work an item is (blocks, bytes). */
  readonly weight: (item: T) => number;
  readonly weightMax: number;
  /**
   * A turn lighter than this per worker is not split: a worker message costs more than sealing or
   * opening a few blocks, so a handful of small requests go in one message (default 1).
   */
  readonly weightMin?: number;
  readonly parallelism: () => number;
  /** Items that may share a group have the same key (default: all may). */
  readonly key?: (item: T) => string;
}

export class TickBatcher<T, R> {
  readonly #opts: TickBatcherOptions<T, R>;
  #pending: Pending<T, R>[] = [];

  constructor(opts: TickBatcherOptions<T, R>) {
    assert(opts.weightMax >= 1 && (opts.weightMin ?? 1) >= 1, 'batch weight limits');
    this.#opts = opts;
  }

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      if (this.#pending.length === 0) setImmediate(() => this.#flush());
      this.#pending.push({ item, resolve, reject });
    });
  }

  #flush(): void {
    const all = this.#pending;
    this.#pending = [];
    const byKey = new Map<string, Pending<T, R>[]>();
    for (const p of all) {
      const k = this.#opts.key?.(p.item) ?? '';
      const list = byKey.get(k);
      if (list) list.push(p);
      else byKey.set(k, [p]);
    }
    for (const list of byKey.values()) {
      const total = list.reduce((a, p) => a + this.#opts.weight(p.item), 0);
      const share = Math.min(this.#opts.weightMax, Math.max(this.#opts.weightMin ?? 1, Math.ceil(total / Math.max(1, this.#opts.parallelism()))));
      let group: Pending<T, R>[] = [];
      let weight = 0;
      for (const p of list) {
        const w = this.#opts.weight(p.item);
        if (group.length > 0 && weight + w > share) {
          this.#start(group);
          group = [];
          weight = 0;
        }
        group.push(p);
        weight += w;
      }
      if (group.length > 0) this.#start(group);
    }
  }

  #start(group: readonly Pending<T, R>[]): void {
    let started: Promise<R[]>;
    try {
      started = this.#opts.run(group.map((p) => p.item));
    } catch (e) {
      started = Promise.reject(e);
    }
    started
      .then((results) => {
        assert(results.length === group.length, 'a batch answered for a different number of items');
        group.forEach((p, i) => p.resolve(results[i]!));
      })
      .catch((e: unknown) => {
        for (const p of group) p.reject(e);
      });
  }
}
