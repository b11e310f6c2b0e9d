/**
 * Client side of the fixed newstyle handshake, sharing the codec with the
 * server: STARTTLS (optional), STRUCTURED_REPLY, SET_META_CONTEXT
 * base:allocation, then GO (falling back to EXPORT_NAME on old servers).
 */
import type { Duplex } from 'node:stream';
import { ErrorCode, StripvaultError, fail } from '../errors.ts';
import { ByteReader } from './byte-reader.ts';
import {
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  encodeString,
} from './codec.ts';
import {
  ClientFlag,
  HandshakeFlag,
  InfoType,
  Option,
  Reply,
  TransmissionFlag,
  exportNameReplyBytes,
  exportNameZeroesBytes,
  greetingBytes,
  isErrorReply,
  metaContextBaseAllocation,
  optionBytesMax,
  optionReplyHeaderBytes,
  requestBytesMax,
} from './protocol.ts';
import { send } from './wire.ts';

export interface NbdClientTls {
  upgrade: (socket: Duplex) => Promise<Duplex>;
  /** Refuse to go on in plain text if the server will not upgrade (default true). */
  required?: boolean;
}

export interface ClientHandshakeOptions {
  structuredReplies: boolean;
  blockStatus: boolean;
  tls: NbdClientTls | undefined;
}

export interface NbdExportInfo {
  /** The server's canonical name if it told us, else the name we asked for. */
  name: string;
  description: string | undefined;
  sizeBytes: number;
  transmissionFlags: number;
  blockSizeMin: number;
  blockSizePreferred: number;
  blockSizeMax: number;
  readOnly: boolean;
  canFlush: boolean;
  canFua: boolean;
  canTrim: boolean;
  canWriteZeroes: boolean;
  canFastZero: boolean;
  canCache: boolean;
  canDf: boolean;
  canMultiConn: boolean;
  structuredReplies: boolean;
  /** The base:allocation context id, when block status is available. */
  metaContextId: number | undefined;
  tls: boolean;
}

interface OptionReply {
  replyType: number;
  data: Buffer;
}

/** Defaults the spec tells a client to assume when the server sends no NBD_INFO_BLOCK_SIZE. */
const defaultBlockSizeMin = 1;
const defaultBlockSizePreferred = 4096;

export class ClientHandshake {
  socket: Duplex;
  reader: ByteReader;
  #noZeroes = false;

  constructor(socket: Duplex) {
    this.socket = socket;
    this.reader = new ByteReader(socket);
  }

