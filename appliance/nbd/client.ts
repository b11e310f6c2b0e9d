/**
 * An NBD client: pipelined requests (up to inflightPerConnectionMax in flight),
 * simple and structured replies, block status. Used by tests and, later, by
 * the remote-NBD storage device. Requests are checked against what the server
 * advertised before they are sent; server errors come back as
 * SV_NBD_REQUEST_FAILED with detail.nbdErrno.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { ErrorCode, StripvaultError, fail, isStripvaultError } from '../errors.ts';
import { Budget } from './budget.ts';
import type { ByteReader } from './byte-reader.ts';
import { ClientHandshake } from './client-handshake.ts';
import type { NbdClientTls, NbdExportInfo } from './client-handshake.ts';
import { decodeChunkHeader, decodeChunkPayload, decodeSimpleReply, encodeRequest, replyHeaderBytes } from './codec.ts';
import type { Extent } from './codec.ts';
import { requestFailed } from './errors.ts';
import {
  Command,
  CommandFlag,
  NbdErrno,
  ReplyFlag,
  blockStatusDescriptorBytes,
  blockStatusExtentsMax,
  inflightBytesPerConnectionMax,
  inflightPerConnectionMax,
  isErrorChunk,
  requestBytesMax,
  socketLingerMs,
} from './protocol.ts';
import type { NbdAddress } from './server.ts';
import { commandNames } from './validate.ts';
import { endGracefully, send } from './wire.ts';

export type { NbdExportInfo, NbdClientTls } from './client-handshake.ts';

export interface NbdClientOptions {
  /** Negotiate structured replies (default true). */
  structuredReplies?: boolean;
  /** Select base:allocation so blockStatus() works (default true; needs structured replies). */
  blockStatus?: boolean;
  tls?: NbdClientTls;
  /** Connecting plus the whole handshake (default 10 s). */
  connectTimeoutMs?: number;
  /** Requests kept in flight before callers queue (default inflightPerConnectionMax). */
  inflightMax?: number;
}

const connectTimeoutMsDefault = 10_000;
/** Largest structured chunk payload we accept: a maximal read, or a maximal block status reply. */
const chunkBytesMax = Math.max(requestBytesMax + 8, 4 + blockStatusDescriptorBytes * blockStatusExtentsMax);

interface Pending {
  type: number;
  offset: number;
  length: number;
  resolve: (v: Buffer | Extent[] | undefined) => void;
  reject: (e: Error) => void;
  data?: Buffer;
  covered: number;
  extents?: Extent[];
  error?: StripvaultError;
}

export class NbdClient {
  readonly info: NbdExportInfo;
  readonly #socket: Duplex;
  readonly #reader: ByteReader;
  readonly #pending = new Map<bigint, Pending>();
  readonly #budget: Budget;
  #nextCookie = 1n;
  #failed: StripvaultError | undefined;
  #closing: Promise<void> | undefined;
  /** Requests issued and not yet settled, including those queued for the budget. */
  #outstanding = 0;
  #settled: Array<() => void> = [];
  readonly #closed: Promise<void>;

  constructor(socket: Duplex, reader: ByteReader, info: NbdExportInfo, inflightMax: number) {
    this.#socket = socket;
    this.#reader = reader;
    this.info = info;
    this.#budget = new Budget(inflightMax, inflightBytesPerConnectionMax);
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.#receive();
  }

  get inflight(): number {
    return this.#pending.size;
  }

  async read(offset: number, length: number, opts: { df?: boolean } = {}): Promise<Buffer> {
    this.#checkRange(offset, length, 'read');
    if (length > this.info.blockSizeMax) fail(ErrorCode.InvalidArgument, `read of ${length} bytes exceeds the server's maximum ${this.info.blockSizeMax}`);
    let flags = 0;
    if (opts.df === true) {
      if (!this.info.canDf) fail(ErrorCode.InvalidArgument, 'server does not support DF');
      flags |= CommandFlag.Df;
    }
    return (await this.#request(Command.Read, flags, offset, length, undefined)) as Buffer;
  }

  async write(offset: number, data: Uint8Array, opts: { fua?: boolean } = {}): Promise<void> {
    this.#checkWritable('write');
    this.#checkRange(offset, data.length, 'write');
    if (data.length > this.info.blockSizeMax) fail(ErrorCode.InvalidArgument, `write of ${data.length} bytes exceeds the server's maximum ${this.info.blockSizeMax}`);
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.length);
    await this.#request(Command.Write, this.#fua(opts.fua), offset, payload.length, payload);
  }

