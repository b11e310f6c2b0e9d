/**
 * The certificate revocation list (RFC 5280 §5), for TLS stacks that check revocation themselves
 * (node:tls `crl`, OpenSSL, qemu's x509 credentials directory). node-forge has no CRL support, so the
 * v2 CertList is assembled here from forge's ASN.1 primitives and signed by OpenSSL.
 */
import forge from 'node-forge';
import { ErrorCode, fail } from '../appliance/errors.ts';
import { openCa, type CertificateAuthority } from './pki-ca.ts';
import type { CertificateRegistry } from './pki-registry.ts';
import { issueTime } from './pki-validity.ts';
import { asn1Time, binaryToBuffer, dayMs, signDer, signatureAlgorithmAsn1, wholeSeconds } from './pki-x509.ts';

export const crlNextUpdateDaysDefault = 7;
export const crlNextUpdateDaysMax = 366;

const oidAuthorityKeyIdentifier = '2.5.29.35';
const oidCrlNumber = '2.5.29.20';

export interface CrlOptions {
  readonly now?: Date;
  /** How long verifiers may use this CRL before fetching a new one. */
  readonly nextUpdateDays?: number;
}

/**
 * Lists every revoked certificate that has not yet expired (an expired one is refused anyway, and
 * RFC 5280 §3.3 lets it leave the list). The CRL number is thisUpdate in milliseconds: increasing
 * with every CRL issued, as §5.2.3 asks, without a counter to store.
 */
export async function buildCrl(ca: CertificateAuthority, registry: CertificateRegistry, options: CrlOptions = {}): Promise<string> {
  const { asn1 } = forge;
  const authority = openCa(ca.caCertPem, ca.caKey);
  const t = issueTime(options.now);
  const nextUpdateDays = options.nextUpdateDays ?? crlNextUpdateDaysDefault;
  if (!Number.isInteger(nextUpdateDays) || nextUpdateDays < 1 || nextUpdateDays > crlNextUpdateDaysMax) {
    fail(ErrorCode.InvalidArgument, `nextUpdateDays must be an integer 1..${crlNextUpdateDaysMax}`);
  }
  const thisUpdate = wholeSeconds(t);
  const nextUpdate = wholeSeconds(t + nextUpdateDays * dayMs);

  const revoked = (await registry.listCertificates()).filter(
    (r) => r.revokedAt !== undefined && r.notAfter.getTime() >= thisUpdate.getTime(),
  );
  const entries = revoked.map((r) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, forge.util.hexToBytes(r.serial)),
      asn1Time(wholeSeconds(r.revokedAt!.getTime())),
    ]),
  );

  const tbs = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(1).getBytes()), // v2
    signatureAlgorithmAsn1(),
    forge.pki.distinguishedNameToAsn1(authority.cert.subject),
    asn1Time(thisUpdate),
    asn1Time(nextUpdate),
    // §5.1.2.6: with nothing revoked the list is absent, not empty.
    ...(entries.length === 0 ? [] : [asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, entries)]),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [
      asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
        extension(oidAuthorityKeyIdentifier,
          asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
            asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, authority.keyIdentifier),
          ])),
        extension(oidCrlNumber, asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, positiveInteger(BigInt(t)))),
      ]),
    ]),
  ]);
  const tbsDer = asn1.toDer(tbs).getBytes();
  const certList = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    tbs,
    signatureAlgorithmAsn1(),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BITSTRING, false, '\x00' + signDer(binaryToBuffer(tbsDer), ca.caKey)),
  ]);
  return forge.pem.encode({ type: 'X509 CRL', body: asn1.toDer(certList).getBytes() });
}

/** A non-critical Extension: SEQUENCE { extnID, extnValue OCTET STRING (DER of the value) }. */
function extension(oid: string, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  const { asn1 } = forge;
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(oid).getBytes()),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, asn1.toDer(value).getBytes()),
  ]);
}

/** Minimal two's-complement octets of a non-negative integer (forge's integerToDer stops at 32 bits). */
function positiveInteger(n: bigint): string {
  let hex = n.toString(16);
  if (hex.length % 2 === 1) hex = '0' + hex;
  if (parseInt(hex[0]!, 16) >= 8) hex = '00' + hex;
  return forge.util.hexToBytes(hex);
}
