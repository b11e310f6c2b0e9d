/**
 * Certificates through the key manager: issued with the CA key decrypted for the moment, recorded in
 * the store registry (audited first), checked by the TLS front end's checkClientCertificate,
 * revoked, listed; the private key handed out once and never stored.
 */
import test from 'ava';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { ErrorCode } from '../../appliance/errors.ts';
import { checkClientCertificate } from '../../keymgr/pki-check.ts';
import { expectCode, initAndUnseal, officer, openFixture, storeDump, type Fixture } from './key-manager-fixture.ts';
import { readFile } from 'node:fs/promises';

let fixture: Fixture | null = null;
let shares: string[] = [];
test.before(async () => {
  fixture = await openFixture();
  shares = await initAndUnseal(fixture.km);
});
test.after.always(async () => {
  await fixture?.close();
});
const f = (): Fixture => {
  if (fixture === null) throw new Error('fixture not opened');
  return fixture;
};

test.serial('a client certificate: issued, checked, listed, revoked', async (t) => {
  const { km, sql, auditPath } = f();
  const caPem = await km.caCertificatePem();
  const issued = await km.issueClientCertificate('db-01', { validDays: 30 }, officer);
  t.is(issued.caCertificatePem, caPem);
  const cert = new X509Certificate(issued.certificatePem);
  t.true(cert.verify(new X509Certificate(caPem).publicKey));
  t.true(cert.checkPrivateKey(createPrivateKey(issued.privateKeyPem)), 'the private key belongs to the certificate');
  t.is(cert.serialNumber.toLowerCase(), issued.serial);

  const registry = km.certificateRegistry();
  const checked = await checkClientCertificate(registry, caPem, issued.certificatePem);
  t.is(checked.clientName, 'db-01');
  const listed = (await km.listCertificates()).find((c) => c.serial === issued.serial);
  t.like(listed, { kind: 'client', subject: 'db-01' });
  t.is(listed?.revokedAt, undefined);
  t.true(listed!.notAfter.getTime() - listed!.notBefore.getTime() <= 30 * 86_400_000 + 300_000);

  // The private key was handed out, never kept.
  const body = issued.privateKeyPem.split('\n').filter((l) => l.length === 64);
  const dump = await storeDump(sql);
  const audit = await readFile(auditPath, 'utf8');
  for (const line of body.slice(2, 6)) t.false(dump.includes(line) || audit.includes(line));
  const der = createPrivateKey(issued.privateKeyPem).export({ type: 'pkcs8', format: 'der' });
  t.false(dump.includes(der.subarray(100, 164).toString('hex')));

  const revoked = await km.revokeCertificate(issued.serial.toUpperCase(), officer);
  t.true(revoked.revokedAt instanceof Date);
  await expectCode(t, () => checkClientCertificate(registry, caPem, issued.certificatePem), ErrorCode.CertRevoked);
  const again = await km.revokeCertificate(issued.serial, officer);
  t.deepEqual(again.revokedAt, revoked.revokedAt, 'revoking twice keeps the first time');
  await expectCode(t, () => km.revokeCertificate('ab'.repeat(16), officer), ErrorCode.CertUnknown);
  await expectCode(t, () => km.revokeCertificate('not hex', officer), ErrorCode.InvalidArgument);

  const actions = (await f().store.listAudit(0, 1000)).map((r) => `${r.action} ${r.subject}`);
  t.true(actions.includes(`cert.issue cert:${issued.serial}`));
  t.is(actions.filter((a) => a === `cert.revoke cert:${issued.serial}`).length, 1);
});

test.serial('a server certificate takes DNS names and addresses; bad input is refused', async (t) => {
  const { km } = f();
  const issued = await km.issueServerCertificate(['nbd.example.org', '127.0.0.1', '::1'], {}, officer);
  const cert = new X509Certificate(issued.certificatePem);
  t.regex(cert.subjectAltName ?? '', /DNS:nbd\.example\.org/);
  t.regex(cert.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  t.like((await km.listCertificates()).find((c) => c.serial === issued.serial), { kind: 'server', subject: 'nbd.example.org' });
  // A server certificate does not pass as a client.
  await t.throwsAsync(() => checkClientCertificate(km.certificateRegistry(), issued.caCertificatePem, issued.certificatePem), { code: ErrorCode.CertInvalid });

  await expectCode(t, () => km.issueServerCertificate([], {}, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.issueServerCertificate(['Bad_Host'], {}, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.issueServerCertificate('nbd.example.org' as never, {}, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.issueClientCertificate('DB 01', {}, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.issueClientCertificate('db-02', { validDays: 0 }, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.issueClientCertificate('db-02', { validDays: 100_000 }, officer), ErrorCode.InvalidArgument);
});

test.serial('the registry handed to the TLS front end reads, but cannot record or revoke', async (t) => {
  const { km } = f();
  const registry = km.certificateRegistry();
  const [first] = await registry.listCertificates();
  t.truthy(first);
  t.deepEqual(await registry.find(first!.serial), first);
  await expectCode(t, () => registry.record({ ...first!, serial: 'ab'.repeat(16) }), ErrorCode.AccessDenied);
  await expectCode(t, () => registry.revoke(first!.serial), ErrorCode.AccessDenied);
});

test.serial('an unwritable audit log refuses issuing and revoking; sealed refuses issuing but not revoking', async (t) => {
  const { km } = f();
  const issued = await km.issueClientCertificate('backup-01', {}, officer);
  const before = await km.listCertificates();
  const restore = await f().breakAudit();
  try {
    await expectCode(t, () => km.issueClientCertificate('db-03', {}, officer), ErrorCode.AuditUnavailable);
    await expectCode(t, () => km.revokeCertificate(issued.serial, officer), ErrorCode.AuditUnavailable);
  } finally {
    await restore();
  }
  t.deepEqual(await km.listCertificates(), before, 'nothing issued, nothing revoked');

  await km.seal(officer);
  await expectCode(t, () => km.issueClientCertificate('db-03', {}, officer), ErrorCode.Sealed);
  // Revoking needs no key: a sealed appliance can still cut a client off.
  t.truthy((await km.revokeCertificate(issued.serial, officer)).revokedAt);
  t.true(typeof (await km.caCertificatePem()) === 'string');
  for (const share of shares.slice(0, 2)) await km.submitShare(share, officer);
  t.is((await km.issueClientCertificate('db-03', {}, officer)).caCertificatePem, await km.caCertificatePem());
});
