import { ErrorCode, fail } from '../errors.ts';
import type { StorageDevice } from './device.ts';
import { checkIoRange } from './io-range.ts';

/** Largest memory device: enough for any unit test, small enough not to exhaust the machine by typo. */
export const memoryDeviceBytesMax = 1024 * 1024 * 1024;

/**
 * A device held in memory, zero-filled at birth; for fast unit tests. Reads return copies and
 * writes copy their input, so callers can never alias the device's bytes.
 */
export class MemoryDevice implements StorageDevice {
  readonly id: string;
  readonly sizeBytes: number;
  readonly #bytes: Buffer;
  #closed = false;

  constructor(sizeBytes: number, options: { id?: string } = {}) {
    this.id = options.id ?? 'memory';
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > memoryDeviceBytesMax) {
      const range = `[1, ${memoryDeviceBytesMax}]`;
      fail(ErrorCode.InvalidArgument, `memory device ${this.id}: size ${sizeBytes} outside ${range}`, {
        device: this.id,
        sizeBytes,
        memoryDeviceBytesMax,
      });
    }
    this.sizeBytes = sizeBytes;
    this.#bytes = Buffer.alloc(sizeBytes);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#checkOpen();
    checkIoRange(this.id, this.sizeBytes, offset, length);
    return Buffer.from(this.#bytes.subarray(offset, offset + length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#checkOpen();
    checkIoRange(this.id, this.sizeBytes, offset, data.length);
    this.#bytes.set(data, offset);
  }

  async flush(): Promise<void> {
    this.#checkOpen();
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #checkOpen(): void {
    if (this.#closed) fail(ErrorCode.DeviceClosed, `device ${this.id} is closed`, { device: this.id });
  }
}
