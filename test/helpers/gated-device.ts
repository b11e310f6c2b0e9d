/**
 * A storage device that passes everything through, but holds data writes (the shares, at or past
 * `dataFrom`) while its gate is closed, or fails them while `failing`: tests use it to see a volume
 * between a write's acknowledgement and its shares reaching the strips.
 */
import type { StorageDevice } from '../../appliance/device/device.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';

export class GatedDevice implements StorageDevice {
  readonly id: string;
  readonly sizeBytes: number;
  failing = false;
  #open: Promise<void> = Promise.resolve();
  #release: (() => void) | null = null;
  constructor(
    readonly inner: StorageDevice,
    readonly dataFrom = dataOffset,
  ) {
    this.id = inner.id;
    this.sizeBytes = inner.sizeBytes;
  }
  /** Closes the gate: data writes wait until openGate(). */
  hold(): void {
    this.#open = new Promise((r) => (this.#release = r));
  }
  openGate(): void {
    this.#release?.();
    this.#release = null;
    this.#open = Promise.resolve();
  }
  /** Whether the gate is closed now. */
  get holding(): boolean {
    return this.#release !== null;
  }
  /** Settles when the gate is open (at once if it is). */
  gate(): Promise<void> {
    return this.#open;
  }
  read(offset: number, length: number): Promise<Buffer> {
    return this.inner.read(offset, length);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    // Headers and status records (below the slots) pass: only shares are held back.
    if (offset >= this.dataFrom) {
      await this.#open;
      if (this.failing) throw new StripvaultError(ErrorCode.DeviceIo, `${this.id}: injected write error`, { errno: 'EIO' });
    }
    return this.inner.write(offset, data);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
