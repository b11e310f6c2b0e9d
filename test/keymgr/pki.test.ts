import test from 'ava';
import { once } from 'node:events';
import {
  X509Certificate,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  verify,
} from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import forge from 'node-forge';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import {
  MemoryCertificateRegistry,
  buildCrl,
  checkClientCertificate,
  createCa,
  exportCaKeyWrapped,
  importCaKeyWrapped,
  issueClientCertificate,
  issueServerCertificate,
  openCa,
  type CertificateAuthority,
  type CertificateRegistry,
} from '../../keymgr/pki.ts';

const dayMs = 24 * 60 * 60 * 1000;
const daysFromNow = (days: number): Date => new Date(Date.now() + days * dayMs);

type Key = { publicKeyPem: string; privateKeyPem: string };

// Key generation dominates this file's runtime: two CA keys (RSA-3072), and client keys of 2048 bits
// made once by OpenSSL and passed in as publicKeyPem. Only the tests about generated keys generate.
const fixture = (async () => {
  // Made three years ago so that certificates can be issued "in the past" for the expiry tests.
  const ca = await createCa({ commonName: 'stripvault test CA', validDays: 3650, now: daysFromNow(-3 * 365) });
  const foreignCa = await createCa({ commonName: 'stripvault test CA', validDays: 3650 });
  const keys = Array.from({ length: 4 }, () => {
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return {
      publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }) as string,
      privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    };
  });
  return { ca, foreignCa, keys: keys as [Key, Key, Key, Key] };
})();

async function expectCertError(
  t: import('ava').ExecutionContext,
  promise: Promise<unknown>,
  code: ErrorCode,
  reason?: string,
): Promise<void> {
  const error = await t.throwsAsync(promise);
  t.true(isStripvaultError(error), `expected a StripvaultError, got ${String(error)}`);
  if (!isStripvaultError(error)) return;
  t.is(error.code, code, error.message);
  if (reason !== undefined) t.is(error.detail?.['reason'], reason, error.message);
}

function caNotAfter(ca: CertificateAuthority): Date {
  return forge.pki.certificateFromPem(ca.caCertPem).validity.notAfter;
}

function pemToDer(pem: string): Buffer {
  return Buffer.from(forge.pem.decode(pem)[0]!.body, 'binary');
}

function derToPem(der: Buffer): string {
  return forge.pem.encode({ type: 'CERTIFICATE', body: der.toString('binary') });
}

test('createCa: a self-signed RSA-3072 root with CA constraints, CA key usages, a key identifier and a random 128-bit serial', async (t) => {
  const { ca, foreignCa } = await fixture;
  const x509 = new X509Certificate(ca.caCertPem);
  t.true(x509.ca);
  t.is(x509.subject, 'CN=stripvault test CA');
  t.is(x509.issuer, x509.subject);
  t.true(x509.verify(x509.publicKey));
  t.is(x509.publicKey.asymmetricKeyType, 'rsa');
  t.is(x509.publicKey.asymmetricKeyDetails?.modulusLength, 3072);
  t.true(x509.publicKey.equals(createPublicKey(ca.caKey)));
  t.is(ca.caKey.type, 'private');

  const cert = forge.pki.certificateFromPem(ca.caCertPem);
  const basic = cert.getExtension('basicConstraints') as { cA: boolean; critical: boolean; pathLenConstraint: number };
  t.true(basic.cA);
  t.true(basic.critical);
  t.is(basic.pathLenConstraint, 0);
  const usage = cert.getExtension('keyUsage') as Record<string, boolean>;
  t.true(usage['critical']);
  t.true(usage['keyCertSign']);
  t.true(usage['cRLSign']);
  t.falsy(usage['digitalSignature']);
  const ski = cert.getExtension('subjectKeyIdentifier') as { subjectKeyIdentifier: string };
  t.regex(ski.subjectKeyIdentifier, /^[0-9a-f]{40}$/);
  t.is(cert.signatureOid, '1.2.840.113549.1.1.11'); // sha256WithRSAEncryption

  t.regex(cert.serialNumber, /^[4-7][0-9a-f]{31}$/); // 16 octets, positive, first octet non-zero
  t.not(cert.serialNumber, forge.pki.certificateFromPem(foreignCa.caCertPem).serialNumber);
  // Same name, different key: nothing but the key tells two CAs apart.
  t.false(x509.publicKey.equals(new X509Certificate(foreignCa.caCertPem).publicKey));

  const lifetimeMs = cert.validity.notAfter.getTime() - cert.validity.notBefore.getTime();
  t.true(Math.abs(lifetimeMs - (3650 * dayMs + 5 * 60 * 1000)) <= 1000);
});

