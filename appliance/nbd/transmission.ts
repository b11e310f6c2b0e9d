/**
 * Transmission phase: read requests, validate each in full, run up to
 * inflightPerConnectionMax of them concurrently against the export, reply in
 * completion order with the request's cookie. When the budget is spent we stop
 * reading, and the socket's receive window closes on the client.
 */
import type { Duplex } from 'node:stream';
import { ErrorCode, fail, isStripvaultError } from '../errors.ts';
import type { NbdExport } from './backend.ts';
import type { ByteReader } from './byte-reader.ts';
import { Budget } from './budget.ts';
import {
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataChunk,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
} from './codec.ts';
import type { Extent, NbdRequest } from './codec.ts';
import { NbdRequestError, errnoName, toWireError } from './errors.ts';
import type { NbdLog } from './events.ts';
import { payloadBytesMaxFor } from './handshake.ts';
import { sharedBuffers } from '../split/shared-buffers.ts';

/** WRITE payloads at least this large are received into shared buffers (see #serve's caller). */
const sharedPayloadBytesMin = 64 * 1024;
import type { Negotiated } from './handshake.ts';
import { isZero } from './is-zero.ts';
import {
  Command,
  CommandFlag,
  NbdErrno,
  ReplyFlag,
  blockStatusExtentsMax,
  inflightBytesPerConnectionMax,
  inflightPerConnectionMax,
  requestBytesMax,
  requestHeaderBytes,
} from './protocol.ts';
import { commandNames, validateRequest } from './validate.ts';
import type { TransmissionContext } from './validate.ts';
import { send } from './wire.ts';

/** What a successful command sends back besides "no error". */
type Result = { kind: 'none' } | { kind: 'data'; data: Buffer } | { kind: 'extents'; extents: Extent[] };

const none: Result = { kind: 'none' };
/** Where a large WRITE payload is read to (one function, not a closure per request). */
const takeShared = (n: number): Buffer => sharedBuffers.take(n);

export class Transmission {
  readonly #socket: Duplex;
  readonly #reader: ByteReader;
  readonly #export: NbdExport;
  readonly #ctx: TransmissionContext;
  readonly #log: NbdLog;
  readonly #connection: number;
  readonly #budget = new Budget(inflightPerConnectionMax, inflightBytesPerConnectionMax);
  #stopped = false;

