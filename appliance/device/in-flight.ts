/**
 * The request bookkeeping every device shares: check before queueing (so a bad request fails
 * without side effects), wrap failures in the device's own errors, and remember what is in flight
 * so close() can wait for it.
 */
import type { StorageDevice } from './device.ts';
import { checkIoRange } from './io-range.ts';

export type DeviceOp = 'read' | 'write' | 'flush';

export class InFlight {
  readonly #requests = new Set<Promise<unknown>>();

  run<T>(
    device: Pick<StorageDevice, 'id' | 'sizeBytes'>,
    op: DeviceOp,
    offset: number,
    length: number,
    checkUsable: () => void,
    wrap: (e: unknown) => unknown,
    body: () => Promise<T>,
  ): Promise<T> {
    try {
      checkUsable();
      if (op !== 'flush') checkIoRange(device.id, device.sizeBytes, offset, length);
    } catch (e) {
      return Promise.reject(e);
    }
    const p = body().catch((e: unknown) => {
      throw wrap(e);
    });
    this.#requests.add(p);
    const forget = () => this.#requests.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Remembers I/O done elsewhere on the device's behalf (a worker on its descriptor), so drain() waits for it. */
  track(p: Promise<unknown>): void {
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#requests.add(settled);
    void settled.then(() => this.#requests.delete(settled));
  }

  /** Settles once every request started so far has settled. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#requests]);
  }
}
