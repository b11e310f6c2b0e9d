import type { FileHandle } from 'node:fs/promises';
import { ErrorCode, StripvaultError, assert, fail } from '../errors.ts';
import type { StorageDevice } from './device.ts';
import { errnoOf } from './errno.ts';
import { InFlight } from './in-flight.ts';

export type HandleDeviceKind = 'file' | 'block';
type HandleOp = 'read' | 'write' | 'flush';

/**
 * Errnos that mean the device itself went away (hot-unplugged disk, detached loop device),
 * not that one request failed: later requests cannot succeed either.
 */
const goneErrnos: ReadonlySet<string> = new Set(['ENXIO', 'ENODEV']);

/**
 * A StorageDevice over an open FileHandle: the positional I/O shared by regular files and
 * raw block devices. The openers (file-device.ts, block-device.ts) decide the size.
 */
export class HandleDevice implements StorageDevice {
  readonly id: string;
  readonly sizeBytes: number;
  readonly kind: HandleDeviceKind;
  readonly path: string;
  readonly #handle: FileHandle;
  readonly #inFlight = new InFlight();
  #closed = false;
  #closing: Promise<void> | undefined;
  #gone = false;

  constructor(args: { id: string; path: string; kind: HandleDeviceKind; sizeBytes: number; handle: FileHandle }) {
    const { sizeBytes } = args;
    assert(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0, `device size ${sizeBytes} is a byte count`);
    this.id = args.id;
    this.path = args.path;
    this.kind = args.kind;
    this.sizeBytes = args.sizeBytes;
    this.#handle = args.handle;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#run('read', offset, length, () => this.#readFully(offset, length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run('write', offset, data.length, () => this.#writeFully(offset, data));
  }

  flush(): Promise<void> {
    return this.#run('flush', 0, 0, () => this.#handle.datasync());
  }

  /**
   * The descriptor, for positional I/O done by a split-pool worker (fd-io.ts), or null once the
   * device is closed or gone. The caller passes that I/O's promise to hold() at once, so close()
   * waits for it and the descriptor number is never reused under a worker's feet.
   */
  rawFd(): number | null {
    if (this.#closed || this.#gone) return null;
    return this.#handle.fd;
  }

  hold(io: Promise<unknown>): void {
    this.#inFlight.track(io);
  }

  /** Waits for requests already started, then releases the handle. Idempotent. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = (async () => {
        await this.#inFlight.drain();
        await this.#handle.close();
      })();
    }
    return this.#closing;
  }

  #run<T>(op: HandleOp, offset: number, length: number, body: () => Promise<T>): Promise<T> {
    return this.#inFlight.run(this, op, offset, length, () => this.#checkUsable(), (e) => this.#wrap(op, offset, length, e), body);
  }


  #checkUsable(): void {
    if (this.#closed) fail(ErrorCode.DeviceClosed, `device ${this.id} is closed`, { device: this.id });
    if (this.#gone) fail(ErrorCode.DeviceGone, `device ${this.id} has disappeared`, { device: this.id });
  }

  async #readFully(offset: number, length: number): Promise<Buffer> {
    // Zeroed, not allocUnsafe: a bug that returned a partly filled buffer must not leak old heap bytes.
    const buffer = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) {
        fail(ErrorCode.DeviceIo, `device ${this.id}: short read at ${offset + done} (device shrank?)`, {
          device: this.id,
          op: 'read',
          offset,
          length,
          bytesRead: done,
          errno: 'SHORT_READ',
        });
      }
      done += bytesRead;
    }
    return buffer;
  }

  async #writeFully(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#handle.write(data, done, data.length - done, offset + done);
      if (bytesWritten === 0) {
        fail(ErrorCode.DeviceIo, `device ${this.id}: write made no progress at ${offset + done}`, {
          device: this.id,
          op: 'write',
          offset,
          length: data.length,
          bytesWritten: done,
          errno: 'SHORT_WRITE',
        });
      }
      done += bytesWritten;
    }
  }

  #wrap(op: HandleOp, offset: number, length: number, e: unknown): StripvaultError {
    if (e instanceof StripvaultError) return e;
    const errno = errnoOf(e);
    const detail = { device: this.id, path: this.path, op, offset, length, errno };
    if (errno !== undefined && goneErrnos.has(errno)) {
      this.#gone = true;
      return new StripvaultError(ErrorCode.DeviceGone, `device ${this.id} has disappeared (${errno})`, detail, {
        cause: e,
      });
    }
    return new StripvaultError(ErrorCode.DeviceIo, `device ${this.id}: ${op} failed (${errno ?? 'unknown'})`, detail, {
      cause: e,
    });
  }
}
