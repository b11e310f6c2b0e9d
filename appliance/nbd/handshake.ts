/**
 * Server side of the fixed newstyle handshake: greeting, client flags, then
 * option haggling until the client enters transmission (GO / EXPORT_NAME),
 * aborts, or breaks the protocol. Never throws: every way out is an outcome.
 */
import { Duplex } from 'node:stream';
import { ErrorCode, isStripvaultError } from '../errors.ts';
import { checkExport } from './backend.ts';
import type { ExportRegistry, NbdExport } from './backend.ts';
import { ByteReader } from './byte-reader.ts';
import {
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  truncateText,
} from './codec.ts';
import type { NbdLog } from './events.ts';
import type { NbdPeer, NbdTlsMode } from './peer.ts';
import {
  ClientFlag,
  HandshakeFlag,
  InfoType,
  Option,
  Reply,
  TransmissionFlag,
  clientFlagsBytes,
  clientFlagsKnown,
  metaContextBaseAllocation,
  metaContextsMax,
  metaNamespaceBase,
  optionBytesMax,
  optionHeaderBytes,
  optionsPerHandshakeMax,
  requestBytesMax,
} from './protocol.ts';
import { send } from './wire.ts';

/** What a TLS upgrade proved about the peer, with the encrypted stream. */
export interface NbdTlsUpgrade {
  socket: Duplex;
  /** The client name from the client certificate, once checked against the CA and the registry. */
  clientName?: string;
  certificateSerial?: string;
}

export interface NbdTlsOptions {
  /**
   * off: NOTLS; optional: SELECTIVETLS with no TLS-only export; required: FORCEDTLS. The server
   * applies it to loopback peers only: everyone else gets 'required' (peer.ts, tlsModeFor).
   */
  mode: NbdTlsMode;
  /**
   * Runs the TLS handshake over the connection (after our ACK to STARTTLS) and
   * returns the encrypted stream, or the stream and the identity it proved
   * (tls.ts). It must settle: reject when the peer closes mid-handshake too
   * (node's TLSSocket may only emit 'end'), or the connection waits for the
   * handshake timeout. A rejection ends the connection before any export is seen.
   */
  upgrade?: (socket: Duplex, peer: NbdPeer) => Promise<Duplex | NbdTlsUpgrade>;
}

/** What a client is told while the key manager holds no master key (SV_SEALED). */
export const sealedMessage = 'stripvault is sealed: security officers must unseal it';

export interface Negotiated {
  socket: Duplex;
  reader: ByteReader;
  export: NbdExport;
  /** The name the client asked for (may be '' for the default export). */
  requestedName: string;
  structuredReplies: boolean;
  metaContextId: number | undefined;
  transmissionFlags: number;
  tls: boolean;
  peer: NbdPeer;
}

/** hard: destroy at once, nothing useful can still be sent (a failed TLS handshake). */
export type HandshakeOutcome = { kind: 'transmission'; negotiated: Negotiated } | { kind: 'close'; reason: string; hard?: boolean };

type Step = { kind: 'continue' } | HandshakeOutcome;

const next: Step = { kind: 'continue' };

/** The id we give base:allocation; any nonzero value would do, ids are per connection. */
const baseAllocationContextId = 1;

export function transmissionFlagsFor(e: NbdExport, structuredReplies: boolean): number {
  let f = TransmissionFlag.HasFlags | TransmissionFlag.SendFlush | TransmissionFlag.SendFua | TransmissionFlag.SendCache;
  if (e.readOnly) f |= TransmissionFlag.ReadOnly;
  // FAST_ZERO is advertised because answering it with a quick ENOTSUP is what the spec asks of a server that cannot promise speed
  else f |= TransmissionFlag.SendTrim | TransmissionFlag.SendWriteZeroes | TransmissionFlag.SendFastZero;
  if (e.multiConn) f |= TransmissionFlag.CanMultiConn;
  if (structuredReplies) f |= TransmissionFlag.SendDf;
  return f;
}

/** The maximum payload we advertise and enforce for an export. */
export function payloadBytesMaxFor(e: NbdExport): number {
  return Math.min(e.blockSizeMax, requestBytesMax);
}

type Lookup = { ok: true; export: NbdExport } | { ok: false; reply: number; message: string };

export class Handshake {
  #socket: Duplex;
  #reader: ByteReader;
  readonly #exports: ExportRegistry;
  readonly #tls: NbdTlsOptions;
  readonly #log: NbdLog;
  readonly #connection: number;
  #peer: NbdPeer;
  #fixed = false;
  #noZeroes = false;
  #tlsActive = false;
  #structured = false;
  #meta: { exportName: string; contextId: number } | undefined;
  #options = 0;
  #stopped = false;