  /** Greeting and client flags; after this, options may be sent. */
  async start(): Promise<void> {
    const { handshakeFlags } = decodeGreeting(await this.reader.read(greetingBytes));
    if ((handshakeFlags & HandshakeFlag.FixedNewstyle) === 0) fail(ErrorCode.NbdProtocol, 'server does not speak fixed newstyle NBD');
    this.#noZeroes = (handshakeFlags & HandshakeFlag.NoZeroes) !== 0;
    await send(this.socket, encodeClientFlags(ClientFlag.FixedNewstyle | (this.#noZeroes ? ClientFlag.NoZeroes : 0)));
  }

  async negotiate(exportName: string, opts: ClientHandshakeOptions): Promise<NbdExportInfo> {
    encodeString(exportName, 'export name');
    let tls = false;
    if (opts.tls !== undefined) tls = await this.startTls(opts.tls);

    let structured = false;
    if (opts.structuredReplies) {
      const r = await this.#single(Option.StructuredReply);
      structured = r.replyType === Reply.Ack;
    }
    let metaContextId: number | undefined;
    if (structured && opts.blockStatus) metaContextId = await this.#selectBaseAllocation(exportName);

    const infos = await this.#go(exportName);
    if (infos === undefined) {
      // a server from before GO: EXPORT_NAME cannot report errors, it just hangs up
      await send(this.socket, encodeOptionRequest(Option.ExportName, Buffer.from(exportName, 'utf8')));
      const reply = await this.reader.read(exportNameReplyBytes + (this.#noZeroes ? 0 : exportNameZeroesBytes));
      const r = decodeExportNameReply(reply);
      return makeInfo({ name: exportName, sizeBytes: r.sizeBytes, transmissionFlags: r.transmissionFlags, structured, metaContextId, tls });
    }
    return makeInfo({ ...infos, structured, metaContextId, tls, name: infos.name ?? exportName });
  }

  async list(): Promise<Array<{ name: string; description: string }>> {
    await send(this.socket, encodeOptionRequest(Option.List));
    const out: Array<{ name: string; description: string }> = [];
    for (;;) {
      const r = await this.#reply(Option.List);
      if (r.replyType === Reply.Ack) return out;
      if (r.replyType === Reply.Server) out.push(decodeServerReply(r.data));
      else if (isErrorReply(r.replyType)) throw refused(Option.List, r);
    }
  }

  async abort(): Promise<void> {
    await send(this.socket, encodeOptionRequest(Option.Abort));
  }

  /** Upgrades to TLS; false if the server declined and TLS was not required. */
  async startTls(tls: NbdClientTls): Promise<boolean> {
    const r = await this.#single(Option.StartTls);
    if (r.replyType !== Reply.Ack) {
      if (tls.required ?? true) throw refused(Option.StartTls, r);
      return false;
    }
    if (this.reader.detach().length !== 0) fail(ErrorCode.NbdProtocol, 'server sent data after acknowledging STARTTLS');
    this.socket = await tls.upgrade(this.socket);
    this.socket.on('error', () => {});
    this.reader = new ByteReader(this.socket);
    return true;
  }

  async #selectBaseAllocation(exportName: string): Promise<number | undefined> {
    await send(this.socket, encodeOptionRequest(Option.SetMetaContext, encodeMetaContextRequest({ name: exportName, queries: [metaContextBaseAllocation] })));
    let id: number | undefined;
    for (;;) {
      const r = await this.#reply(Option.SetMetaContext);
      if (r.replyType === Reply.Ack) return id;
      if (r.replyType === Reply.MetaContext) {
        const m = decodeMetaContextReply(r.data);
        if (m.name === metaContextBaseAllocation) id = m.contextId;
      } else if (isErrorReply(r.replyType)) {
        // block status is an optimisation; a server that cannot offer it is still usable
        return undefined;
      }
    }
  }

  async #go(exportName: string): Promise<GoInfo | undefined> {
    const data = encodeInfoRequest({ name: exportName, infoTypes: [InfoType.BlockSize, InfoType.Name, InfoType.Description] });
    await send(this.socket, encodeOptionRequest(Option.Go, data));
    const got: Partial<GoInfo> = {};
    for (;;) {
      const r = await this.#reply(Option.Go);
      if (r.replyType === Reply.Ack) {
        if (got.sizeBytes === undefined || got.transmissionFlags === undefined) fail(ErrorCode.NbdProtocol, 'GO succeeded without NBD_INFO_EXPORT');
        return got as GoInfo;
      }
      if (r.replyType === Reply.ErrUnsup) return undefined;
      if (isErrorReply(r.replyType)) throw refused(Option.Go, r, exportName);
      if (r.replyType !== Reply.Info) continue;
      const info = decodeInfoReply(r.data);
      switch (info.type) {
        case 'export':
          got.sizeBytes = info.sizeBytes;
          got.transmissionFlags = info.transmissionFlags;
          break;
        case 'name':
          got.name = info.name;
          break;
        case 'description':
          got.description = info.description;
          break;
        case 'block-size':
          got.blockSizeMin = info.minimum;
          got.blockSizePreferred = info.preferred;
          got.blockSizeMax = info.maximum;
          break;
        case 'unknown':
          break;
      }
    }
  }

  async #single(option: number): Promise<OptionReply> {
    await send(this.socket, encodeOptionRequest(option));
    return this.#reply(option);
  }

  async #reply(option: number): Promise<OptionReply> {
    const h = decodeOptionReplyHeader(await this.reader.read(optionReplyHeaderBytes));
    if (h.option !== option) fail(ErrorCode.NbdProtocol, `reply for option ${h.option} while waiting for ${option}`);
    if (h.length > optionBytesMax) fail(ErrorCode.NbdProtocol, `option reply of ${h.length} bytes`);
    return { replyType: h.replyType, data: await this.reader.read(h.length) };
  }
}

interface GoInfo {
  sizeBytes: number;
  transmissionFlags: number;
  name?: string;
  description?: string;
  blockSizeMin?: number;
  blockSizePreferred?: number;
  blockSizeMax?: number;
}

const replyNames: Record<number, string> = {
  [Reply.ErrUnsup]: 'NBD_REP_ERR_UNSUP',
  [Reply.ErrPolicy]: 'NBD_REP_ERR_POLICY',
  [Reply.ErrInvalid]: 'NBD_REP_ERR_INVALID',
  [Reply.ErrPlatform]: 'NBD_REP_ERR_PLATFORM',
  [Reply.ErrTlsReqd]: 'NBD_REP_ERR_TLS_REQD',
  [Reply.ErrUnknown]: 'NBD_REP_ERR_UNKNOWN',
  [Reply.ErrShutdown]: 'NBD_REP_ERR_SHUTDOWN',
  [Reply.ErrBlockSizeReqd]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
  [Reply.ErrTooBig]: 'NBD_REP_ERR_TOO_BIG',
};

function refused(option: number, r: OptionReply, exportName?: string): StripvaultError {
  const reply = replyNames[r.replyType] ?? `reply ${r.replyType}`;
  const text = r.data.toString('utf8');
  return new StripvaultError(ErrorCode.NbdRefused, `server refused option ${option}: ${reply}${text === '' ? '' : ` (${text})`}`, {
    option,
    reply,
    replyType: r.replyType,
    ...(exportName === undefined ? {} : { export: exportName }),
  });
}

function makeInfo(x: GoInfo & { name: string; structured: boolean; metaContextId: number | undefined; tls: boolean }): NbdExportInfo {
  const f = x.transmissionFlags;
  const has = (bit: number): boolean => (f & bit) !== 0;
  if (!has(TransmissionFlag.HasFlags)) fail(ErrorCode.NbdProtocol, 'transmission flags without HAS_FLAGS');
  const blockSizeMin = x.blockSizeMin ?? defaultBlockSizeMin;
  const blockSizePreferred = x.blockSizePreferred ?? defaultBlockSizePreferred;
  return {
    name: x.name,
    description: x.description,
    sizeBytes: x.sizeBytes,
    transmissionFlags: f,
    blockSizeMin,
    blockSizePreferred,
    // the spec's interoperable maximum when the server does not say
    blockSizeMax: Math.min(x.blockSizeMax ?? requestBytesMax, requestBytesMax),
    readOnly: has(TransmissionFlag.ReadOnly),
    canFlush: has(TransmissionFlag.SendFlush),
    canFua: has(TransmissionFlag.SendFua),
    canTrim: has(TransmissionFlag.SendTrim),
    canWriteZeroes: has(TransmissionFlag.SendWriteZeroes),
    canFastZero: has(TransmissionFlag.SendFastZero),
    canCache: has(TransmissionFlag.SendCache),
    canDf: has(TransmissionFlag.SendDf),
    canMultiConn: has(TransmissionFlag.CanMultiConn),
    structuredReplies: x.structured,
    metaContextId: x.metaContextId,
    tls: x.tls,
  };
}
