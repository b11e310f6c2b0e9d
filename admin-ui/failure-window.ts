/**
 * Counts failures in a sliding window and says when to stop listening. Used for unseal, where the
 * share is the only credential: shares are 256-bit random so guessing is hopeless, but a flood of
 * bad shares would fill the audit log and the logs and hide the real attempts.
 */
/** What to tell a caller turned away only because of attempts still being decided. */
const runningRetryAfterMs = 1000;

export class FailureWindow {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  /** Times of recent failures, oldest first; never more than `max`. */
  readonly #times: number[] = [];
  #running = 0;

  constructor(options: { max: number; windowMs: number; now?: () => number }) {
    if (!Number.isSafeInteger(options.max) || options.max < 1) throw new RangeError('max must be a positive integer');
    if (!(options.windowMs > 0)) throw new RangeError('windowMs must be positive');
    this.#max = options.max;
    this.#windowMs = options.windowMs;
    this.#now = options.now ?? Date.now;
  }

  #expire(now: number): void {
    while (this.#times.length > 0 && this.#times[0]! <= now - this.#windowMs) this.#times.shift();
  }

  /**
   * Starts an attempt: 0 when it may go ahead (call `end` once it is decided), otherwise the
   * milliseconds until one may. Attempts still running count as failures until they end, so a
   * burst of concurrent attempts cannot slip past the limit together.
   */
  begin(): number {
    const now = this.#now();
    this.#expire(now);
    if (this.#times.length + this.#running < this.#max) {
      this.#running++;
      return 0;
    }
    const oldest = this.#times[0];
    // Only running attempts fill the window: one of them ends soon.
    return oldest === undefined ? runningRetryAfterMs : Math.max(1, oldest + this.#windowMs - now);
  }

  end(failed: boolean): void {
    this.#running--;
    if (!failed) return;
    const now = this.#now();
    this.#expire(now);
    this.#times.push(now);
    if (this.#times.length > this.#max) this.#times.shift();
  }
}