test('createCa refuses bad names, validity periods and issue times', async (t) => {
  for (const commonName of ['', ' CA', 'CA ', 'CA, O=evil', 'CA\n', 'x'.repeat(65), 'C\u0410']) {
    await expectCertError(t, createCa({ commonName, validDays: 10 }), ErrorCode.InvalidArgument);
  }
  for (const validDays of [0, -1, 1.5, Number.NaN, 7301]) {
    await expectCertError(t, createCa({ commonName: 'ca', validDays }), ErrorCode.InvalidArgument);
  }
  await expectCertError(t, createCa({ commonName: 'ca', validDays: 1, now: new Date(Number.NaN) }), ErrorCode.InvalidArgument);
});

test('an issued client certificate passes the check, with clientAuth, the client URN and its COIs', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(ca, registry, {
    clientName: 'db-01',
    coiNames: ['finance', 'hr'],
    validDays: 30,
    publicKeyPem: keys[0].publicKeyPem,
  });
  t.is(issued.privateKeyPem, undefined, 'no key pair was generated');

  const x509 = new X509Certificate(issued.certPem);
  t.is(x509.subject, 'CN=db-01');
  t.is(x509.subjectAltName, 'URI:urn:stripvault:client:db-01');
  t.deepEqual(x509.keyUsage, ['1.3.6.1.5.5.7.3.2']); // extKeyUsage clientAuth only
  t.false(x509.ca);
  t.true(x509.checkIssued(new X509Certificate(ca.caCertPem)));
  t.true(x509.publicKey.equals(createPublicKey(keys[0].publicKeyPem)));
  t.is(x509.serialNumber.toLowerCase(), issued.serial);

  const checked = await checkClientCertificate(registry, ca.caCertPem, issued.certPem);
  t.deepEqual(checked, { clientName: 'db-01', serial: issued.serial, coiNames: ['finance', 'hr'], notAfter: issued.notAfter });
  const viaDer = await checkClientCertificate(registry, ca.caCertPem, x509.raw);
  t.is(viaDer.clientName, 'db-01');

  const [record] = await registry.listCertificates();
  t.like(record, { serial: issued.serial, kind: 'client', subject: 'db-01', coiNames: ['finance', 'hr'] });
  t.deepEqual(record?.notAfter, issued.notAfter);
  t.is(record?.revokedAt, undefined);
});

test('without publicKeyPem a key pair is generated and returned with the certificate', async (t) => {
  const { ca } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(ca, registry, { clientName: 'gen', validDays: 1 });
  t.truthy(issued.privateKeyPem);
  const privateKey = createPrivateKey(issued.privateKeyPem!);
  t.is(privateKey.asymmetricKeyDetails?.modulusLength, 3072);
  t.true(new X509Certificate(issued.certPem).publicKey.equals(createPublicKey(privateKey)));
  t.is((await checkClientCertificate(registry, ca.caCertPem, issued.certPem)).clientName, 'gen');
});

test('a revoked certificate is refused with SV_CERT_REVOKED; revocation is listed, idempotent, and only for known serials', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const alice = await issueClientCertificate(ca, registry, { clientName: 'alice', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  const bob = await issueClientCertificate(ca, registry, { clientName: 'bob', validDays: 30, publicKeyPem: keys[1].publicKeyPem });

  const at = new Date('2030-01-02T03:04:05.678Z');
  const revoked = await registry.revoke(alice.serial.toUpperCase(), at);
  t.deepEqual(revoked.revokedAt, new Date('2030-01-02T03:04:05.000Z'));
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, alice.certPem), ErrorCode.CertRevoked);
  t.is((await checkClientCertificate(registry, ca.caCertPem, bob.certPem)).clientName, 'bob');

  const again = await registry.revoke(alice.serial, new Date('2031-01-01T00:00:00Z'));
  t.deepEqual(again.revokedAt, revoked.revokedAt, 'the first revocation time stays');
  const list = await registry.listCertificates();
  t.deepEqual(list.map((r) => [r.subject, r.revokedAt]), [['alice', revoked.revokedAt], ['bob', undefined]]);

  await expectCertError(t, registry.revoke('00112233445566778899aabbccddeeff'), ErrorCode.CertUnknown);
  await expectCertError(t, registry.revoke('not hex'), ErrorCode.InvalidArgument);
});

