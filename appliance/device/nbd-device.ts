/**
 * A storage device on someone else's NBD export (nbdkit, qemu-nbd, nbd-server, another
 * stripvault), over one connection of our NBD client. Requests are split to the export's maximum
 * payload and widened to its minimum block size (read-modify-write at unaligned edges), so the
 * volume layer sees the same byte-addressed device as a local file.
 */
import { ErrorCode, StripvaultError, assert, fail, isStripvaultError } from '../errors.ts';
import { connectNbd } from '../nbd/client.ts';
import type { NbdClient, NbdExportInfo } from '../nbd/client.ts';
import { RangeLock } from '../volume/range-lock.ts';
import type { StorageDevice } from './device.ts';
import { errnoOf } from './errno.ts';
import { parseNbdUri } from './nbd-uri.ts';
import { InFlight } from './in-flight.ts';

/** TCP connect plus the whole NBD handshake. */
export const nbdConnectTimeoutMsDefault = 10_000;
/**
 * With requests outstanding and no reply for this long, the server is taken for dead: a host
 * that vanished without a FIN/RST would otherwise hang the strip forever. Progress on any request
 * resets it, so a loaded but live server is not killed.
 */
export const nbdStallTimeoutMsDefault = 30_000;
/** How many times per stall timeout the watchdog looks. */
const stallChecksPerTimeout = 4;
/**
 * Largest request we put on the wire, below the export's own maximum: a 32 MiB device request
 * then goes out as several pipelined requests instead of one the server must buffer whole.
 */
export const nbdRequestBytesMax = 4 * 1024 * 1024;
/** The spec's ceiling for an export's minimum block size; anything larger is a broken server. */
export const nbdBlockSizeMinMax = 64 * 1024;

export interface NbdDeviceOptions {
  /** Device id; defaults to the URI. */
  id?: string;
  connectTimeoutMs?: number;
  stallTimeoutMs?: number;
}

type NbdOp = 'read' | 'write' | 'flush';

export class NbdDevice implements StorageDevice {
  readonly kind = 'nbd' as const;
  readonly id: string;
  readonly uri: string;
  readonly sizeBytes: number;
  /** What the server advertised. */
  readonly info: NbdExportInfo;
  readonly #client: NbdClient;
  /** The export's minimum block size: every request we send is aligned to it. */
  readonly #blockBytes: number;
  /** Per-request payload, a multiple of #blockBytes. */
  readonly #chunkBytes: number;
  /** Only when #blockBytes > 1: read-modify-writes exclude every other write to their blocks. */
  readonly #lock: RangeLock | undefined;
  readonly #inFlight = new InFlight();
  readonly #stallTimeoutMs: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #gone: StripvaultError | undefined;
  /** Client requests outstanding, and when one last settled (or the first of a busy spell started). */
  #outstanding = 0;
  #lastProgressMs = 0;
  #watchdog: NodeJS.Timeout | undefined;

