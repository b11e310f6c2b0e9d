/**
 * Who is this client? The answer to a TLS peer certificate, checked in full even when the TLS stack
 * has already verified the chain: our CA's signature, validity now, client usage, a well-formed
 * identity, and the registry (issued by us, not revoked). Every refusal is typed, with a stable
 * `detail.reason` for SV_CERT_INVALID.
 */
import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';
import { parseCaCertificate } from './pki-ca.ts';
import { clientUri } from './pki-issue.ts';
import { validateClientName } from './pki-names.ts';
import type { CertificateRegistry } from './pki-registry.ts';
import { issueTime } from './pki-validity.ts';
import { altNameType, altNames, parseCertificate, rejectCertificate, soleCommonName } from './pki-x509.ts';

export interface CheckedClient {
  readonly clientName: string;
  readonly serial: string;
  /** From the registry record, not the certificate. */
  readonly coiNames: readonly string[];
  readonly notAfter: Date;
}

export interface CheckOptions {
  readonly now?: Date;
}

/**
 * @param peerCertificate PEM, or DER as `tls.TLSSocket#getPeerCertificate().raw` gives it.
 * @throws SV_CERT_INVALID (with detail.reason), SV_CERT_UNKNOWN, SV_CERT_REVOKED
 */
export async function checkClientCertificate(
  registry: CertificateRegistry,
  caCertPem: string,
  peerCertificate: string | Uint8Array,
  options: CheckOptions = {},
): Promise<CheckedClient> {
  const t = issueTime(options.now);
  const ca = parseCaCertificate(caCertPem);
  const { cert, der } = parseCertificate(peerCertificate);

  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(der);
  } catch (e) {
    return rejectCertificate('malformed', 'OpenSSL does not parse the certificate', undefined, e);
  }
  // OpenSSL checks the signature over the bytes as received (forge would re-encode them first).
  if (!x509.checkIssued(ca.x509) || !x509.verify(ca.x509.publicKey)) {
    rejectCertificate('not-our-ca', 'the certificate is not signed by this appliance CA');
  }

  const caValidity = ca.cert.validity;
  if (t < caValidity.notBefore.getTime() || t > caValidity.notAfter.getTime()) {
    rejectCertificate('ca-not-valid-now', 'the appliance CA certificate is not valid now', { caNotAfter: caValidity.notAfter });
  }
  const { notBefore, notAfter } = cert.validity;
  if (t < notBefore.getTime()) rejectCertificate('not-yet-valid', 'the certificate is not valid yet', { notBefore });
  if (t > notAfter.getTime()) rejectCertificate('expired', 'the certificate has expired', { notAfter });

  const basic = cert.getExtension('basicConstraints') as { cA?: boolean } | undefined;
  const eku = cert.getExtension('extKeyUsage') as { clientAuth?: boolean } | undefined;
  if (basic?.cA === true || eku?.clientAuth !== true) {
    rejectCertificate('wrong-usage', 'the certificate is not a client certificate (extKeyUsage clientAuth)');
  }

  const clientName = clientNameOf(cert);
  const serial = cert.serialNumber.toLowerCase();
  const record = await registry.find(serial);
  if (record === undefined) fail(ErrorCode.CertUnknown, `certificate ${serial} was not issued by this appliance`, { serial });
  if (record.kind !== 'client' || record.subject !== clientName) {
    rejectCertificate('registry-mismatch', 'the certificate does not match its registry record', { serial });
  }
  if (record.revokedAt !== undefined) {
    fail(ErrorCode.CertRevoked, `certificate ${serial} of ${clientName} is revoked`, { serial, clientName, revokedAt: record.revokedAt });
  }
  return { clientName, serial, coiNames: record.coiNames, notAfter };
}

/** The CN, which must be a valid client name and agree with the certificate's only URI SAN. */
function clientNameOf(cert: forge.pki.Certificate): string {
  const cn = soleCommonName(cert);
  let clientName: string;
  try {
    clientName = validateClientName(cn);
  } catch (e) {
    if (!(e instanceof StripvaultError)) throw e;
    return rejectCertificate('bad-identity', 'the certificate subject is not a single valid client name', undefined, e);
  }
  const uris = altNames(cert).filter((n) => n.type === altNameType.uri);
  if (uris.length !== 1 || uris[0]!.value !== clientUri(clientName)) {
    rejectCertificate('bad-identity', 'the certificate SAN does not name the client of its CN', { clientName });
  }
  return clientName;
}
