/**
 * Counts requests and payload bytes in flight on one connection. Both are
 * bounded, except that one request may always run, so a single maximal
 * request can never deadlock a connection.
 */
import { assert } from '../errors.ts';

export class Budget {
  readonly #countMax: number;
  readonly #bytesMax: number;
  #count = 0;
  #bytes = 0;
  #waiters: Array<() => void> = [];

  constructor(countMax: number, bytesMax: number) {
    assert(countMax >= 1 && bytesMax >= 0, 'Budget: limits must allow one request');
    this.#countMax = countMax;
    this.#bytesMax = bytesMax;
  }

  get count(): number {
    return this.#count;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Whether another request could start now (slot() would not wait). */
  hasSlot(): boolean {
    return this.#count < this.#countMax;
  }

  /** Waits until another request could start (ignoring its size, which is not known yet). */
  async slot(): Promise<void> {
    while (this.#count >= this.#countMax) await this.#changed();
  }

  async acquire(bytes: number): Promise<void> {
    while (!this.tryAcquire(bytes)) await this.#changed();
  }

  /**
   * Takes a request's share now if it fits, without a promise: the read loop tries this first, as
   * nearly every request fits, and two promises per request were measurable at a deep queue.
   */
  tryAcquire(bytes: number): boolean {
    if (!(this.#count === 0 || (this.#count < this.#countMax && this.#bytes + bytes <= this.#bytesMax))) return false;
    this.#count++;
    this.#bytes += bytes;
    return true;
  }

  release(bytes: number): void {
    assert(this.#count > 0 && this.#bytes >= bytes, 'Budget: release without acquire');
    this.#count--;
    this.#bytes -= bytes;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  async idle(): Promise<void> {
    while (this.#count > 0) await this.#changed();
  }

  #changed(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}