  constructor(socket: Duplex, deps: { exports: ExportRegistry; tls: NbdTlsOptions; log: NbdLog; connection: number; peer: NbdPeer }) {
    this.#socket = socket;
    this.#peer = deps.peer;
    this.#reader = new ByteReader(socket);
    this.#exports = deps.exports;
    this.#tls = deps.tls;
    this.#log = deps.log;
    this.#connection = deps.connection;
  }

  /** The stream in use: the TLS stream once upgraded. */
  get socket(): Duplex {
    return this.#socket;
  }

  /** The peer as known so far: the identity is added by a successful STARTTLS. */
  get peer(): NbdPeer {
    return this.#peer;
  }

  /** Server shutdown: answer nothing more, give up waiting for the client. */
  stop(): void {
    this.#stopped = true;
    this.#reader.stop('server shutting down');
  }

  async run(): Promise<HandshakeOutcome> {
    try {
      return await this.#run();
    } catch (e) {
      if (isStripvaultError(e, ErrorCode.NbdConnectionClosed)) return { kind: 'close', reason: e.message };
      if (isStripvaultError(e, ErrorCode.NbdProtocol)) return this.#violation(e.message);
      // a bug must cost one connection, not the server
      this.#log({ event: 'protocol-violation', connection: this.#connection, message: `internal error in handshake: ${String(e)}` });
      return { kind: 'close', reason: 'internal error' };
    }
  }

