/**
 * Pulls exact-length frames out of a byte stream, holding a bounded amount.
 *
 * The protocol is read with `await reader.read(n)`; the reader keeps at most
 * max(n, readAheadBytes) plus one socket chunk, and pauses the stream while it
 * holds more than readAheadBytes that nobody asked for. That pause is the
 * back-pressure: a session that stops asking stops its peer (TCP window).
 */
import type { Duplex, Readable } from 'node:stream';
import { ErrorCode, StripvaultError, assert } from '../errors.ts';
import { copyBytes } from '../split/native-seal.ts';
import { readAheadBytesMax } from './protocol.ts';

export class ByteReader {
  readonly #stream: Readable;
  readonly #readAheadBytes: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #pending: { bytes: number; resolve: (b: Buffer) => void; reject: (e: Error) => void; into: ((bytes: number) => Buffer) | undefined } | undefined;
  #closed: Error | undefined;
  readonly #onData = (chunk: Buffer): void => this.#push(chunk);
  // after 'end' whole frames already read ahead are still served: a peer may half-close and wait for replies
  readonly #onEnd = (): void => this.#close('peer closed the connection', true);
  readonly #onClose = (): void => this.#close('connection closed', true);
  readonly #onError = (e: Error): void => this.#close(`connection error: ${e.message}`, false);

  constructor(stream: Readable | Duplex, readAheadBytes: number = readAheadBytesMax) {
    this.#stream = stream;
    this.#readAheadBytes = readAheadBytes;
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onClose);
    stream.on('error', this.#onError);
  }

  get bufferedBytes(): number {
    return this.#buffered;
  }

  /**
   * Exactly `bytes` bytes; rejects with SV_NBD_CONNECTION_CLOSED if the stream ends first. One read
   * at a time. With `into`, the bytes are copied into the buffer it makes (of exactly `bytes`), so
   * the caller decides where a payload lives; otherwise they may be a view of a received chunk.
   */
  read(bytes: number, into?: (bytes: number) => Buffer): Promise<Buffer> {
    assert(this.#pending === undefined, 'ByteReader: one read at a time');
    assert(Number.isSafeInteger(bytes) && bytes >= 0, 'ByteReader: byte count must be a non-negative integer');
    if (this.#buffered >= bytes) {
      const b = this.#take(bytes, into);
      this.#flow();
      return Promise.resolve(b);
    }
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending = { bytes, resolve, reject, into };
      this.#flow();
    });
  }

  /**
   * As read(), when the bytes are already here: the frame now, without a promise; undefined when
   * they are not (then read() waits for them). Nothing is consumed on undefined.
   */
  readNow(bytes: number, into?: (bytes: number) => Buffer): Buffer | undefined {
    assert(this.#pending === undefined, 'ByteReader: one read at a time');
    assert(Number.isSafeInteger(bytes) && bytes >= 0, 'ByteReader: byte count must be a non-negative integer');
    if (this.#buffered < bytes) return undefined;
    const b = this.#take(bytes, into);
    this.#flow();
    return b;
  }

  /** Fails the pending read (if any) and every later one: the session is done with this stream. */
  stop(reason: string): void {
    this.#close(reason, false);
  }

  /**
   * Stops listening to the stream (before a TLS upgrade takes it over) and
   * returns what was read ahead, which the caller must account for.
   */
  detach(): Buffer {
    assert(this.#pending === undefined, 'ByteReader: detach with a read pending');
    this.#stream.pause();
    this.#stream.off('data', this.#onData);
    this.#stream.off('end', this.#onEnd);
    this.#stream.off('close', this.#onClose);
    this.#stream.off('error', this.#onError);
    const rest = this.#take(this.#buffered);
    this.#closed = new StripvaultError(ErrorCode.NbdConnectionClosed, 'reader detached');
    return rest;
  }

  #push(chunk: Buffer): void {
    // after stop() the session has given up on the stream; holding more would only grow
    if (this.#closed !== undefined) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const p = this.#pending;
    if (p !== undefined && this.#buffered >= p.bytes) {
      this.#pending = undefined;
      p.resolve(this.#take(p.bytes, p.into));
    }
    this.#flow();
  }

  #flow(): void {
    if (this.#closed !== undefined) return;
    const wanted = this.#pending === undefined ? 0 : this.#pending.bytes;
    if (this.#buffered >= Math.max(wanted, this.#readAheadBytes)) this.#stream.pause();
    else this.#stream.resume();
  }

  #take(bytes: number, into?: (bytes: number) => Buffer): Buffer {
    if (bytes === 0) return into ? into(0) : Buffer.alloc(0);
    const first = this.#chunks[0];
    assert(first !== undefined, 'ByteReader: take from empty buffer');
    if (first.length >= bytes && into === undefined) {
      // the common case (small headers out of a large chunk) costs no copy
      const out = first.subarray(0, bytes);
      if (first.length === bytes) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(bytes);
      this.#buffered -= bytes;
      return out;
    }
    const parts: Buffer[] = [];
    let left = bytes;
    while (left > 0) {
      const c = this.#chunks[0];
      assert(c !== undefined, 'ByteReader: buffered count out of step');
      if (c.length <= left) {
        parts.push(c);
        this.#chunks.shift();
        left -= c.length;
      } else {
        parts.push(c.subarray(0, left));
        this.#chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.#buffered -= bytes;
    if (into === undefined) return Buffer.concat(parts, bytes);
    const out = into(bytes);
    assert(out.length === bytes, 'ByteReader: a destination of the wrong size');
    let at = 0;
    for (const part of parts) {
      copyBytes(out, at, part);
      at += part.length;
    }
    return out;
  }

  #close(reason: string, keepBuffered: boolean): void {
    if (this.#closed === undefined) this.#closed = new StripvaultError(ErrorCode.NbdConnectionClosed, reason);
    if (!keepBuffered) {
      this.#chunks = [];
      this.#buffered = 0;
    }
    const p = this.#pending;
    // nothing more will arrive, so a read the buffer cannot satisfy never will be
    if (p !== undefined && this.#buffered < p.bytes) {
      this.#pending = undefined;
      p.reject(this.#closed);
    }
  }
}