  async flush(): Promise<void> {
    if (!this.info.canFlush) fail(ErrorCode.InvalidArgument, 'server does not support FLUSH');
    await this.#request(Command.Flush, 0, 0, 0, undefined);
  }

  async trim(offset: number, length: number, opts: { fua?: boolean } = {}): Promise<void> {
    if (!this.info.canTrim) fail(ErrorCode.InvalidArgument, 'server does not support TRIM');
    this.#checkRange(offset, length, 'trim');
    await this.#request(Command.Trim, this.#fua(opts.fua), offset, length, undefined);
  }

  async writeZeroes(offset: number, length: number, opts: { fua?: boolean; noHole?: boolean; fastZero?: boolean } = {}): Promise<void> {
    if (!this.info.canWriteZeroes) fail(ErrorCode.InvalidArgument, 'server does not support WRITE_ZEROES');
    this.#checkRange(offset, length, 'write zeroes');
    let flags = this.#fua(opts.fua);
    if (opts.noHole === true) flags |= CommandFlag.NoHole;
    if (opts.fastZero === true) {
      if (!this.info.canFastZero) fail(ErrorCode.InvalidArgument, 'server does not support FAST_ZERO');
      flags |= CommandFlag.FastZero;
    }
    await this.#request(Command.WriteZeroes, flags, offset, length, undefined);
  }

  async cache(offset: number, length: number): Promise<void> {
    if (!this.info.canCache) fail(ErrorCode.InvalidArgument, 'server does not support CACHE');
    this.#checkRange(offset, length, 'cache');
    await this.#request(Command.Cache, 0, offset, length, undefined);
  }

  /** base:allocation extents from offset; they may cover less than length (ask again from where they end). */
  async blockStatus(offset: number, length: number, opts: { reqOne?: boolean } = {}): Promise<Extent[]> {
    if (this.info.metaContextId === undefined) fail(ErrorCode.InvalidArgument, 'base:allocation was not negotiated');
    this.#checkRange(offset, length, 'block status');
    if (length === 0) fail(ErrorCode.InvalidArgument, 'block status of zero bytes');
    const flags = opts.reqOne === true ? CommandFlag.ReqOne : 0;
    return (await this.#request(Command.BlockStatus, flags, offset, length, undefined)) as Extent[];
  }

  /** Soft disconnect: waits for requests already issued, sends DISC, closes. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      while (this.#outstanding > 0) await new Promise<void>((resolve) => this.#settled.push(resolve));
      if (this.#failed === undefined) {
        await send(this.#socket, encodeRequest({ flags: 0, type: Command.Disc, cookie: this.#nextCookie++, offset: 0, length: 0 }));
      }
      this.#fail(new StripvaultError(ErrorCode.NbdConnectionClosed, 'client closed'));
      endGracefully(this.#socket, socketLingerMs);
      await this.#closed;
    })();
    return this.#closing;
  }

  /** Hard disconnect: fails everything in flight. */
  destroy(): void {
    this.#fail(new StripvaultError(ErrorCode.NbdConnectionClosed, 'client destroyed'));
    this.#socket.destroy();
  }

  #fua(fua: boolean | undefined): number {
    if (fua !== true) return 0;
    if (!this.info.canFua) fail(ErrorCode.InvalidArgument, 'server does not support FUA');
    return CommandFlag.Fua;
  }