  constructor(args: { id: string; uri: string; client: NbdClient; stallTimeoutMs: number }) {
    const info = args.client.info;
    assert(isPowerOfTwo(info.blockSizeMin) && info.blockSizeMin <= nbdBlockSizeMinMax, 'export minimum block size checked by the opener');
    this.id = args.id;
    this.uri = args.uri;
    this.info = info;
    this.sizeBytes = info.sizeBytes;
    this.#client = args.client;
    this.#blockBytes = info.blockSizeMin;
    this.#chunkBytes = Math.floor(Math.min(info.blockSizeMax, nbdRequestBytesMax) / this.#blockBytes) * this.#blockBytes;
    assert(this.#chunkBytes >= this.#blockBytes, 'export maximum payload checked by the opener');
    this.#lock = this.#blockBytes > 1 ? new RangeLock() : undefined;
    this.#stallTimeoutMs = args.stallTimeoutMs;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#run('read', offset, length, () => this.#read(offset, length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run('write', offset, data.length, () => this.#write(offset, data));
  }

  /** NBD FLUSH: the server's answer means every completed write is on stable storage. */
  flush(): Promise<void> {
    return this.#run('flush', 0, 0, async () => {
      if (!this.info.canFlush) {
        // Failing closed: a device that cannot make writes durable must not look as if it did.
        fail(ErrorCode.DeviceIo, `device ${this.id}: server cannot flush (${this.uri} does not advertise NBD_FLAG_SEND_FLUSH)`, {
          device: this.id,
          uri: this.uri,
          op: 'flush',
          errno: 'ENOTSUP',
        });
      }
      await this.#call(() => this.#client.flush());
    });
  }

  /** Waits for requests already started, then disconnects (NBD_CMD_DISC). Idempotent. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = (async () => {
        await this.#inFlight.drain();
        this.#stopWatchdog();
        if (this.#gone !== undefined) this.#client.destroy();
        else await this.#client.close().catch(() => this.#client.destroy());
      })();
    }
    return this.#closing;
  }

  async #read(offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const { start, end } = this.#widen(offset, length);
    const whole = await this.#readAligned(start, end - start);
    if (start === offset && end === offset + length) return whole;
    return Buffer.from(whole.subarray(offset - start, offset - start + length));
  }

  async #write(offset: number, data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.#lock === undefined) return this.#writeAligned(offset, bytes);
    const { start, end } = this.#widen(offset, bytes.length);
    const aligned = start === offset && end === offset + bytes.length;
    const b = this.#blockBytes;
    // Whole-block writes may overlap each other freely (the server orders them, as a disk would);
    // a read-modify-write must not let another write into its blocks between its read and write.
    const release = await this.#lock.acquire(start / b, Math.ceil(end / b) - 1, aligned ? 'shared' : 'exclusive');
    try {
      if (aligned) return await this.#writeAligned(offset, bytes);
      const merged = Buffer.alloc(end - start);
      const edges: Array<Promise<void>> = [];
      const fill = (at: number, to: number) =>
        edges.push(this.#readAligned(at, to - at).then((old) => void old.copy(merged, at - start)));
      const headEnd = Math.min(start + b, this.sizeBytes);
      if (offset !== start) fill(start, headEnd);
      const tailStart = Math.floor((offset + bytes.length) / b) * b;
      if (offset + bytes.length !== end && !(offset !== start && tailStart === start)) fill(tailStart, end);
      await settleAll(edges);
      bytes.copy(merged, offset - start);
      await this.#writeAligned(start, merged);
    } finally {
      release();
    }
  }

  async #readAligned(start: number, length: number): Promise<Buffer> {
    const pieces = this.#pieces(start, length);
    if (pieces.length === 1) return this.#call(() => this.#client.read(start, length));
    const parts = await settleAll(pieces.map(([at, n]) => this.#call(() => this.#client.read(at, n))));
    return Buffer.concat(parts, length);
  }

  async #writeAligned(start: number, data: Buffer): Promise<void> {
    const pieces = this.#pieces(start, data.length);
    await settleAll(pieces.map(([at, n]) => this.#call(() => this.#client.write(at, data.subarray(at - start, at - start + n)))));
  }

  /** The smallest block-aligned range holding [offset, offset+length); the export's last block may be short. */
  #widen(offset: number, length: number): { start: number; end: number } {
    const b = this.#blockBytes;
    return { start: Math.floor(offset / b) * b, end: Math.min(Math.ceil((offset + length) / b) * b, this.sizeBytes) };
  }

  #pieces(start: number, length: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let at = start; at < start + length; at += this.#chunkBytes) out.push([at, Math.min(this.#chunkBytes, start + length - at)]);
    return out;
  }

  #run<T>(op: NbdOp, offset: number, length: number, body: () => Promise<T>): Promise<T> {
    return this.#inFlight.run(this, op, offset, length, () => this.#checkUsable(), (e) => this.#wrap(op, offset, length, e), body);
  }


  /** One request on the wire, watched for stalls. */
  #call<T>(request: () => Promise<T>): Promise<T> {
    if (this.#gone !== undefined) return Promise.reject(this.#gone);
    if (this.#outstanding++ === 0) {
      this.#lastProgressMs = performance.now();
      this.#startWatchdog();
    }
    let p: Promise<T>;
    try {
      p = request();
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.finally(() => {
      this.#lastProgressMs = performance.now();
      if (--this.#outstanding === 0) this.#stopWatchdog();
    });
  }

  #startWatchdog(): void {
    if (this.#watchdog !== undefined) return;
    this.#watchdog = setInterval(() => {
      if (this.#outstanding === 0 || performance.now() - this.#lastProgressMs <= this.#stallTimeoutMs) return;
      this.#markGone(`no reply from the server for ${this.#stallTimeoutMs} ms`, 'ETIMEDOUT', undefined);
    }, Math.max(1, Math.floor(this.#stallTimeoutMs / stallChecksPerTimeout)));
    // A stuck request must not keep the process alive on its own account.
    this.#watchdog.unref();
  }

  #stopWatchdog(): void {
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }

  #checkUsable(): void {
    if (this.#closed) fail(ErrorCode.DeviceClosed, `device ${this.id} is closed`, { device: this.id });
    if (this.#gone !== undefined) {
      fail(ErrorCode.DeviceGone, `device ${this.id} has disappeared (${this.#gone.detail?.['reason'] as string})`, {
        device: this.id,
        uri: this.uri,
        errno: this.#gone.detail?.['errno'],
      });
    }
  }

  /** The connection is unusable from now on: every request, running or later, fails GONE. */
  #markGone(reason: string, errno: string, cause: unknown): StripvaultError {
    if (this.#gone === undefined) {
      this.#gone = new StripvaultError(
        ErrorCode.DeviceGone,
        `device ${this.id} has disappeared: ${reason}`,
        { device: this.id, uri: this.uri, reason, errno },
        { cause },
      );
      this.#stopWatchdog();
      // Fails whatever is still in flight instead of leaving it to a server that will not answer.
      this.#client.destroy();
    }
    return this.#gone;
  }

  #wrap(op: NbdOp, offset: number, length: number, e: unknown): StripvaultError {
    if (this.#gone !== undefined) return this.#gone;
    if (isStripvaultError(e)) {
      if (e.code.startsWith('SV_DEVICE_')) return e;
      if (e.code === ErrorCode.NbdConnectionClosed) return this.#markGone(`connection lost (${e.message})`, 'ECONNRESET', e);
      if (e.code === ErrorCode.NbdProtocol) return this.#markGone(`protocol error (${e.message})`, 'EPROTO', e);
      if (e.code === ErrorCode.NbdRequestFailed) {
        const errno = typeof e.detail?.['nbdError'] === 'string' ? e.detail['nbdError'] : 'EIO';
        // The server is going away and says so: later requests cannot succeed either.
        if (errno === 'ESHUTDOWN') return this.#markGone('the server is shutting down', errno, e);
        return new StripvaultError(
          ErrorCode.DeviceIo,
          `device ${this.id}: ${op} failed on the server (${errno})`,
          { device: this.id, uri: this.uri, op, offset, length, errno, nbdErrno: e.detail?.['nbdErrno'] },
          { cause: e },
        );
      }
    }
    // Our client refusing a request we built is a bug here, not a server verdict; say EINVAL, as a kernel would.
    const errno = isStripvaultError(e) ? (e.code === ErrorCode.InvalidArgument ? 'EINVAL' : e.code) : (errnoOf(e) ?? 'unknown');
    return new StripvaultError(
      ErrorCode.DeviceIo,
      `device ${this.id}: ${op} failed (${errno})`,
      { device: this.id, uri: this.uri, op, offset, length, errno },
      { cause: e },
    );
  }
}

