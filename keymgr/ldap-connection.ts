/**
 * One verified TLS connection to the LDAP server, used for one directory call and closed.
 *
 * ldapts reconnects transparently when it notices a closed socket, and a reconnect on an `ldap://`
 * URL is plain TCP without StartTLS: a bind sent over it would carry the password in clear text.
 * (ldapts 8.2 happens not to notice a close after StartTLS — the operation times out instead — but
 * nothing promises that.) So the transport factories handed to ldapts allow exactly one plain
 * socket and one TLS socket per connection; another attempt throws, the operation fails, and
 * nothing is sent.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { Client, ResultCodeError } from 'ldapts';
import { ErrorCode, fail } from '../appliance/errors.ts';
import type { LdapDirectoryConfig } from './ldap-config.ts';

const whoAmIOid = '1.3.6.1.4.1.4203.1.11.3';

export interface LdapConnection {
  readonly client: Client;
  close(): Promise<void>;
}

export function unavailable(message: string, cause?: unknown): never {
  const reason = cause instanceof Error ? cause.message.slice(0, 200) : undefined;
  fail(ErrorCode.DirectoryUnavailable, `LDAP directory unavailable: ${message}`, reason === undefined ? undefined : { reason });
}

/**
 * Connects, secures (LDAPS handshake or StartTLS) and verifies the server certificate against the
 * configured CA, all within the connect timeout. Nothing else has been sent when this returns.
 * @throws SV_DIRECTORY_UNAVAILABLE
 */
export async function openLdapConnection(config: LdapDirectoryConfig): Promise<LdapConnection> {
  const tlsOptions: ConnectionOptions = {
    ca: config.caCertificatePem,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    host: config.host,
    // SNI carries host names only.
    ...(isIP(config.host) === 0 ? { servername: config.host } : {}),
  };
  const sockets: Socket[] = [];
  let plainSockets = 0;
  let tlsSocket: TLSSocket | null = null;

  const createConnection = ((port: number, host: string) => {
    if (config.tls !== 'starttls' || plainSockets > 0) throw new Error('LDAP reconnect refused');
    plainSockets++;
    const socket = netConnect(port, host);
    sockets.push(socket);
    return socket;
  }) as typeof netConnect;

  const createSecureConnection = ((...args: unknown[]) => {
    if (tlsSocket !== null) throw new Error('LDAP reconnect refused');
    // ldapts calls (port, host, options) for ldaps:// and (options with the plain socket) for StartTLS.
    const upgrade = typeof args[0] === 'object' && args[0] !== null ? (args[0] as ConnectionOptions) : null;
    const socket =
      upgrade !== null ? tlsConnect({ ...upgrade, ...tlsOptions }) : tlsConnect({ ...tlsOptions, port: config.port, host: config.host });
    tlsSocket = socket;
    sockets.push(socket);
    return socket;
  }) as typeof tlsConnect;

  const client = new Client({
    url: config.url,
    connectTimeout: config.connectTimeoutMs,
    timeout: config.operationTimeoutMs,
    createConnection,
    createSecureConnection,
    // For ldap:// the TLS options go to startTLS(); given here they would make ldapts speak TLS at once.
    ...(config.tls === 'ldaps' ? { tlsOptions } : {}),
  });
  const destroyAll = (): void => {
    for (const socket of sockets) socket.destroy();
  };
  const close = async (): Promise<void> => {
    try {
      await client.unbind();
    } catch {
      // Closing is best effort; the sockets go regardless.
    } finally {
      destroyAll();
    }
  };

  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    // The TLS handshake after StartTLS has no timeout of its own in ldapts.
    timer = setTimeout(() => reject(new Error(`no secure connection within ${config.connectTimeoutMs} ms`)), config.connectTimeoutMs);
  });
  const secure = async (): Promise<void> => {
    if (config.tls === 'starttls') {
      await client.startTLS({});
      return;
    }
    try {
      // "Who am I?" forces the LDAPS connection and handshake now; any LDAP answer proves them.
      await client.exop(whoAmIOid);
    } catch (e) {
      if (!(e instanceof ResultCodeError)) throw e;
    }
  };
  try {
    await Promise.race([secure(), deadline]);
  } catch (e) {
    destroyAll();
    unavailable('could not open a verified TLS connection', e);
  } finally {
    clearTimeout(timer);
  }
  const secured = tlsSocket as TLSSocket | null;
  if (secured === null || !secured.encrypted || !secured.authorized) {
    destroyAll();
    unavailable('the connection is not protected by verified TLS');
  }
  return { client, close };
}
