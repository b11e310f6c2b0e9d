/**
 * Serialises operations on overlapping block ranges: readers share, writers exclude. Grants are
 * FIFO among overlapping requests, so a stream of readers cannot starve a writer. The number of
 * waiters is bounded by the callers' own in-flight limits (NBD requests per connection).
 */
export type LockMode = 'shared' | 'exclusive';

interface Request {
  readonly first: number;
  readonly last: number;
  readonly mode: LockMode;
  granted: boolean;
  grant?: () => void;
}

function conflicts(a: Request, b: Request): boolean {
  return a.first <= b.last && b.first <= a.last && (a.mode === 'exclusive' || b.mode === 'exclusive');
}

export class RangeLock {
  /** Granted and waiting requests, in arrival order. */
  private readonly queue: Request[] = [];

  /**
   * `onWait` is told when a request has to wait for an earlier one (e.g. to hurry that one along);
   * the function it returns, if any, is called once the request is granted.
   */
  constructor(private readonly onWait: () => (() => void) | undefined = () => undefined) {}

  /** Locks blocks [first, last]; resolves to the release function. */
  async acquire(first: number, last: number, mode: LockMode): Promise<() => void> {
    const req: Request = { first, last, mode, granted: false };
    this.queue.push(req);
    if (!this.blocked(req)) req.granted = true;
    else {
      const granted = this.onWait();
      await new Promise<void>((resolve) => (req.grant = resolve));
      granted?.();
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.queue.splice(this.queue.indexOf(req), 1);
      this.wake();
    };
  }

  get size(): number {
    return this.queue.length;
  }

  /** A request waits while any earlier request (granted or not) conflicts with it. */
  private blocked(req: Request): boolean {
    for (const other of this.queue) {
      if (other === req) return false;
      if (conflicts(other, req)) return true;
    }
    return false;
  }

  private wake(): void {
    for (const req of this.queue) {
      if (!req.granted && !this.blocked(req)) {
        req.granted = true;
        req.grant!();
      }
    }
  }
}