/**
 * Connects to the export `uri` names (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)
 * and opens it as a device. Read-only exports and servers with impossible block sizes are refused.
 */
export async function openNbdDevice(uri: string, options: NbdDeviceOptions = {}): Promise<NbdDevice> {
  const id = options.id ?? uri;
  const target = parseNbdUri(uri);
  let client: NbdClient;
  try {
    // base:allocation is of no use to a strip and costs a handshake round trip.
    client = await connectNbd(target.address, target.exportName, {
      blockStatus: false,
      connectTimeoutMs: options.connectTimeoutMs ?? nbdConnectTimeoutMsDefault,
    });
  } catch (e) {
    throw connectError(id, uri, target.exportName, e);
  }
  const info = client.info;
  const refuse = (why: string, detail: Record<string, unknown>): never => {
    client.destroy();
    fail(ErrorCode.DeviceUnsupported, `device ${id}: ${uri} ${why}`, { device: id, uri, ...detail });
  };
  if (info.readOnly) refuse('is a read-only export', {});
  if (!isPowerOfTwo(info.blockSizeMin) || info.blockSizeMin > nbdBlockSizeMinMax) {
    refuse(`advertises a minimum block size of ${info.blockSizeMin} (must be a power of two up to ${nbdBlockSizeMinMax})`, {
      blockSizeMin: info.blockSizeMin,
    });
  }
  if (info.blockSizeMax < info.blockSizeMin) {
    refuse(`advertises a maximum payload of ${info.blockSizeMax}, below its minimum block size ${info.blockSizeMin}`, {
      blockSizeMin: info.blockSizeMin,
      blockSizeMax: info.blockSizeMax,
    });
  }
  return new NbdDevice({ id, uri, client, stallTimeoutMs: options.stallTimeoutMs ?? nbdStallTimeoutMsDefault });
}