test('a certificate our CA signed but the registry does not hold is SV_CERT_UNKNOWN', async (t) => {
  const { ca, keys } = await fixture;
  const elsewhere = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(ca, elsewhere, { clientName: 'ghost', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  await expectCertError(t, checkClientCertificate(new MemoryCertificateRegistry(), ca.caCertPem, issued.certPem), ErrorCode.CertUnknown);
});

test('a record that disagrees with the certificate is refused', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(ca, registry, { clientName: 'carol', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  const lying: CertificateRegistry = {
    record: (e) => registry.record(e),
    revoke: (s, at) => registry.revoke(s, at),
    listCertificates: () => registry.listCertificates(),
    find: async (s) => {
      const r = await registry.find(s);
      return r && { ...r, subject: 'mallory' };
    },
  };
  await expectCertError(t, checkClientCertificate(lying, ca.caCertPem, issued.certPem), ErrorCode.CertInvalid, 'registry-mismatch');
});

test('a certificate from another CA — even one with the same name — is SV_CERT_INVALID', async (t) => {
  const { ca, foreignCa, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const foreign = await issueClientCertificate(foreignCa, registry, { clientName: 'alice', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, foreign.certPem), ErrorCode.CertInvalid, 'not-our-ca');
  // The serial is in the registry, so only the signature check can have refused it.
  t.truthy(await registry.find(foreign.serial));
});

test('expired and not-yet-valid certificates are SV_CERT_INVALID; inside their window they pass', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const issuedAt = daysFromNow(-2 * 365);
  const old = await issueClientCertificate(ca, registry, { clientName: 'old', validDays: 30, publicKeyPem: keys[0].publicKeyPem, now: issuedAt });
  t.deepEqual(old.notAfter, new Date(Math.floor((issuedAt.getTime() + 30 * dayMs) / 1000) * 1000));
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, old.certPem), ErrorCode.CertInvalid, 'expired');
  const then = new Date(issuedAt.getTime() + dayMs);
  t.is((await checkClientCertificate(registry, ca.caCertPem, old.certPem, { now: then })).clientName, 'old');

  const future = await issueClientCertificate(ca, registry, { clientName: 'future', validDays: 30, publicKeyPem: keys[0].publicKeyPem, now: daysFromNow(1) });
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, future.certPem), ErrorCode.CertInvalid, 'not-yet-valid');

  // A CA that is no longer valid vouches for nothing.
  const afterCa = new Date(caNotAfter(ca).getTime() + 1000);
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, old.certPem, { now: afterCa }), ErrorCode.CertInvalid, 'ca-not-valid-now');
});

test('tampered or malformed certificates are SV_CERT_INVALID', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(ca, registry, { clientName: 'alice', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  const der = pemToDer(issued.certPem);

  // The subject renamed in place: still parses, signature no longer matches.
  const cn = der.indexOf(Buffer.from('alice'));
  t.true(cn > 0);
  const renamed = Buffer.from(der);
  renamed.write('alicf', cn, 'latin1');
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, derToPem(renamed)), ErrorCode.CertInvalid, 'not-our-ca');

  const badSignature = Buffer.from(der);
  badSignature[badSignature.length - 1]! ^= 0x01;
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, badSignature), ErrorCode.CertInvalid, 'not-our-ca');

  // A non-minimal length on the outer SEQUENCE: the signed TBS is untouched, but the encoding is not DER.
  t.is(der[0], 0x30);
  t.is(der[1], 0x82);
  const longForm = Buffer.concat([Buffer.from([0x30, 0x83, 0x00]), der.subarray(2)]);
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, longForm), ErrorCode.CertInvalid, 'malformed');

  const malformed: Array<string | Buffer> = [
    der.subarray(0, der.length - 10),
    Buffer.concat([der, Buffer.from([0])]),
    Buffer.alloc(0),
    Buffer.alloc(20_000, 0x30),
    'hello',
    issued.certPem + issued.certPem,
    issued.certPem.replace(/\n([A-Za-z0-9+/]{10})/, '\n$1*'),
    issued.certPem.replace('-----BEGIN CERTIFICATE-----', '-----BEGIN X509 CRL-----'),
  ];
  for (const input of malformed) {
    await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, input), ErrorCode.CertInvalid, 'malformed');
  }

  // One base64 character changed: whatever it hits, the certificate is refused as invalid.
  for (let i = 0; i < 8; i++) {
    const lines = issued.certPem.split('\n');
    const line = 2 + ((i * 5) % (lines.length - 4));
    const col = (i * 13) % lines[line]!.length;
    const ch = lines[line]![col] === 'A' ? 'B' : 'A';
    lines[line] = lines[line]!.slice(0, col) + ch + lines[line]!.slice(col + 1);
    await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, lines.join('\n')), ErrorCode.CertInvalid);
  }
});

