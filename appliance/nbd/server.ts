/**
 * The NBD listener: TCP or a Unix socket, a bounded number of sessions, and a
 * graceful close (stop accepting, let in-flight requests finish, then close).
 */
import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { ErrorCode, fail } from '../errors.ts';
import type { ExportRegistry } from './backend.ts';
import type { NbdLog } from './events.ts';
import type { NbdTlsOptions } from './handshake.ts';
import { isLoopback, peerOfSocket, tlsModeFor } from './peer.ts';
import { closeGraceMs, connectionsMax, handshakeTimeoutMs, socketLingerMs } from './protocol.ts';
import { NbdSession } from './session.ts';
import { endGracefully } from './wire.ts';

export type NbdAddress = { host: string; port: number } | { path: string };

/** How long a probe of an existing socket file may take before it is judged dead. */
export const staleSocketProbeMs = 1000;

/**
 * A Unix socket file left by a server that died (SIGKILL, power loss) refuses connections; it is
 * removed so a restart can listen again. One that answers belongs to a live server and is kept:
 * listening then fails with EADDRINUSE, as it should.
 */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (st === null || !st.isSocket()) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    const timer = setTimeout(() => (probe.destroy(), resolve(true)), staleSocketProbeMs);
    probe.once('connect', () => (clearTimeout(timer), probe.destroy(), resolve(true)));
    probe.once('error', (e: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT')));
  });
  if (!alive) await unlink(path).catch(() => undefined);
}

export interface NbdServerOptions {
  listen: NbdAddress;
  exports: ExportRegistry;
  /**
   * Default { mode: 'off' }. Plain text is only allowed on loopback (DESIGN §4): the mode applies
   * to loopback and Unix-socket peers; any other peer must STARTTLS first, and without TLS
   * configured is not served at all. Build it with nbdServerTls (tls.ts).
   */
  tls?: NbdTlsOptions;
  log?: NbdLog;
  /** Overrides of the protocol.ts defaults, for configuration and tests. */
  limits?: { connectionsMax?: number; handshakeTimeoutMs?: number; closeGraceMs?: number };
}

export interface NbdServer {
  /** Where it listens; for TCP the actual port when 0 was asked for. */
  readonly address: NbdAddress;
  /** Open connections, in any phase. */
  connections(): number;
  close(): Promise<void>;
}

/** Dead peers without a FIN (cable pulled, VM gone) are found by TCP keepalive after this long idle. */
const keepAliveIdleMs = 30_000;

export { isLoopback };

export async function startNbdServer(opts: NbdServerOptions): Promise<NbdServer> {
  const tls: NbdTlsOptions = opts.tls ?? { mode: 'off' };
  const log: NbdLog = opts.log ?? (() => {});
  const maxConnections = opts.limits?.connectionsMax ?? connectionsMax;
  const handshakeMs = opts.limits?.handshakeTimeoutMs ?? handshakeTimeoutMs;
  const graceMs = opts.limits?.closeGraceMs ?? closeGraceMs;
  const listen = opts.listen;
  if ('host' in listen && tls.mode === 'off' && !isLoopback(listen.host)) {
    fail(ErrorCode.InvalidArgument, 'plain-text NBD may only listen on a loopback address; configure TLS', { host: listen.host });
  }
  if (tls.mode !== 'off' && tls.upgrade === undefined) fail(ErrorCode.InvalidArgument, `TLS mode "${tls.mode}" needs an upgrade hook`);

  const sessions = new Set<NbdSession>();
  let nextConnection = 1;
  let closing = false;

  // allowHalfOpen: a client may shut down its sending side and still wait for replies
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => {
    const connection = nextConnection++;
    const remote = socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on('error', () => {});
    if (closing || sessions.size >= maxConnections) {
      log({ event: 'connection-refused', connection, remote, message: closing ? 'server closing' : `${maxConnections} connections open` });
      endGracefully(socket, socketLingerMs);
      return;
    }
    if (socket.remoteAddress !== undefined) {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, keepAliveIdleMs);
    }
    const peer = peerOfSocket(socket);
    const mode = tlsModeFor(tls.mode, peer);
    if (mode === 'refuse') {
      // the listen check makes this unreachable; kept so no path ever serves plain text off loopback
      log({ event: 'connection-refused', connection, remote, message: 'plain-text NBD is only served to loopback peers' });
      socket.destroy();
      return;
    }
    const sessionTls: NbdTlsOptions = mode === tls.mode ? tls : { ...tls, mode };
    const session = new NbdSession(socket, { exports: opts.exports, tls: sessionTls, log, connection, remote, peer, handshakeTimeoutMs: handshakeMs });
    sessions.add(session);
    log({ event: 'connection-open', connection, remote });
    void session.closed.then(() => sessions.delete(session));
  });

  if ('path' in listen) await removeStaleSocket(listen.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if ('path' in listen) server.listen({ path: listen.path }, done);
    else server.listen({ host: listen.host, port: listen.port }, done);
  });
  server.on('error', (e) => log({ event: 'protocol-violation', message: `listener error: ${e.message}` }));

  const bound = server.address();
  const address: NbdAddress =
    'path' in listen || bound === null || typeof bound === 'string' ? { path: 'path' in listen ? listen.path : String(bound) } : { host: bound.address, port: bound.port };
  log({ event: 'listening', detail: { address } });

  let closed: Promise<void> | undefined;
  return {
    address,
    connections: () => sessions.size,
    close: () => {
      closed ??= (async () => {
        closing = true;
        log({ event: 'server-closing', detail: { connections: sessions.size } });
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const s of sessions) s.shutdown();
        const all = Promise.all([...sessions].map((s) => s.closed));
        let timer: NodeJS.Timeout | undefined;
        const grace = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), graceMs);
        });
        const first = await Promise.race([all.then(() => 'done' as const), grace]);
        clearTimeout(timer);
        if (first === 'timeout') for (const s of sessions) s.destroy();
        await all;
        await stopped;
      })();
      return closed;
    },
  };
}