  constructor(n: Negotiated, deps: { log: NbdLog; connection: number }) {
    this.#socket = n.socket;
    this.#reader = n.reader;
    this.#export = n.export;
    this.#ctx = {
      sizeBytes: n.export.sizeBytes,
      blockSizeMin: n.export.blockSizeMin,
      payloadBytesMax: payloadBytesMaxFor(n.export),
      readOnly: n.export.readOnly,
      structuredReplies: n.structuredReplies,
      metaContextId: n.metaContextId,
    };
    this.#log = deps.log;
    this.#connection = deps.connection;
  }

  /** Requests in flight; for tests and metrics. */
  get inflight(): number {
    return this.#budget.count;
  }

  /** Server shutdown: take no new requests; those in flight still get their replies. */
  stop(): void {
    this.#stopped = true;
    this.#reader.stop('server shutting down');
  }

  /** Resolves (never rejects) with why the phase ended, once every accepted request has been answered. */
  async run(): Promise<string> {
    let reason: string;
    try {
      reason = await this.#readLoop();
    } catch (e) {
      if (this.#stopped) reason = 'server shutting down';
      else if (isStripvaultError(e, ErrorCode.NbdConnectionClosed)) reason = e.message;
      else {
        reason = isStripvaultError(e, ErrorCode.NbdProtocol) ? e.message : `internal error: ${String(e)}`;
        this.#log({ event: 'protocol-violation', connection: this.#connection, message: reason });
      }
    }
    this.#reader.stop(reason);
    await this.#budget.idle();
    return reason;
  }

  async #readLoop(): Promise<string> {
    // Each step is tried without a promise first (readNow, hasSlot, tryAcquire): at a deep queue the
    // requests are usually buffered and within budget, and four promises per request were garbage.
    for (;;) {
      if (!this.#budget.hasSlot()) await this.#budget.slot();
      if (this.#stopped) return 'server shutting down';
      const req = decodeRequest(this.#reader.readNow(requestHeaderBytes) ?? (await this.#reader.read(requestHeaderBytes)));
      // DISC: answer what is in flight (run() waits for it), read nothing more
      if (req.type === Command.Disc) return 'client disconnected';
      if (req.type === Command.Write && req.length > requestBytesMax) {
        // we cannot skip a payload that large without taking it; the spec lets us call it a denial of service
        fail(ErrorCode.NbdProtocol, `WRITE of ${req.length} bytes exceeds ${requestBytesMax}`);
      }
      const bytes = req.type === Command.Write || req.type === Command.Read ? Math.min(req.length, requestBytesMax) : 0;
      if (!this.#budget.tryAcquire(bytes)) await this.#budget.acquire(bytes);
      let payload: Buffer | undefined;
      // A large payload goes straight into reusable shared memory: the seal workers read it where
      // it is, and it is given back once the write is answered (the volume is done with it then).
      const pooled = req.type === Command.Write && req.length >= sharedPayloadBytesMin;
      try {
        if (req.type === Command.Write) {
          const into = pooled ? takeShared : undefined;
          payload = this.#reader.readNow(req.length, into) ?? (await this.#reader.read(req.length, into));
        }
      } catch (e) {
        this.#budget.release(bytes);
        throw e;
      }
      // #serve does not reject; if it ever did, the payload and the budget must still come back.
      void this.#serve(req, payload).then((ok) => ok, () => false).then((ok) => {
        try {
          if (pooled && payload !== undefined) {
            // Refused (a closed or failed volume, a bad request): the plaintext was never taken in
            // and its volume may already be gone — the pool's wipe at close cannot see it any more.
            if (!ok) payload.fill(0);
            sharedBuffers.give(payload);
          }
        } finally {
          this.#budget.release(bytes);
        }
      });
    }
  }

  /** Never rejects: every outcome becomes a reply (or nothing, if the client is gone). True if the request succeeded. */
  async #serve(req: NbdRequest, payload: Buffer | undefined): Promise<boolean> {
    let result: Result;
    try {
      const invalid = validateRequest(req, this.#ctx);
      if (invalid !== undefined) throw invalid;
      result = await this.#execute(req, payload);
    } catch (e) {
      const wire = toWireError(e);
      if (!(e instanceof NbdRequestError)) {
        this.#log({
          event: 'request-failed',
          connection: this.#connection,
          export: this.#export.name,
          message: wire.message,
          detail: { command: commandNames[req.type], offset: req.offset, length: req.length, errno: errnoName(wire.errno) },
        });
      }
      const reply = this.#ctx.structuredReplies
        ? encodeErrorChunk(req.cookie, ReplyFlag.Done, wire.errno, wire.message)
        : encodeSimpleReply(wire.errno, req.cookie);
      await send(this.#socket, reply);
      return false;
    }
    await send(this.#socket, this.#encode(req, result));
    return true;
  }

  async #execute(req: NbdRequest, payload: Buffer | undefined): Promise<Result> {
    const e = this.#export;
    const fua = (req.flags & CommandFlag.Fua) !== 0;
    // zero-length requests are legal but unspecified; succeeding without touching the backend is the least surprise
    if (req.length === 0 && req.type !== Command.Flush) return req.type === Command.Read ? { kind: 'data', data: Buffer.alloc(0) } : none;
    switch (req.type) {
      case Command.Read: {
        const data = await e.read(req.offset, req.length);
        // a short read sent as a full one would desynchronise the stream (simple replies carry no length)
        if (data.length !== req.length) fail(ErrorCode.DeviceIo, `backend returned ${data.length} bytes for a ${req.length}-byte read`);
        return { kind: 'data', data };
      }
      case Command.Write:
        await e.write(req.offset, payload ?? Buffer.alloc(0), { fua });
        return none;
      case Command.Flush:
        await e.flush();
        return none;
      case Command.Trim:
        await e.trim(req.offset, req.length, { fua });
        return none;
      case Command.Cache:
        if (e.cache !== undefined) await e.cache(req.offset, req.length);
        return none;
      case Command.WriteZeroes:
        await e.writeZeroes(req.offset, req.length, { fua, noHole: (req.flags & CommandFlag.NoHole) !== 0 });
        return none;
      case Command.BlockStatus:
        return { kind: 'extents', extents: await this.#extents(req) };
      default:
        throw new NbdRequestError(NbdErrno.EINVAL, `unknown command ${req.type}`);
    }
  }

  /**
   * Backend extents trimmed to what the spec allows: consecutive from the
   * request offset, none past the requested range, at most 2^20, exactly one
   * under REQ_ONE. A backend without block status reports "allocated, not
   * known zero" (flags 0), which the spec says is always safe.
   */
  async #extents(req: NbdRequest): Promise<Extent[]> {
    const raw = this.#export.blockStatus === undefined ? [{ length: req.length, flags: 0 }] : await this.#export.blockStatus(req.offset, req.length);
    const max = (req.flags & CommandFlag.ReqOne) !== 0 ? 1 : blockStatusExtentsMax;
    const out: Extent[] = [];
    let left = req.length;
    for (const x of raw) {
      if (left === 0 || out.length === max) break;
      if (!Number.isSafeInteger(x.length) || x.length <= 0) break;
      const length = Math.min(x.length, left);
      out.push({ length, flags: x.flags >>> 0 });
      left -= length;
    }
    if (out.length === 0) fail(ErrorCode.DeviceIo, 'backend returned no usable block status extents');
    return out;
  }

  #encode(req: NbdRequest, result: Result): Buffer[] {
    const done = ReplyFlag.Done;
    switch (result.kind) {
      case 'none':
        return [encodeSimpleReply(0, req.cookie)];
      case 'extents':
        return [encodeBlockStatusChunk(req.cookie, done, this.#ctx.metaContextId ?? 0, result.extents)];
      case 'data': {
        const data = result.data;
        if (!this.#ctx.structuredReplies) return [encodeSimpleReply(0, req.cookie), data];
        if (data.length === 0) return [encodeNoneChunk(req.cookie, done)];
        // an all-zero read costs 32 bytes on the wire instead of its length; still a single content chunk, so DF is honoured
        if (isZero(data)) return [encodeOffsetHoleChunk(req.cookie, done, req.offset, data.length)];
        return encodeOffsetDataChunk(req.cookie, done, req.offset, data);
      }
    }
  }
}
