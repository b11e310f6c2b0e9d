/**
 * Puts the admin API (an express app from `buildApi`) on a TCP port.
 *
 * Loopback only, for now: the API speaks plain HTTP (no TLS yet), and its requests carry the admin
 * bearer token and officer shares. On any other interface both would cross the network in clear
 * text, so a non-loopback host is refused rather than warned about. Lift this when TLS lands.
 */
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';

/** A client that sends its headers slower than this is dropped (slowloris). */
export const apiHeadersTimeoutMs = 10_000;
/** A whole request, body included; bodies are small (see `apiBodyBytesMax`). */
export const apiRequestTimeoutMs = 30_000;
export const apiKeepAliveTimeoutMs = 5_000;
export const apiConnectionsMax = 64;

export interface ApiServer {
  readonly server: Server;
  readonly host: string;
  readonly port: number;
  /** e.g. `http://127.0.0.1:8080` */
  readonly url: string;
  close(): Promise<void>;
}

/** `localhost`, 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z). */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.split('.')[0] === '127';
  if (isIP(h) === 6) {
    const lower = h.toLowerCase();
    if (lower === '::1' || lower === '0:0:0:0:0:0:0:1') return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    return mapped !== null && mapped[1]!.split('.')[0] === '127';
  }
  return false;
}

export async function startApiServer(options: { host: string; port: number; app: Express }): Promise<ApiServer> {
  const { host, port, app } = options;
  if (!isLoopbackHost(host)) {
    fail(ErrorCode.InvalidArgument, `the admin API listens on loopback only until it has TLS; ${JSON.stringify(host)} is not a loopback address`, { host });
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(ErrorCode.InvalidArgument, `API port must be 0..65535, got ${port}`);
  const server = createServer(app);
  server.headersTimeout = apiHeadersTimeoutMs;
  server.requestTimeout = apiRequestTimeoutMs;
  server.keepAliveTimeout = apiKeepAliveTimeoutMs;
  server.maxConnections = apiConnectionsMax;
  const listenHost = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(new StripvaultError(ErrorCode.ApiUnavailable, `admin API cannot listen on ${listenHost}:${port}: ${e.code ?? e.message}`, { errno: e.code }, { cause: e }));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, listenHost);
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | null = null;
  return {
    server,
    host: address.address,
    port: address.port,
    url: `http://${urlHost}:${address.port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