function connectError(id: string, uri: string, exportName: string, e: unknown): StripvaultError {
  const detail = { device: id, uri, export: exportName };
  if (isStripvaultError(e)) {
    if (e.code === ErrorCode.NbdRefused) {
      const reply = e.detail?.['reply'];
      if (reply === 'NBD_REP_ERR_UNKNOWN') {
        return new StripvaultError(ErrorCode.DeviceNotFound, `device ${id}: the server at ${uri} has no export "${exportName}"`, { ...detail, reply }, { cause: e });
      }
      if (reply === 'NBD_REP_ERR_TLS_REQD') {
        return new StripvaultError(ErrorCode.DeviceUnsupported, `device ${id}: the server at ${uri} requires TLS, which is not supported yet`, { ...detail, reply }, { cause: e });
      }
      return new StripvaultError(ErrorCode.DeviceIo, `device ${id}: the server at ${uri} refused the export: ${e.message}`, { ...detail, errno: reply }, { cause: e });
    }
    if (e.code !== ErrorCode.NbdProtocol && e.code !== ErrorCode.NbdConnectionClosed) return e;
    const errno = e.code === ErrorCode.NbdProtocol ? 'EPROTO' : /timed out/.test(e.message) ? 'ETIMEDOUT' : 'ECONNRESET';
    return new StripvaultError(ErrorCode.DeviceIo, `device ${id}: cannot connect to ${uri}: ${e.message}`, { ...detail, errno }, { cause: e });
  }
  const errno = errnoOf(e) ?? 'unknown';
  return new StripvaultError(ErrorCode.DeviceIo, `device ${id}: cannot connect to ${uri} (${errno})`, { ...detail, errno }, { cause: e });
}

/** Like Promise.all, but only settles once every request has: close() must not outrun them. */
async function settleAll<T>(work: ReadonlyArray<Promise<T>>): Promise<T[]> {
  const results = await Promise.allSettled(work);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