  #checkWritable(what: string): void {
    if (this.info.readOnly) fail(ErrorCode.InvalidArgument, `${what} on a read-only export`);
  }

  #checkRange(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || length > 0xffffffff) {
      fail(ErrorCode.InvalidArgument, `${what}: offset and length must be non-negative integers (length < 2^32)`, { offset, length });
    }
    if (offset + length > this.info.sizeBytes) {
      fail(ErrorCode.OutOfRange, `${what}: ${offset}+${length} beyond export size ${this.info.sizeBytes}`, { offset, length });
    }
    const min = this.info.blockSizeMin;
    if (offset % min !== 0 || (length % min !== 0 && offset + length !== this.info.sizeBytes)) {
      fail(ErrorCode.InvalidArgument, `${what}: ${offset}+${length} not aligned to the server's minimum block size ${min}`);
    }
  }

  async #request(type: number, flags: number, offset: number, length: number, payload: Buffer | undefined): Promise<Buffer | Extent[] | undefined> {
    if (this.#failed !== undefined) throw this.#failed;
    if (this.#closing !== undefined) fail(ErrorCode.NbdConnectionClosed, 'client is closing');
    const bytes = type === Command.Read || type === Command.Write ? length : 0;
    this.#outstanding++;
    try {
      await this.#budget.acquire(bytes);
      try {
        if (this.#failed !== undefined) throw this.#failed;
        const cookie = this.#nextCookie++;
        const done = new Promise<Buffer | Extent[] | undefined>((resolve, reject) => {
          this.#pending.set(cookie, { type, offset, length, resolve, reject, covered: 0 });
        });
        const header = encodeRequest({ flags, type, cookie, offset, length });
        void send(this.#socket, payload === undefined ? header : [header, payload]);
        return await done;
      } finally {
        this.#budget.release(bytes);
      }
    } finally {
      this.#outstanding--;
      if (this.#outstanding === 0) for (const w of this.#settled.splice(0)) w();
    }
  }

  async #receive(): Promise<void> {
    try {
      for (;;) {
        const magic = await this.#reader.read(4);
        const rest = await this.#reader.read(replyHeaderBytes(magic.readUInt32BE(0)) - 4);
        const header = Buffer.concat([magic, rest]);
        if (header.length === 16) await this.#simple(header);
        else await this.#chunk(header);
      }
    } catch (e) {
      this.#fail(
        isStripvaultError(e) ? e : new StripvaultError(ErrorCode.NbdProtocol, `client receive failed: ${String(e)}`),
      );
    }
  }

  async #simple(header: Buffer): Promise<void> {
    const r = decodeSimpleReply(header);
    const p = this.#pending.get(r.cookie);
    if (p === undefined) fail(ErrorCode.NbdProtocol, `reply for unknown cookie ${r.cookie}`);
    if (r.error === 0 && p.type === Command.Read) {
      // with structured replies on, a simple reply cannot say whether data follows: the stream is lost
      if (this.info.structuredReplies) fail(ErrorCode.NbdProtocol, 'simple reply to READ after structured replies were negotiated');
      // still pending while the payload arrives, so a connection lost mid-payload fails it
      const data = await this.#reader.read(p.length);
      this.#take(r.cookie);
      p.resolve(data);
      return;
    }
    this.#take(r.cookie);
    if (r.error !== 0) {
      p.reject(requestFailed(r.error, '', { command: commandNames[p.type], offset: p.offset, length: p.length }));
      return;
    }
    if (p.type === Command.BlockStatus) fail(ErrorCode.NbdProtocol, 'simple success reply to BLOCK_STATUS');
    p.resolve(undefined);
  }

  async #chunk(header: Buffer): Promise<void> {
    const h = decodeChunkHeader(header);
    if (h.length > chunkBytesMax) fail(ErrorCode.NbdProtocol, `structured reply chunk of ${h.length} bytes`);
    const p = this.#pending.get(h.cookie);
    if (p === undefined) fail(ErrorCode.NbdProtocol, `reply for unknown cookie ${h.cookie}`);
    const payload = await this.#reader.read(h.length);
    const c = decodeChunkPayload(h.type, payload);
    const end = p.offset + p.length;
    switch (c.type) {
      case 'offset-data':
      case 'offset-hole': {
        const size = c.type === 'offset-data' ? c.data.length : c.holeBytes;
        if (p.type !== Command.Read || c.offset < p.offset || c.offset + size > end) fail(ErrorCode.NbdProtocol, 'content chunk outside the request');
        p.data ??= Buffer.alloc(p.length);
        if (c.type === 'offset-data') c.data.copy(p.data, c.offset - p.offset);
        // holes are already zero in a fresh buffer
        p.covered += size;
        break;
      }
      case 'block-status':
        if (p.type !== Command.BlockStatus) fail(ErrorCode.NbdProtocol, 'block status chunk for another command');
        if (c.contextId === this.info.metaContextId) p.extents = c.extents;
        break;
      case 'error':
        p.error ??= requestFailed(c.error === 0 ? NbdErrno.EINVAL : c.error, c.message, {
          command: commandNames[p.type],
          offset: p.offset,
          length: p.length,
          ...(c.offset === undefined ? {} : { errorOffset: c.offset }),
        });
        break;
      case 'none':
        break;
      case 'unknown':
        // unknown error types still mean "failed"; anything else unknown means we cannot trust the stream
        if (!isErrorChunk(c.chunkType)) fail(ErrorCode.NbdProtocol, `unknown structured reply type ${c.chunkType}`);
        p.error ??= requestFailed(NbdErrno.EINVAL, `unknown error chunk type ${c.chunkType}`, { command: commandNames[p.type] });
        break;
    }
    if ((h.flags & ReplyFlag.Done) === 0) return;
    this.#take(h.cookie);
    if (p.error !== undefined) return p.reject(p.error);
    if (p.type === Command.Read) {
      if (p.covered !== p.length) fail(ErrorCode.NbdProtocol, `read reply covered ${p.covered} of ${p.length} bytes`);
      return p.resolve(p.data ?? Buffer.alloc(0));
    }
    if (p.type === Command.BlockStatus) {
      if (p.extents === undefined) fail(ErrorCode.NbdProtocol, 'block status reply without base:allocation extents');
      return p.resolve(p.extents);
    }
    p.resolve(undefined);
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (p === undefined) fail(ErrorCode.NbdProtocol, `reply for unknown cookie ${cookie}`);
    this.#pending.delete(cookie);
    return p;
  }

  #fail(e: StripvaultError): void {
    this.#failed ??= e;
    this.#reader.stop(e.message);
    for (const p of this.#pending.values()) p.reject(this.#failed);
    this.#pending.clear();
    if (e.code === ErrorCode.NbdProtocol) this.#socket.destroy();
  }
}

