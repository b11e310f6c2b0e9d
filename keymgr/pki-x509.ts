/**
 * The X.509 plumbing shared by the CA, issuance, checking and the CRL: node-forge builds and reads the
 * ASN.1; OpenSSL (node:crypto) holds the private keys and makes every signature. forge could sign too,
 * but then the CA key would have to live as forge BigIntegers in the JS heap — a KeyObject keeps it in
 * OpenSSL memory, where it is never a string and signing is ~50x faster.
 */
import { randomBytes, sign, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { ErrorCode, fail } from '../appliance/errors.ts';

/** Our certificates are ~1.5 KiB; a peer offering more than this is not one of them. */
export const certificateBytesMax = 16 * 1024;
/** 16 octets of serial: 126 random bits (CA/B Forum asks for at least 64). */
export const serialBytes = 16;
/** RFC 5280 §4.1.2.2: conforming serials are at most 20 octets. */
const serialBytesMax = 20;
export const signatureHash = 'sha256';
export const signatureOid = forge.pki.oids['sha256WithRSAEncryption']!;
export const dayMs = 24 * 60 * 60 * 1000;

/** Why a peer certificate was refused (`detail.reason` of SV_CERT_INVALID); stable like error codes. */
export type CertRejectReason =
  | 'malformed'
  | 'not-our-ca'
  | 'expired'
  | 'not-yet-valid'
  | 'ca-not-valid-now'
  | 'wrong-usage'
  | 'bad-identity'
  | 'registry-mismatch';

export function rejectCertificate(reason: CertRejectReason, message: string, detail?: Record<string, unknown>, cause?: unknown): never {
  fail(ErrorCode.CertInvalid, message, { reason, ...detail }, cause);
}

export function randomSerialHex(): string {
  const serial = randomBytes(serialBytes);
  // A positive INTEGER with a non-zero first octet: minimal DER, and every serial the same length.
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  return serial.toString('hex');
}

/** A serial as the registry keys it: lower-case hex of the INTEGER's octets, as forge reads them. */
export function normalizeSerial(value: unknown): string {
  if (typeof value !== 'string' || !/^(?:[0-9a-fA-F]{2}){1,20}$/.test(value)) {
    fail(ErrorCode.InvalidArgument, `a certificate serial is 1..${serialBytesMax} octets of hex`);
  }
  return value.toLowerCase();
}

export function binaryToBuffer(binary: string): Buffer {
  return Buffer.from(binary, 'binary');
}

/** X.509 times carry whole seconds; dropping the milliseconds up front keeps what we record equal to what we sign. */
export function wholeSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 (forge applies the same rule to validity). */
export function asn1Time(date: Date): forge.asn1.Asn1 {
  const { asn1 } = forge;
  if (date.getUTCFullYear() < 2050) {
    return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date));
  }
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(date));
}

export function signatureAlgorithmAsn1(): forge.asn1.Asn1 {
  const { asn1 } = forge;
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(signatureOid).getBytes()),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, ''),
  ]);
}

/** Signs DER with the CA key (RSASSA-PKCS1-v1_5 with SHA-256, what every TLS stack accepts) → forge binary string. */
export function signDer(der: Buffer, caKey: KeyObject): string {
  return sign(signatureHash, der, caKey).toString('binary');
}

// Not in @types/node-forge, but a public export of forge's x509 module.
const getTbsCertificate = (forge.pki as unknown as { getTBSCertificate(cert: forge.pki.Certificate): forge.asn1.Asn1 })
  .getTBSCertificate;

/** forge's `cert.sign` with the signature made by OpenSSL. */
export function signCertificate(cert: forge.pki.Certificate, caKey: KeyObject): void {
  cert.signatureOid = signatureOid;
  cert.siginfo.algorithmOid = signatureOid;
  cert.tbsCertificate = getTbsCertificate(cert);
  cert.signature = signDer(binaryToBuffer(forge.asn1.toDer(cert.tbsCertificate).getBytes()), caKey);
}

export function certificateDer(cert: forge.pki.Certificate): Buffer {
  return binaryToBuffer(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes());
}

const pemBegin = '-----BEGIN CERTIFICATE-----';
const pemEnd = '-----END CERTIFICATE-----';

/** Exactly one CERTIFICATE block of canonical base64 (Buffer.from('base64') alone skips junk silently). */
function certificatePemToDer(pem: string): Buffer {
  const text = pem.trim();
  if (!text.startsWith(pemBegin) || !text.endsWith(pemEnd)) rejectCertificate('malformed', 'not a PEM certificate');
  const body = text.slice(pemBegin.length, text.length - pemEnd.length).replace(/\r?\n/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) rejectCertificate('malformed', 'PEM certificate body is not base64');
  const der = Buffer.from(body, 'base64');
  if (der.toString('base64') !== body) rejectCertificate('malformed', 'PEM certificate body is not canonical base64');
  return der;
}

export interface ParsedCertificate {
  readonly cert: forge.pki.Certificate;
  readonly der: Buffer;
}

/**
 * Parses a certificate from PEM or DER and insists on canonical DER: forge's re-encoding must give the
 * same bytes. Then forge (which reads the fields) and OpenSSL (which checks the signature over the
 * original bytes) cannot be shown two different certificates by a lenient BER encoding.
 */
export function parseCertificate(input: string | Uint8Array): ParsedCertificate {
  let der: Buffer;
  if (typeof input === 'string') {
    if (input.length > 2 * certificateBytesMax) rejectCertificate('malformed', 'PEM certificate is too large');
    der = certificatePemToDer(input);
  } else if (input instanceof Uint8Array) {
    der = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  } else {
    return fail(ErrorCode.InvalidArgument, 'a certificate is PEM text or DER bytes');
  }
  if (der.length === 0 || der.length > certificateBytesMax) {
    rejectCertificate('malformed', `a certificate is 1..${certificateBytesMax} bytes`, { bytes: der.length });
  }
  let cert: forge.pki.Certificate;
  try {
    const binary = der.toString('binary');
    // strict = true also makes forge require that the DER spans every byte (parseAllBytes).
    cert = forge.pki.certificateFromAsn1(forge.asn1.fromDer(binary, true));
    if (forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes() !== binary) throw new Error('not canonical DER');
  } catch (e) {
    return rejectCertificate('malformed', `certificate does not parse: ${(e as Error).message}`, undefined, e);
  }
  return { cert, der };
}

/** The subject of every certificate we issue is a single CN; anything else is not ours. */
export function soleCommonName(cert: forge.pki.Certificate): string | undefined {
  const attrs = cert.subject.attributes;
  if (attrs.length !== 1 || attrs[0]!.type !== forge.pki.oids['commonName']) return undefined;
  const value: unknown = attrs[0]!.value;
  return typeof value === 'string' ? value : undefined;
}

interface AltName {
  readonly type: number;
  readonly value?: string;
  readonly ip?: string;
}

export const altNameType = { dns: 2, uri: 6, ip: 7 } as const;

export function altNames(cert: forge.pki.Certificate): readonly AltName[] {
  const ext = cert.getExtension('subjectAltName') as { altNames?: AltName[] } | undefined;
  return ext?.altNames ?? [];
}
