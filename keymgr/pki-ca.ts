/**
 * The appliance CA: a self-signed root that issues every client and appliance certificate.
 *
 * RSA-3072, not ECDSA P-256: node-forge's X.509 code only reads and writes RSA keys, and forge is how
 * we build certificates. 3072 bits is NIST's match for 128-bit security, the level of everything else
 * here, for a key that may live twenty years.
 *
 * The CA private key is a node:crypto KeyObject (OpenSSL memory, never a JS string). It leaves this
 * module only wrapped, by a function the caller supplies (the master key, later): this module never
 * decides where keys live, and the PKCS#8 bytes exist only in Buffers it zeroes.
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { ErrorCode, StripvaultError, assert, fail } from '../appliance/errors.ts';
import { validateCaCommonName } from './pki-names.ts';
import { parseCertificate, randomSerialHex, signCertificate } from './pki-x509.ts';
import { validityWindow } from './pki-validity.ts';

export const caKeyBits = 3072;
/** Twenty years: a root outlives the hardware it was made on, but not forever. */
export const caValidDaysMax = 20 * 365;
/** A wrapped RSA-3072 PKCS#8 key is ~1.8 KiB; anything far larger is not one. */
export const caKeyBlobBytesMax = 16 * 1024;
/** Domain separation inside the wrapped plaintext: a blob that unwraps under the same key but holds
 * something else (a workgroup key, another format version) is refused, not parsed as a CA key. */
const caKeyMagic = Buffer.from('SVCAKEY1', 'latin1');

const generateKeyPairAsync = promisify(generateKeyPair);

export interface CertificateAuthority {
  readonly caCertPem: string;
  readonly caKey: KeyObject;
}

export interface CreateCaOptions {
  readonly commonName: string;
  readonly validDays: number;
  /** The issue time; tests move it. Defaults to the clock. */
  readonly now?: Date;
}

export async function createCa(options: CreateCaOptions): Promise<CertificateAuthority> {
  const commonName = validateCaCommonName(options.commonName);
  const validity = validityWindow(options.now, options.validDays, caValidDaysMax, 'CA validDays');
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', { modulusLength: caKeyBits });

  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }) as string);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = validity.notBefore;
  cert.validity.notAfter = validity.notAfter;
  // UTF8String, not forge's default PrintableString, which cannot hold '_' (RFC 5280 §4.1.2.6 says UTF8String).
  const subject = [{ name: 'commonName', value: commonName, valueTagClass: forge.asn1.Type.UTF8 as number }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    // pathLen 0: this root signs end-entity certificates only, never another CA.
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  signCertificate(cert, privateKey);
  return { caCertPem: forge.pki.certificateToPem(cert), caKey: privateKey };
}

/** What issuing and checking need from the CA certificate, parsed once per call. */
export interface CaCertificate {
  readonly cert: forge.pki.Certificate;
  readonly x509: X509Certificate;
  /** The subjectKeyIdentifier as a forge binary string, for the issued certificates' authorityKeyIdentifier. */
  readonly keyIdentifier: string;
}

export function parseCaCertificate(caCertPem: string): CaCertificate {
  let parsed;
  try {
    parsed = parseCertificate(caCertPem);
  } catch (e) {
    if (e instanceof StripvaultError) fail(ErrorCode.InvalidArgument, `CA certificate: ${e.message}`, undefined, e);
    throw e;
  }
  const x509 = new X509Certificate(parsed.der);
  if (!x509.ca || !x509.verify(x509.publicKey)) fail(ErrorCode.InvalidArgument, 'not a self-signed CA certificate');
  const ski = parsed.cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier?: string } | undefined;
  if (ski?.subjectKeyIdentifier === undefined) fail(ErrorCode.InvalidArgument, 'CA certificate has no subjectKeyIdentifier');
  return { cert: parsed.cert, x509, keyIdentifier: forge.util.hexToBytes(ski.subjectKeyIdentifier) };
}

/**
 * Pairs a CA certificate with its private key after checking they belong together, so a mixed-up
 * pair fails here rather than issuing certificates nobody can verify.
 */
export function openCa(caCertPem: string, caKey: KeyObject): CertificateAuthority & CaCertificate {
  const parsed = parseCaCertificate(caCertPem);
  if (caKey.type !== 'private' || caKey.asymmetricKeyType !== 'rsa') fail(ErrorCode.InvalidArgument, 'the CA key must be an RSA private key');
  if (!parsed.x509.publicKey.equals(createPublicKey(caKey))) {
    fail(ErrorCode.InvalidArgument, 'the CA key does not belong to the CA certificate');
  }
  return { caCertPem, caKey, ...parsed };
}

/**
 * Wraps the CA key for storage: `wrap` receives magic ‖ PKCS#8 DER and must return a new buffer
 * (an AEAD under the master key, typically). The plaintext is zeroed as soon as `wrap` returns.
 */
export function exportCaKeyWrapped(caKey: KeyObject, wrap: (plain: Buffer) => Buffer): Buffer {
  if (caKey.type !== 'private' || caKey.asymmetricKeyType !== 'rsa') fail(ErrorCode.InvalidArgument, 'the CA key must be an RSA private key');
  const der = caKey.export({ type: 'pkcs8', format: 'der' });
  const plain = Buffer.alloc(caKeyMagic.length + der.length);
  try {
    caKeyMagic.copy(plain, 0);
    der.copy(plain, caKeyMagic.length);
    der.fill(0);
    const blob = wrap(plain);
    assert(Buffer.isBuffer(blob) && blob.buffer !== plain.buffer, 'wrap must return a new buffer');
    return blob;
  } finally {
    der.fill(0);
    plain.fill(0);
  }
}

/** The inverse of exportCaKeyWrapped. The buffer `unwrap` returns is ours: it is zeroed before we return. */
export function importCaKeyWrapped(blob: Uint8Array, unwrap: (blob: Buffer) => Buffer): KeyObject {
  if (!(blob instanceof Uint8Array) || blob.length === 0 || blob.length > caKeyBlobBytesMax) {
    fail(ErrorCode.InvalidArgument, `a wrapped CA key is 1..${caKeyBlobBytesMax} bytes`);
  }
  const plain = unwrap(Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength));
  try {
    if (!Buffer.isBuffer(plain) || plain.length <= caKeyMagic.length || !plain.subarray(0, caKeyMagic.length).equals(caKeyMagic)) {
      fail(ErrorCode.KeyUnwrap, 'the unwrapped blob is not a stripvault CA key');
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: plain.subarray(caKeyMagic.length), format: 'der', type: 'pkcs8' });
    } catch (e) {
      return fail(ErrorCode.KeyUnwrap, 'the unwrapped CA key does not parse', undefined, e);
    }
    if (key.asymmetricKeyType !== 'rsa') fail(ErrorCode.KeyUnwrap, 'the unwrapped CA key is not an RSA key');
    return key;
  } finally {
    if (Buffer.isBuffer(plain)) plain.fill(0);
  }
}
