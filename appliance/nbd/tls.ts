/**
 * NBD over TLS (STARTTLS) with client certificates from the appliance CA: the certificate is the
 * client's identity, and the export registry decides from it what the client may see and open.
 *
 * The rule, enforced by the server for every connection (peer.ts, tlsModeFor), not configurable:
 * plain-text NBD only on loopback. Loopback and Unix-socket peers get the configured mode
 * ('optional': plain text without an identity, or STARTTLS with a certificate; 'required': TLS
 * first); every other peer must STARTTLS before anything else, and the server refuses to listen
 * in plain text on a non-loopback address.
 *
 * A TLS client must present a certificate (TLS 1.2 or later; 1.3 when the client offers it). The
 * upgrade then checks it against the CA (signature, validity) and hands it to `checkClient`, which
 * asks the certificate registry (issued by us, not revoked). Any refusal ends the connection
 * before the client has seen a single export. node's own rejectUnauthorized check is wired only
 * into tls.Server, and its result is not public on a socket we upgrade ourselves, so the CA check
 * is done here explicitly; OpenSSL still refuses a client that sends no certificate at all.
 */
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { ErrorCode, StripvaultError, fail } from '../errors.ts';
import type { NbdClientTls } from './client-handshake.ts';
import type { NbdTlsOptions, NbdTlsUpgrade } from './handshake.ts';

/** A TLS handshake (and the registry check after it) that takes longer is cut: a stalled peer must not hold a connection slot. */
export const tlsHandshakeTimeoutMs = 10_000;
/** TLS 1.0/1.1 are deprecated (RFC 8996); node offers 1.3 first. */
export const tlsVersionMin = 'TLSv1.2';

export interface CheckedTlsClient {
  readonly clientName: string;
  readonly serial: string;
}

export interface NbdServerTlsConfig {
  /** The appliance CA: client certificates must be signed by it. */
  readonly caCertPem: string;
  /** This server's certificate (issued by the appliance CA, with the names clients connect to) and key. */
  readonly serverCertPem: string;
  readonly serverKeyPem: string;
  /**
   * Registry and revocation check of a client certificate that passed the CA check, e.g.
   * `(der) => checkClientCertificate(registry, caCertPem, der)`. Throws to refuse
   * (SV_CERT_INVALID / SV_CERT_UNKNOWN / SV_CERT_REVOKED); the name it returns is the peer's.
   */
  readonly checkClient: (peerCertDer: Buffer) => Promise<CheckedTlsClient>;
  /** For loopback peers: 'optional' lets them use plain text too; non-loopback peers always need TLS. */
  readonly mode: 'optional' | 'required';
  /** Override of tlsHandshakeTimeoutMs, for tests. */
  readonly handshakeTimeoutMs?: number;
}

/** Server TLS for startNbdServer({ tls }). Bad PEM fails here (SV_INVALID_ARGUMENT), not at the first client. */
export function nbdServerTls(config: NbdServerTlsConfig): NbdTlsOptions {
  const ca = parseCa(config.caCertPem);
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext({ ca: config.caCertPem, cert: config.serverCertPem, key: config.serverKeyPem, minVersion: tlsVersionMin });
  } catch (e) {
    return fail(ErrorCode.InvalidArgument, 'NBD TLS: the server certificate, key or CA does not load', undefined, e);
  }
  const timeoutMs = config.handshakeTimeoutMs ?? tlsHandshakeTimeoutMs;
  return {
    mode: config.mode,
    upgrade: (socket) => upgradeServer(socket, context, ca, config.checkClient, timeoutMs),
  };
}

function parseCa(pem: string): X509Certificate {
  try {
    const ca = new X509Certificate(pem);
    if (ca.ca) return ca;
  } catch (e) {
    return fail(ErrorCode.InvalidArgument, 'NBD TLS: the CA certificate does not parse', undefined, e);
  }
  return fail(ErrorCode.InvalidArgument, 'NBD TLS: the CA certificate is not a CA');
}

function upgradeServer(
  socket: Duplex,
  context: tls.SecureContext,
  ca: X509Certificate,
  checkClient: NbdServerTlsConfig['checkClient'],
  timeoutMs: number,
): Promise<NbdTlsUpgrade> {
  return new Promise((resolve, reject) => {
    // requestCert + rejectUnauthorized: OpenSSL asks for a certificate (naming our CA) and aborts the handshake without one
    const s = new tls.TLSSocket(socket as net.Socket, { isServer: true, secureContext: context, requestCert: true, rejectUnauthorized: true });
    let settled = false;
    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      s.off('error', refuse);
      s.off('end', gone);
      s.off('close', gone);
    };
    const refuse = (e: unknown): void => {
      if (settled) return;
      cleanup();
      s.on('error', () => {});
      s.destroy();
      reject(e);
    };
    const gone = (): void => refuse(new StripvaultError(ErrorCode.NbdConnectionClosed, 'peer left during the TLS handshake'));
    const timer = setTimeout(() => refuse(new StripvaultError(ErrorCode.NbdConnectionClosed, `TLS handshake not done within ${timeoutMs} ms`)), timeoutMs);
    s.once('error', refuse);
    s.once('end', gone);
    s.once('close', gone);
    s.once('secure', () => {
      void (async () => {
        try {
          const cert = s.getPeerX509Certificate();
          if (cert === undefined) fail(ErrorCode.CertInvalid, 'the client sent no certificate', { reason: 'missing' });
          checkSignedByCa(cert, ca);
          const client = await checkClient(cert.raw);
          if (settled) return;
          cleanup();
          resolve({ socket: s, clientName: client.clientName, certificateSerial: client.serial });
        } catch (e) {
          refuse(e);
        }
      })();
    });
  });
}

function checkSignedByCa(cert: X509Certificate, ca: X509Certificate): void {
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    fail(ErrorCode.CertInvalid, 'the client certificate is not signed by the appliance CA', { reason: 'not-our-ca', serial: cert.serialNumber.toLowerCase() });
  }
  const now = Date.now();
  // written so that a date OpenSSL prints in a form Date.parse does not know (NaN) refuses
  if (!(now >= Date.parse(cert.validFrom) && now <= Date.parse(cert.validTo))) {
    fail(ErrorCode.CertInvalid, 'the client certificate is not valid now', { reason: 'not-valid-now', serial: cert.serialNumber.toLowerCase() });
  }
}

export interface NbdClientTlsConfig {
  /** The CA the server certificate must chain to. */
  readonly caCertPem: string;
  /** Our client certificate and its key. */
  readonly certPem: string;
  readonly keyPem: string;
  /** The name or address the server certificate must carry (the host we connect to). */
  readonly serverName: string;
}

/** Client TLS for connectNbd / listNbdExports (remote NBD devices, tests): verifies the server, presents our certificate. */
export function nbdClientTls(config: NbdClientTlsConfig): NbdClientTls {
  const context = tls.createSecureContext({ ca: config.caCertPem, cert: config.certPem, key: config.keyPem, minVersion: tlsVersionMin });
  // SNI carries host names only (RFC 6066 §3)
  const sni = /^[0-9.]+$|:/.test(config.serverName) ? {} : { servername: config.serverName };
  return {
    upgrade: (socket) =>
      new Promise<Duplex>((resolve, reject) => {
        const s = tls.connect({ socket: socket as net.Socket, secureContext: context, host: config.serverName, ...sni }, () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      }),
  };
}