function connectSocket(address: NbdAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = 'path' in address ? net.connect({ path: address.path }) : net.connect({ host: address.host, port: address.port });
    s.once('connect', () => {
      s.off('error', reject);
      s.on('error', () => {});
      if (!('path' in address)) s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function withTimeout<T>(ms: number, what: string, socket: () => Duplex | undefined, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      socket()?.destroy();
      reject(new StripvaultError(ErrorCode.NbdConnectionClosed, `${what} timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function connectNbd(address: NbdAddress, exportName: string, opts: NbdClientOptions = {}): Promise<NbdClient> {
  let hs: ClientHandshake | undefined;
  let raw: net.Socket | undefined;
  const work = (async () => {
    raw = await connectSocket(address);
    hs = new ClientHandshake(raw);
    await hs.start();
    const info = await hs.negotiate(exportName, {
      structuredReplies: opts.structuredReplies ?? true,
      blockStatus: opts.blockStatus ?? true,
      tls: opts.tls,
    });
    return new NbdClient(hs.socket, hs.reader, info, opts.inflightMax ?? inflightPerConnectionMax);
  })();
  try {
    return await withTimeout(opts.connectTimeoutMs ?? connectTimeoutMsDefault, 'NBD connect', () => hs?.socket ?? raw, work);
  } catch (e) {
    hs?.socket.destroy();
    raw?.destroy();
    throw e;
  }
}

/** The exports a server lists (NBD_OPT_LIST), then a soft disconnect. */
export async function listNbdExports(
  address: NbdAddress,
  opts: { tls?: NbdClientTls; connectTimeoutMs?: number } = {},
): Promise<Array<{ name: string; description: string }>> {
  let raw: net.Socket | undefined;
  let hs: ClientHandshake | undefined;
  const work = (async () => {
    raw = await connectSocket(address);
    hs = new ClientHandshake(raw);
    await hs.start();
    if (opts.tls !== undefined) await hs.startTls(opts.tls);
    const list = await hs.list();
    await hs.abort();
    return list;
  })();
  try {
    return await withTimeout(opts.connectTimeoutMs ?? connectTimeoutMsDefault, 'NBD list', () => hs?.socket ?? raw, work);
  } catch (e) {
    hs?.socket.destroy();
    raw?.destroy();
    throw e;
  } finally {
    if (hs !== undefined) endGracefully(hs.socket, socketLingerMs);
  }
}
