/**
 * One client connection, over any Duplex: the handshake, then transmission,
 * then a clean close. The session owns the connection's lifetime; the server
 * only counts sessions and asks them to shut down.
 */
import type { Duplex } from 'node:stream';
import type { ExportRegistry } from './backend.ts';
import type { NbdLog } from './events.ts';
import type { NbdPeer } from './peer.ts';
import { Handshake } from './handshake.ts';
import type { HandshakeOutcome, NbdTlsOptions } from './handshake.ts';
import { socketLingerMs } from './protocol.ts';
import { Transmission } from './transmission.ts';
import { endGracefully } from './wire.ts';

export interface SessionOptions {
  exports: ExportRegistry;
  tls: NbdTlsOptions;
  log: NbdLog;
  /** Connection number, for logs. */
  connection: number;
  remote: string;
  /** Who connected, before TLS; the handshake adds what a client certificate proves. */
  peer: NbdPeer;
  handshakeTimeoutMs: number;
}

export type SessionPhase = 'handshake' | 'transmission' | 'closing';

export class NbdSession {
  /** Resolves once the connection is closed (the server stops counting it then). */
  readonly closed: Promise<void>;
  readonly #raw: Duplex;
  readonly #opts: SessionOptions;
  readonly #handshake: Handshake;
  #transmission: Transmission | undefined;
  #phase: SessionPhase = 'handshake';
  #shuttingDown = false;
  #markClosed!: () => void;

  constructor(socket: Duplex, opts: SessionOptions) {
    this.#raw = socket;
    this.#opts = opts;
    this.closed = new Promise<void>((resolve) => {
      this.#markClosed = resolve;
    });
    // an unhandled 'error' event would take the whole process down
    socket.on('error', () => {});
    socket.once('close', () => this.#markClosed());
    this.#handshake = new Handshake(socket, { exports: opts.exports, tls: opts.tls, log: opts.log, connection: opts.connection, peer: opts.peer });
    void this.#run();
  }

  get phase(): SessionPhase {
    return this.#phase;
  }

  /**
   * Graceful where it matters: in transmission no new request is read and
   * those in flight are answered. A handshake has nothing in flight, and may
   * be stuck in a TLS upgrade that only a close can end, so it is cut.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    if (this.#transmission !== undefined) {
      this.#transmission.stop();
    } else {
      this.#handshake.stop();
      this.destroy();
    }
  }

  /** Hard disconnect. */
  destroy(): void {
    this.#handshake.socket.destroy();
    this.#raw.destroy();
  }

  async #run(): Promise<void> {
    const { log, connection } = this.#opts;
    const timer = setTimeout(() => {
      log({ event: 'handshake-timeout', connection, remote: this.#opts.remote });
      this.destroy();
    }, this.#opts.handshakeTimeoutMs);
    // a TLS upgrade hook that never settles must not keep a destroyed connection alive
    const gone: Promise<HandshakeOutcome> = this.closed.then(() => ({ kind: 'close', reason: 'connection closed' }));
    const outcome = await Promise.race([this.#handshake.run(), gone]);
    clearTimeout(timer);
    const socket = this.#handshake.socket;
    if (socket !== this.#raw) {
      socket.once('close', () => this.#markClosed());
      if (socket.destroyed) this.#markClosed();
    }
    let reason: string;
    if (outcome.kind === 'close') {
      reason = outcome.reason;
      if (outcome.hard === true) this.destroy();
    } else {
      const n = outcome.negotiated;
      this.#phase = 'transmission';
      log({
        event: 'transmission-start',
        connection,
        export: n.export.name,
        detail: {
          structuredReplies: n.structuredReplies,
          blockStatus: n.metaContextId !== undefined,
          tls: n.tls,
          flags: n.transmissionFlags,
          ...(n.peer.clientName === undefined ? {} : { clientName: n.peer.clientName, serial: n.peer.certificateSerial }),
        },
      });
      this.#transmission = new Transmission(n, { log, connection });
      if (this.#shuttingDown) this.#transmission.stop();
      reason = await this.#transmission.run();
    }
    this.#phase = 'closing';
    endGracefully(socket, socketLingerMs);
    await this.closed;
    this.#raw.destroy();
    log({ event: 'connection-close', connection, remote: this.#opts.remote, message: reason });
  }
}