test('a server certificate or the CA certificate presented as a client is refused for its usage', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const server = await issueServerCertificate(ca, registry, { hostNames: ['nbd.example'], validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, server.certPem), ErrorCode.CertInvalid, 'wrong-usage');
  await expectCertError(t, checkClientCertificate(registry, ca.caCertPem, ca.caCertPem), ErrorCode.CertInvalid, 'wrong-usage');
});

test('issuing validates names, COIs, addresses, validity and the public key', async (t) => {
  const { ca, foreignCa, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const base = { validDays: 30, publicKeyPem: keys[0].publicKeyPem };
  const badClientNames: unknown[] = [
    '', 'Alice', 'a b', 'a/b', '../etc', 'a..b', '-a', 'a-', 'a,cn=admin', 'a=b', 'al\u0131ce', 'caf\u00e9', 'a\n', 'x'.repeat(65), 42, undefined,
  ];
  for (const clientName of badClientNames) {
    await expectCertError(t, issueClientCertificate(ca, registry, { ...base, clientName: clientName as string }), ErrorCode.InvalidArgument);
  }
  for (const coiNames of [['Finance'], ['a b'], ['x', 'x'], Array.from({ length: 65 }, (_, i) => `c${i}`), 'finance']) {
    await expectCertError(t, issueClientCertificate(ca, registry, { ...base, clientName: 'ok', coiNames: coiNames as string[] }), ErrorCode.InvalidArgument);
  }
  for (const validDays of [0, 826, 2.5]) {
    await expectCertError(t, issueClientCertificate(ca, registry, { ...base, clientName: 'ok', validDays }), ErrorCode.InvalidArgument);
  }
  // Outliving the CA, or issuing while the CA is not valid: refused, never shortened.
  await expectCertError(t, issueClientCertificate(ca, registry, { ...base, clientName: 'ok', now: new Date(caNotAfter(ca).getTime() - dayMs) }), ErrorCode.InvalidArgument);
  await expectCertError(t, issueClientCertificate(ca, registry, { ...base, clientName: 'ok', now: daysFromNow(-4 * 365) }), ErrorCode.InvalidArgument);
  // A CA certificate with somebody else's key.
  await expectCertError(t, issueClientCertificate({ caCertPem: ca.caCertPem, caKey: foreignCa.caKey }, registry, { ...base, clientName: 'ok' }), ErrorCode.InvalidArgument);

  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const badKeys = [
    ec.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    small.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    keys[0].privateKeyPem, // a private key must never be sent to the CA
    '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n',
  ];
  for (const publicKeyPem of badKeys) {
    await expectCertError(t, issueClientCertificate(ca, registry, { validDays: 30, clientName: 'ok', publicKeyPem }), ErrorCode.InvalidArgument);
  }

  const badServers = [
    {},
    { hostNames: ['Localhost'] },
    { hostNames: ['*.example.com'] },
    { hostNames: ['a..b'] },
    { hostNames: ['-a.example'] },
    { hostNames: ['example.com.'] },
    { hostNames: ['10.0.0.1'] },
    { hostNames: ['a'.repeat(64) + '.example'] },
    { hostNames: ['ex ample'] },
    { hostNames: ['a', 'a'] },
    { ips: ['1.2.3'] },
    { ips: ['::g'] },
    { ips: ['fe80::1%eth0'] },
    { ips: ['localhost'] },
    { hostNames: Array.from({ length: 20 }, (_, i) => `h${i}`), ips: Array.from({ length: 20 }, (_, i) => `10.0.0.${i}`) },
  ];
  for (const names of badServers) {
    await expectCertError(t, issueServerCertificate(ca, registry, { ...base, ...names }), ErrorCode.InvalidArgument);
  }
  t.deepEqual(await registry.listCertificates(), [], 'nothing was issued');

  // The edges that are allowed.
  await issueClientCertificate(ca, registry, { ...base, clientName: 'x'.repeat(64) });
  await issueClientCertificate(ca, registry, { ...base, clientName: 'backup.nightly_02-a', coiNames: [] });
  t.is((await registry.listCertificates()).length, 2);
});

function gcmWrapper() {
  const key = randomBytes(32);
  return {
    wrap(plain: Buffer): Buffer {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const body = Buffer.concat([cipher.update(plain), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), body]);
    },
    unwrap(blob: Buffer): Buffer {
      const decipher = createDecipheriv('aes-256-gcm', key, blob.subarray(0, 12));
      decipher.setAuthTag(blob.subarray(12, 28));
      return Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
    },
  };
}

