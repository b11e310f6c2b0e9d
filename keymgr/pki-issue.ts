/**
 * End-entity certificates: clients (NBD over TLS, identified by CN and a `urn:stripvault:client:` SAN)
 * and servers (the NBD front end, the cluster's TLS endpoints). Every certificate is written to the
 * registry before it is handed out, so nothing we signed is unaccounted for.
 */
import { X509Certificate, createPublicKey, generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { ErrorCode, assert, fail } from '../appliance/errors.ts';
import { openCa, type CertificateAuthority } from './pki-ca.ts';
import { validateClientName, validateCoiName, validateHostName, validateIpAddress } from './pki-names.ts';
import type { CertificateKind, CertificateRecord, CertificateRegistry } from './pki-registry.ts';
import { issueTime, validityWindow } from './pki-validity.ts';
import { altNameType, certificateDer, randomSerialHex, signCertificate } from './pki-x509.ts';

/** Keys we generate for clients and servers; see pki-ca.ts for why RSA. */
export const leafKeyBits = 3072;
/** Keys a caller brings: 2048 is NIST's floor through 2030; above 8192 verifying gets needlessly slow. */
export const publicKeyBitsMin = 2048;
export const publicKeyBitsMax = 8192;
const publicKeyPemCharsMax = 8 * 1024;
/** 825 days, the old CA/Browser Forum ceiling: long enough for a server's life between renewals,
 * short enough that a forgotten certificate dies on its own. */
export const leafValidDaysMax = 825;
export const coiNamesMax = 64;
export const subjectAltNamesMax = 32;
export const clientUriPrefix = 'urn:stripvault:client:';

const generateKeyPairAsync = promisify(generateKeyPair);

export interface IssuedCertificate {
  readonly certPem: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Present only when this call generated the key pair: PKCS#8 PEM for delivery to its owner.
   * It is a JS string (not zeroable); hand it over and drop it. */
  readonly privateKeyPem?: string;
}

export interface ClientCertificateOptions {
  readonly clientName: string;
  readonly coiNames?: readonly string[];
  readonly validDays: number;
  /** The client's own RSA public key (SPKI or PKCS#1 PEM); without it a key pair is generated. */
  readonly publicKeyPem?: string;
  readonly now?: Date;
}

export interface ServerCertificateOptions {
  readonly hostNames?: readonly string[];
  readonly ips?: readonly string[];
  readonly validDays: number;
  readonly publicKeyPem?: string;
  readonly now?: Date;
}

export function clientUri(clientName: string): string {
  return clientUriPrefix + clientName;
}

export async function issueClientCertificate(
  ca: CertificateAuthority,
  registry: CertificateRegistry,
  options: ClientCertificateOptions,
): Promise<IssuedCertificate> {
  const clientName = validateClientName(options.clientName);
  const coiNames = distinctNames(options.coiNames ?? [], coiNamesMax, 'coiNames', validateCoiName);
  return issueLeaf(ca, registry, {
    kind: 'client',
    subject: clientName,
    coiNames,
    validDays: options.validDays,
    publicKeyPem: options.publicKeyPem,
    now: options.now,
    extensions: [
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', clientAuth: true },
      { name: 'subjectAltName', altNames: [{ type: altNameType.uri, value: clientUri(clientName) }] },
    ],
  });
}

export async function issueServerCertificate(
  ca: CertificateAuthority,
  registry: CertificateRegistry,
  options: ServerCertificateOptions,
): Promise<IssuedCertificate> {
  const hostNames = distinctNames(options.hostNames ?? [], subjectAltNamesMax, 'hostNames', validateHostName);
  const ips = distinctNames(options.ips ?? [], subjectAltNamesMax, 'ips', validateIpAddress);
  const subject = hostNames[0] ?? ips[0];
  if (subject === undefined) fail(ErrorCode.InvalidArgument, 'a server certificate needs at least one host name or IP address');
  if (hostNames.length + ips.length > subjectAltNamesMax) {
    fail(ErrorCode.InvalidArgument, `a server certificate holds at most ${subjectAltNamesMax} names and addresses`);
  }
  return issueLeaf(ca, registry, {
    kind: 'server',
    subject,
    coiNames: [],
    validDays: options.validDays,
    publicKeyPem: options.publicKeyPem,
    now: options.now,
    extensions: [
      // keyEncipherment: TLS 1.2 RSA key exchange; digitalSignature: (EC)DHE and TLS 1.3.
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...hostNames.map((value) => ({ type: altNameType.dns, value })),
          ...ips.map((ip) => ({ type: altNameType.ip, ip })),
        ],
      },
    ],
  });
}

