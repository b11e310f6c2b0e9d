/**
 * A storage device: where strips live. One interface over regular files, raw block
 * devices and (later) remote NBD exports, so the volume layer never knows which.
 *
 * Offsets and lengths are bytes. Implementations must:
 *  - reject reads/writes touching any byte outside [0, sizeBytes) with SV_DEVICE_OUT_OF_RANGE,
 *    and non-integer or over-long (> ioBytesMax, io-range.ts) requests with SV_INVALID_ARGUMENT;
 *    zero-length requests anywhere in [0, sizeBytes] succeed and do nothing,
 *  - return exactly `length` bytes from read (short reads are an error, SV_DEVICE_IO),
 *  - report every other failure as SV_DEVICE_IO with the errno name in `detail.errno`,
 *  - make `flush()` mean durable on stable storage (fdatasync or equivalent),
 *  - throw SV_DEVICE_GONE once the device has disappeared, SV_DEVICE_CLOSED after close(),
 *  - reject with a rejected promise, never a synchronous throw,
 *  - never alias caller buffers: a returned buffer is the caller's, and `data` may be reused
 *    once write() has resolved.
 * close() is idempotent and waits for requests already started.
 */
export interface StorageDevice {
  /** Stable identifier of this device (the store's device id or a path). */
  readonly id: string;
  /** Usable size in bytes. */
  readonly sizeBytes: number;
  /** What it is ('file', 'block', 'nbd', ...); 'nbd' is remote, and reads prefer local strips. */
  readonly kind?: string;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