test('the CA key round-trips wrapped (AES-256-GCM); the blob holds no key material in clear and plaintext buffers are zeroed', async (t) => {
  const { ca, keys } = await fixture;
  const gcm = gcmWrapper();
  let seenPlain: Buffer | undefined;
  const blob = exportCaKeyWrapped(ca.caKey, (plain) => {
    seenPlain = plain;
    t.true(plain.includes(ca.caKey.export({ type: 'pkcs8', format: 'der' })));
    return gcm.wrap(plain);
  });
  t.truthy(seenPlain);
  t.true(seenPlain!.every((b) => b === 0), 'the plaintext handed to wrap is zeroed afterwards');

  const pkcs8Der = ca.caKey.export({ type: 'pkcs8', format: 'der' });
  const pkcs1Der = ca.caKey.export({ type: 'pkcs1', format: 'der' });
  t.false(blob.includes('PRIVATE KEY'));
  t.false(blob.includes('-----BEGIN'));
  for (let at = 0; at + 32 <= pkcs8Der.length; at += 32) t.false(blob.includes(pkcs8Der.subarray(at, at + 32)));
  for (let at = 0; at + 32 <= pkcs1Der.length; at += 32) t.false(blob.includes(pkcs1Der.subarray(at, at + 32)));

  let returnedPlain: Buffer | undefined;
  const key = importCaKeyWrapped(blob, (b) => (returnedPlain = gcm.unwrap(b)));
  t.true(returnedPlain!.every((b) => b === 0), 'the unwrapped plaintext is zeroed after import');
  t.true(key.equals(ca.caKey));

  // The imported key issues certificates that check out against the CA certificate.
  const reopened = openCa(ca.caCertPem, key);
  const registry = new MemoryCertificateRegistry();
  const issued = await issueClientCertificate(reopened, registry, { clientName: 'after-restart', validDays: 1, publicKeyPem: keys[0].publicKeyPem });
  t.is((await checkClientCertificate(registry, ca.caCertPem, issued.certPem)).clientName, 'after-restart');

  // The wrong wrapping key fails in the AEAD; a blob that is not a CA key fails here.
  t.throws(() => importCaKeyWrapped(blob, gcmWrapper().unwrap));
  const other = gcm.wrap(randomBytes(64));
  t.throws(() => importCaKeyWrapped(other, gcm.unwrap), { code: ErrorCode.KeyUnwrap });
  const notKey = gcm.wrap(Buffer.concat([Buffer.from('SVCAKEY1'), randomBytes(64)]));
  t.throws(() => importCaKeyWrapped(notKey, gcm.unwrap), { code: ErrorCode.KeyUnwrap });
  t.throws(() => importCaKeyWrapped(Buffer.alloc(0), gcm.unwrap), { code: ErrorCode.InvalidArgument });
  t.throws(() => exportCaKeyWrapped(ca.caKey, (plain) => plain), { message: /wrap must return a new buffer/ });
});

test('openCa refuses a key that does not belong to the certificate', async (t) => {
  const { ca, foreignCa } = await fixture;
  t.throws(() => openCa(ca.caCertPem, foreignCa.caKey), { code: ErrorCode.InvalidArgument });
  t.throws(() => openCa(ca.caCertPem, createPublicKey(ca.caKey)), { code: ErrorCode.InvalidArgument });
  t.notThrows(() => openCa(ca.caCertPem, ca.caKey));
});