function distinctNames(values: unknown, max: number, what: string, validate: (v: unknown) => string): string[] {
  if (!Array.isArray(values) || values.length > max) fail(ErrorCode.InvalidArgument, `${what} must be an array of at most ${max}`);
  const names = values.map(validate);
  if (new Set(names).size !== names.length) fail(ErrorCode.InvalidArgument, `${what} lists a name twice`);
  return names;
}

interface LeafSpec {
  readonly kind: CertificateKind;
  readonly subject: string;
  readonly coiNames: readonly string[];
  readonly validDays: number;
  readonly publicKeyPem: string | undefined;
  readonly now: Date | undefined;
  readonly extensions: readonly object[];
}

async function issueLeaf(ca: CertificateAuthority, registry: CertificateRegistry, spec: LeafSpec): Promise<IssuedCertificate> {
  const authority = openCa(ca.caCertPem, ca.caKey);
  const t = issueTime(spec.now);
  const validity = validityWindow(new Date(t), spec.validDays, leafValidDaysMax, 'validDays');
  const caValidity = authority.cert.validity;
  if (t < caValidity.notBefore.getTime() || t > caValidity.notAfter.getTime()) {
    fail(ErrorCode.InvalidArgument, 'the CA certificate is not valid at the issue time', { caNotAfter: caValidity.notAfter });
  }
  // Refuse rather than shorten: a certificate that silently expires early surprises its owner.
  if (validity.notAfter > caValidity.notAfter) {
    fail(ErrorCode.InvalidArgument, 'the certificate would outlive the CA; renew the CA or ask for fewer days', {
      caNotAfter: caValidity.notAfter,
    });
  }
  const keys: LeafKeys = spec.publicKeyPem === undefined ? await generateLeafKeys() : { publicKey: callerPublicKey(spec.publicKeyPem) };

  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKey.export({ type: 'spki', format: 'pem' }) as string);
  cert.serialNumber = randomSerialHex();
  cert.validity.notBefore = validity.notBefore;
  cert.validity.notAfter = validity.notAfter;
  cert.setSubject([{ name: 'commonName', value: spec.subject, valueTagClass: forge.asn1.Type.UTF8 as number }]);
  cert.setIssuer(authority.cert.subject.attributes);
  cert.setExtensions([
    // Critical and explicit: no verifier may take an end-entity certificate for a CA.
    { name: 'basicConstraints', cA: false, critical: true },
    ...spec.extensions,
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: authority.keyIdentifier },
  ]);
  signCertificate(cert, ca.caKey);
  // A faulty RSA-CRT signature can leak the CA key; OpenSSL checks, and so do we, before anything leaves.
  assert(new X509Certificate(certificateDer(cert)).verify(authority.x509.publicKey), 'issued certificate verifies');

  const record: CertificateRecord = {
    serial: cert.serialNumber,
    kind: spec.kind,
    subject: spec.subject,
    coiNames: spec.coiNames,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
  };
  await registry.record(record);
  return {
    certPem: forge.pki.certificateToPem(cert),
    serial: record.serial,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    ...(keys.privateKeyPem === undefined ? {} : { privateKeyPem: keys.privateKeyPem }),
  };
}

interface LeafKeys {
  readonly publicKey: KeyObject;
  readonly privateKeyPem?: string;
}

async function generateLeafKeys(): Promise<LeafKeys> {
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', { modulusLength: leafKeyBits });
  return { publicKey, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

function callerPublicKey(pem: unknown): KeyObject {
  // Only public-key PEM: createPublicKey would also derive one from a private key, and a private key
  // sent to the CA has already leaked.
  if (typeof pem !== 'string' || pem.length > publicKeyPemCharsMax || !/^-----BEGIN (?:RSA )?PUBLIC KEY-----/.test(pem.trim())) {
    fail(ErrorCode.InvalidArgument, 'publicKeyPem must be a PEM public key');
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (e) {
    return fail(ErrorCode.InvalidArgument, 'publicKeyPem does not parse', undefined, e);
  }
  if (key.asymmetricKeyType !== 'rsa') {
    fail(ErrorCode.InvalidArgument, `publicKeyPem must be an RSA key (node-forge writes no other), not ${key.asymmetricKeyType}`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < publicKeyBitsMin || bits > publicKeyBitsMax) {
    fail(ErrorCode.InvalidArgument, `publicKeyPem must be RSA ${publicKeyBitsMin}..${publicKeyBitsMax} bits`, { bits });
  }
  return key;
}