  async #run(): Promise<HandshakeOutcome> {
    await send(this.#socket, encodeGreeting(HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes));
    const flags = decodeClientFlags(await this.#reader.read(clientFlagsBytes));
    if ((flags & ~clientFlagsKnown) !== 0) return this.#violation(`unknown client flags 0x${flags.toString(16)}`);
    this.#fixed = (flags & ClientFlag.FixedNewstyle) !== 0;
    this.#noZeroes = (flags & ClientFlag.NoZeroes) !== 0;
    // TLS needs fixed newstyle; a FORCEDTLS server has nothing to offer anyone else
    if (this.#tls.mode === 'required' && !this.#fixed) return this.#violation('TLS required but client did not set FIXED_NEWSTYLE');

    for (;;) {
      if (this.#stopped) return { kind: 'close', reason: 'server shutting down' };
      const header = decodeOptionHeader(await this.#reader.read(optionHeaderBytes));
      if (++this.#options > optionsPerHandshakeMax) return this.#violation(`more than ${optionsPerHandshakeMax} options`);
      if (header.length > optionBytesMax) {
        // refusing beats skipping: skipping would let a client stream gigabytes at us for free
        if (this.#fixed && header.option !== Option.ExportName) {
          await this.#error(header.option, Reply.ErrTooBig, `option data of ${header.length} bytes exceeds ${optionBytesMax}`);
        }
        return this.#violation(`option ${header.option} with ${header.length} bytes of data`);
      }
      const data = await this.#reader.read(header.length);
      if (!this.#fixed && header.option !== Option.ExportName) {
        return this.#violation(`option ${header.option} from a client without FIXED_NEWSTYLE`);
      }
      const step = await this.#option(header.option, data);
      if (step.kind !== 'continue') return step;
    }
  }

  async #option(option: number, data: Buffer): Promise<Step> {
    if (this.#stopped && option !== Option.Abort) return this.#error(option, Reply.ErrShutdown, 'server is shutting down');
    if (this.#tls.mode === 'required' && !this.#tlsActive && option !== Option.StartTls && option !== Option.Abort) {
      // EXPORT_NAME cannot carry an error, so the spec wants the session ended
      if (option === Option.ExportName) return this.#violation('EXPORT_NAME before TLS on a TLS-only server');
      return this.#error(option, Reply.ErrTlsReqd, 'this server requires TLS (NBD_OPT_STARTTLS) first');
    }
    switch (option) {
      case Option.ExportName:
        return this.#exportName(data);
      case Option.Abort:
        await this.#ack(option);
        return { kind: 'close', reason: 'client aborted the handshake' };
      case Option.List:
        return this.#list(data);
      case Option.StartTls:
        return this.#startTls(data);
      case Option.Info:
      case Option.Go:
        return this.#infoOrGo(option, data);
      case Option.StructuredReply:
        if (data.length !== 0) return this.#error(option, Reply.ErrInvalid, 'STRUCTURED_REPLY takes no data');
        this.#structured = true;
        return this.#ack(option);
      case Option.ListMetaContext:
      case Option.SetMetaContext:
        return this.#metaContext(option, data);
      default:
        return this.#error(option, Reply.ErrUnsup, `option ${option} is not supported`);
    }
  }

  async #exportName(data: Buffer): Promise<Step> {
    const name = decodeString(data, 'export name');
    const found = await this.#lookup(name);
    if (!found.ok) {
      this.#log({ event: 'export-refused', connection: this.#connection, export: name, message: found.message, detail: this.#who() });
      return { kind: 'close', reason: `EXPORT_NAME: ${found.message}` };
    }
    const flags = transmissionFlagsFor(found.export, this.#structured);
    await send(this.#socket, encodeExportNameReply(found.export.sizeBytes, flags, this.#noZeroes));
    return this.#enter(found.export, name, flags);
  }

  async #infoOrGo(option: number, data: Buffer): Promise<Step> {
    let req;
    try {
      req = decodeInfoRequest(data);
    } catch (e) {
      return this.#error(option, Reply.ErrInvalid, isStripvaultError(e) ? e.message : 'malformed request');
    }
    const found = await this.#lookup(req.name);
    if (!found.ok) {
      this.#log({ event: 'export-refused', connection: this.#connection, export: req.name, message: found.message, detail: this.#who() });
      return this.#error(option, found.reply, found.message);
    }
    const e = found.export;
    const flags = transmissionFlagsFor(e, this.#structured);
    const wanted = new Set(req.infoTypes);
    const replies = [
      encodeOptionReply(option, Reply.Info, encodeInfoReply({ type: 'export', sizeBytes: e.sizeBytes, transmissionFlags: flags })),
      // sent unasked too (as qemu-nbd does): a client that does not understand it must ignore it
      encodeOptionReply(
        option,
        Reply.Info,
        encodeInfoReply({ type: 'block-size', minimum: e.blockSizeMin, preferred: e.blockSizePreferred, maximum: payloadBytesMaxFor(e) }),
      ),
    ];
    if (wanted.has(InfoType.Name)) replies.push(encodeOptionReply(option, Reply.Info, encodeInfoReply({ type: 'name', name: e.name })));
    if (wanted.has(InfoType.Description) && e.description !== undefined) {
      replies.push(encodeOptionReply(option, Reply.Info, encodeInfoReply({ type: 'description', description: e.description })));
    }
    replies.push(encodeOptionReply(option, Reply.Ack));
    await send(this.#socket, replies);
    return option === Option.Go ? this.#enter(e, req.name, flags) : next;
  }

  async #list(data: Buffer): Promise<Step> {
    if (data.length !== 0) return this.#error(Option.List, Reply.ErrInvalid, 'LIST takes no data');
    let exports: NbdExport[];
    try {
      exports = await this.#exports.list(this.#peer);
    } catch (e) {
      this.#log({ event: 'export-refused', connection: this.#connection, message: `export list failed: ${String(e)}`, detail: this.#who() });
      if (isStripvaultError(e, ErrorCode.Sealed)) return this.#error(Option.List, Reply.ErrPolicy, sealedMessage);
      return this.#error(Option.List, Reply.ErrUnknown, 'export list unavailable');
    }
    const replies: Buffer[] = [];
    for (const e of exports) {
      if (!isServable(e)) continue;
      replies.push(encodeOptionReply(Option.List, Reply.Server, encodeServerReply(e.name, e.description)));
    }
    replies.push(encodeOptionReply(Option.List, Reply.Ack));
    await send(this.#socket, replies);
    return next;
  }

  async #startTls(data: Buffer): Promise<Step> {
    const option = Option.StartTls;
    if (data.length !== 0) return this.#error(option, Reply.ErrInvalid, 'STARTTLS takes no data');
    if (this.#tlsActive) return this.#error(option, Reply.ErrInvalid, 'TLS is already active');
    if (this.#tls.mode === 'off') return this.#error(option, Reply.ErrPolicy, 'TLS is not offered on this server');
    const upgrade = this.#tls.upgrade;
    if (upgrade === undefined) return this.#error(option, Reply.ErrPlatform, 'TLS is not configured');
    await this.#ack(option);
    const early = this.#reader.detach();
    // the client must wait for our ACK before its ClientHello; bytes already here are not TLS we can hand over
    if (early.length !== 0) return this.#violation('data sent after STARTTLS before its reply');
    let upgraded: NbdTlsUpgrade;
    try {
      const result = await upgrade(this.#socket, this.#peer);
      upgraded = result instanceof Duplex ? { socket: result } : result;
    } catch (e) {
      const detail = isStripvaultError(e) ? { ...e.detail, code: e.code } : undefined;
      this.#log({ event: 'tls-upgrade-failed', connection: this.#connection, message: String(e), detail });
      return { kind: 'close', reason: 'TLS handshake failed', hard: true };
    }
    this.#socket = upgraded.socket;
    this.#peer = {
      remoteAddress: this.#peer.remoteAddress,
      loopback: this.#peer.loopback,
      tls: true,
      ...(upgraded.clientName === undefined ? {} : { clientName: upgraded.clientName }),
      ...(upgraded.certificateSerial === undefined ? {} : { certificateSerial: upgraded.certificateSerial }),
    };
    this.#socket.on('error', () => {});
    this.#reader = new ByteReader(this.#socket);
    this.#tlsActive = true;
    // the spec forbids carrying negotiation state across the upgrade (a MitM may have sent it)
    this.#structured = false;
    this.#meta = undefined;
    return next;
  }

  async #metaContext(option: number, data: Buffer): Promise<Step> {
    const set = option === Option.SetMetaContext;
    if (set) this.#meta = undefined; // replaced even when the request fails
    if (set && !this.#structured) return this.#error(option, Reply.ErrInvalid, 'SET_META_CONTEXT needs structured replies first');
    let req;
    try {
      req = decodeMetaContextRequest(data);
    } catch (e) {
      return this.#error(option, Reply.ErrInvalid, isStripvaultError(e) ? e.message : 'malformed request');
    }
    if (req.queries.length > metaContextsMax) {
      return this.#error(option, Reply.ErrTooBig, `more than ${metaContextsMax} metadata context queries`);
    }
    const found = await this.#lookup(req.name);
    if (!found.ok) return this.#error(option, found.reply, found.message);
    const selected = set
      ? req.queries.includes(metaContextBaseAllocation)
      : req.queries.length === 0 || req.queries.some((q) => q === metaNamespaceBase || q === metaContextBaseAllocation);
    const replies: Buffer[] = [];
    if (selected) {
      const id = set ? baseAllocationContextId : 0;
      replies.push(encodeOptionReply(option, Reply.MetaContext, encodeMetaContextReply(id, metaContextBaseAllocation)));
      if (set) this.#meta = { exportName: req.name, contextId: id };
    }
    replies.push(encodeOptionReply(option, Reply.Ack));
    await send(this.#socket, replies);
    return next;
  }

  #enter(e: NbdExport, requestedName: string, transmissionFlags: number): Step {
    const meta = this.#meta !== undefined && this.#meta.exportName === requestedName ? this.#meta.contextId : undefined;
    return {
      kind: 'transmission',
      negotiated: {
        socket: this.#socket,
        reader: this.#reader,
        export: e,
        requestedName,
        structuredReplies: this.#structured,
        metaContextId: meta,
        transmissionFlags,
        tls: this.#tlsActive,
        peer: this.#peer,
      },
    };
  }

  async #lookup(name: string): Promise<Lookup> {
    let e: NbdExport | undefined;
    try {
      e = await this.#exports.get(name, this.#peer);
    } catch (err) {
      if (isStripvaultError(err, ErrorCode.Sealed)) return { ok: false, reply: Reply.ErrPolicy, message: sealedMessage };
      return { ok: false, reply: Reply.ErrUnknown, message: `export "${name}" unavailable: ${isStripvaultError(err) ? err.code : 'error'}` };
    }
    if (e === undefined) return { ok: false, reply: Reply.ErrUnknown, message: `no export named "${name}"` };
    if (!isServable(e)) {
      this.#log({ event: 'export-refused', connection: this.#connection, export: e.name, message: 'export geometry breaks the NBD size rules' });
      return { ok: false, reply: Reply.ErrUnknown, message: `export "${name}" is misconfigured` };
    }
    return { ok: true, export: e };
  }

  async #ack(option: number): Promise<Step> {
    await send(this.#socket, encodeOptionReply(option, Reply.Ack));
    return next;
  }

  async #error(option: number, reply: number, message: string): Promise<Step> {
    await send(this.#socket, encodeOptionReply(option, reply, truncateText(message)));
    return next;
  }

  /** For logs: who was refused (never a secret: names and serials are public in certificates). */
  #who(): Record<string, unknown> {
    const p = this.#peer;
    return { remote: p.remoteAddress, tls: p.tls, ...(p.clientName === undefined ? {} : { clientName: p.clientName, serial: p.certificateSerial }) };
  }

  #violation(message: string): HandshakeOutcome {
    this.#log({ event: 'protocol-violation', connection: this.#connection, message });
    return { kind: 'close', reason: message };
  }
}

function isServable(e: NbdExport): boolean {
  try {
    checkExport(e);
    return true;
  } catch {
    return false;
  }
}