test('the CRL is a signed v2 CRL listing the revoked, unexpired serials', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const a = await issueClientCertificate(ca, registry, { clientName: 'a', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  await issueClientCertificate(ca, registry, { clientName: 'b', validDays: 30, publicKeyPem: keys[0].publicKeyPem });
  const expired = await issueClientCertificate(ca, registry, { clientName: 'c', validDays: 1, publicKeyPem: keys[0].publicKeyPem, now: daysFromNow(-30) });
  await registry.revoke(a.serial);
  await registry.revoke(expired.serial);

  const now = new Date();
  const pem = await buildCrl(ca, registry, { now, nextUpdateDays: 2 });
  const [block] = forge.pem.decode(pem);
  t.is(block?.type, 'X509 CRL');
  const der = Buffer.from(block!.body, 'binary');
  const crl = forge.asn1.fromDer(block!.body, true);
  const [tbs, , signature] = crl.value as forge.asn1.Asn1[];
  const fields = tbs!.value as forge.asn1.Asn1[];
  t.is(forge.asn1.derToInteger(fields[0]!.value as string), 1, 'v2');
  const revokedSeq = (fields[5]!.value as forge.asn1.Asn1[]).map((entry) =>
    forge.util.bytesToHex((entry.value as forge.asn1.Asn1[])[0]!.value as string),
  );
  t.deepEqual(revokedSeq, [a.serial]);
  const nextUpdate = forge.asn1.utcTimeToDate(fields[4]!.value as string);
  t.is(nextUpdate.getTime(), Math.floor((now.getTime() + 2 * dayMs) / 1000) * 1000);

  // The signature covers the TBS bytes exactly, with the CA key.
  const tbsDer = Buffer.from(forge.asn1.toDer(tbs!).getBytes(), 'binary');
  t.true(der.includes(tbsDer));
  const sig = Buffer.from((signature!.value as string).slice(1), 'binary');
  t.true(verify('sha256', tbsDer, new X509Certificate(ca.caCertPem).publicKey, sig));

  const empty = await buildCrl(ca, new MemoryCertificateRegistry());
  const emptyFields = (forge.asn1.fromDer(forge.pem.decode(empty)[0]!.body, true).value[0] as forge.asn1.Asn1).value as forge.asn1.Asn1[];
  t.is(emptyFields.length, 6, 'no revokedCertificates field at all when nothing is revoked');
  await expectCertError(t, buildCrl(ca, registry, { nextUpdateDays: 0 }), ErrorCode.InvalidArgument);
});

// --- A real TLS handshake over loopback with node:tls (OpenSSL) on both ends. ---

interface TlsOutcome {
  readonly data: string;
  readonly error: Error | undefined;
}

interface TlsServerOptions {
  readonly crl?: string;
  /** false only to read OpenSSL's verdict (socket.authorizationError) instead of dropping the peer. */
  readonly rejectUnauthorized?: boolean;
}

async function startTlsServer(ca: CertificateAuthority, registry: CertificateRegistry, serverKey: Key, options: TlsServerOptions = {}) {
  const server = await issueServerCertificate(ca, registry, {
    hostNames: ['localhost'],
    ips: ['127.0.0.1', '::1'],
    validDays: 7,
    publicKeyPem: serverKey.publicKeyPem,
  });
  const seen: string[] = [];
  const tlsServer = tls.createServer(
    {
      key: serverKey.privateKeyPem,
      cert: server.certPem,
      ca: [ca.caCertPem],
      requestCert: true,
      rejectUnauthorized: options.rejectUnauthorized ?? true,
      ...(options.crl === undefined ? {} : { crl: options.crl }),
    },
    (socket) => {
      if (!socket.authorized) {
        socket.end(`unauthorized ${String(socket.authorizationError)}\n`);
        return;
      }
      checkClientCertificate(registry, ca.caCertPem, socket.getPeerCertificate().raw).then(
        (client) => {
          seen.push(client.clientName);
          socket.end(`hello ${client.clientName}\n`);
        },
        (e: unknown) => socket.end(`refused ${isStripvaultError(e) ? e.code : String(e)}\n`),
      );
    },
  );
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  const port = (tlsServer.address() as AddressInfo).port;
  return { tlsServer, port, seen, close: () => new Promise<void>((resolve) => tlsServer.close(() => resolve())) };
}

/** Connects to 127.0.0.1 verifying the server against our CA (the IP SAN must match), and reads to the end. */
function tlsConnect(port: number, caCertPem: string, key: Key, cert: string): Promise<TlsOutcome> {
  return new Promise((resolve) => {
    let data = '';
    let error: Error | undefined;
    const socket = tls.connect({ host: '127.0.0.1', port, ca: [caCertPem], key: key.privateKeyPem, cert });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', (e) => (error = e));
    socket.on('close', () => resolve({ data, error }));
  });
}

test('TLS on loopback: our client certificate is accepted and identified; a foreign-CA client is refused in the handshake', async (t) => {
  const { ca, foreignCa, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const server = await startTlsServer(ca, registry, keys[3]);
  t.teardown(server.close);

  const alice = await issueClientCertificate(ca, registry, { clientName: 'alice', validDays: 7, publicKeyPem: keys[0].publicKeyPem });
  const ok = await tlsConnect(server.port, ca.caCertPem, keys[0], alice.certPem);
  t.is(ok.error, undefined);
  t.is(ok.data, 'hello alice\n');
  t.deepEqual(server.seen, ['alice']);

  // Same CN, another CA: the TLS layer drops it before our handler ever runs.
  const impostor = await issueClientCertificate(foreignCa, new MemoryCertificateRegistry(), {
    clientName: 'alice',
    validDays: 7,
    publicKeyPem: keys[1].publicKeyPem,
  });
  const handshakeFailed = once(server.tlsServer, 'tlsClientError');
  const bad = await tlsConnect(server.port, ca.caCertPem, keys[1], impostor.certPem);
  await handshakeFailed;
  // In TLS 1.3 the client finishes its side of the handshake first, so all it sees is the server hanging up.
  t.is(bad.data, '');
  t.deepEqual(server.seen, ['alice']);

  // Our CA, but revoked in the registry (no CRL loaded): TLS lets it through, our check refuses it.
  const bob = await issueClientCertificate(ca, registry, { clientName: 'bob', validDays: 7, publicKeyPem: keys[2].publicKeyPem });
  await registry.revoke(bob.serial);
  const revoked = await tlsConnect(server.port, ca.caCertPem, keys[2], bob.certPem);
  t.is(revoked.data, `refused ${ErrorCode.CertRevoked}\n`);
  t.deepEqual(server.seen, ['alice']);

  // Why OpenSSL dropped the impostor, read from a server that reports instead of dropping.
  const lenient = await startTlsServer(ca, registry, keys[3], { rejectUnauthorized: false });
  t.teardown(lenient.close);
  const verdict = await tlsConnect(lenient.port, ca.caCertPem, keys[1], impostor.certPem);
  t.regex(verdict.data, /^unauthorized (?:UNABLE_TO_VERIFY_LEAF_SIGNATURE|CERT_SIGNATURE_FAILURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\n$/);
});

test('TLS with our CRL loaded: OpenSSL itself refuses the revoked client and accepts the others', async (t) => {
  const { ca, keys } = await fixture;
  const registry = new MemoryCertificateRegistry();
  const alice = await issueClientCertificate(ca, registry, { clientName: 'alice', validDays: 7, publicKeyPem: keys[0].publicKeyPem });
  const bob = await issueClientCertificate(ca, registry, { clientName: 'bob', validDays: 7, publicKeyPem: keys[1].publicKeyPem });
  await registry.revoke(bob.serial);
  const crl = await buildCrl(ca, registry);
  const server = await startTlsServer(ca, registry, keys[3], { crl });
  t.teardown(server.close);

  const ok = await tlsConnect(server.port, ca.caCertPem, keys[0], alice.certPem);
  t.is(ok.data, 'hello alice\n');

  const handshakeFailed = once(server.tlsServer, 'tlsClientError');
  const bad = await tlsConnect(server.port, ca.caCertPem, keys[1], bob.certPem);
  await handshakeFailed;
  t.is(bad.data, '');
  t.deepEqual(server.seen, ['alice']);

  const lenient = await startTlsServer(ca, registry, keys[3], { crl, rejectUnauthorized: false });
  t.teardown(lenient.close);
  t.is((await tlsConnect(lenient.port, ca.caCertPem, keys[1], bob.certPem)).data, 'unauthorized CERT_REVOKED\n');
  t.is((await tlsConnect(lenient.port, ca.caCertPem, keys[0], alice.certPem)).data, 'hello alice\n');
});
