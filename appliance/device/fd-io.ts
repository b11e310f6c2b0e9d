/**
 * Synchronous positional I/O on a raw file descriptor, for split-pool workers: a worker that seals
 * or opens a batch also reads or writes its strip slots, so the main thread pays one message per
 * batch instead of one thread-pool round trip per strip. Descriptors are process-wide, so a worker
 * may use the fd of a device the main thread opened; the main thread keeps the device open (and
 * its close() waiting) until the worker has answered (HandleDevice.hold).
 */
import { readSync, writeSync } from 'node:fs';

export class FdIoError extends Error {
  readonly errno: string;
  constructor(errno: string, message: string) {
    super(message);
    this.name = 'FdIoError';
    this.errno = errno;
  }
}

function errnoName(e: unknown): string {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : 'EIO';
}

/** Fills `into` from `offset`; a short read (the file shrank) is an error, as on the devices. */
export function preadFully(fd: number, into: Uint8Array, offset: number): void {
  let done = 0;
  while (done < into.length) {
    let n: number;
    try {
      n = readSync(fd, into, done, into.length - done, offset + done);
    } catch (e) {
      throw new FdIoError(errnoName(e), `read of ${into.length} bytes at ${offset} failed: ${(e as Error).message}`);
    }
    if (n === 0) throw new FdIoError('SHORT_READ', `short read at ${offset + done}`);
    done += n;
  }
}

export function pwriteFully(fd: number, data: Uint8Array, offset: number): void {
  let done = 0;
  while (done < data.length) {
    let n: number;
    try {
      n = writeSync(fd, data, done, data.length - done, offset + done);
    } catch (e) {
      throw new FdIoError(errnoName(e), `write of ${data.length} bytes at ${offset} failed: ${(e as Error).message}`);
    }
    if (n === 0) throw new FdIoError('SHORT_WRITE', `write made no progress at ${offset + done}`);
    done += n;
  }
}
