/**
 * With the store on disk (PGlite data directory): after a working session — init, unseal, COIs,
 * rotation, destruction, certificates — no unwrapped key (workgroup, master, CA private key, a
 * client's private key) appears in any file of the data directory or the audit log's directory.
 */
import test from 'ava';
import { createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decryptCaKey } from '../../keymgr/ca-key-at-rest.ts';
import { checkKeySetRecord, recoverMasterKey } from '../../keymgr/master-key.ts';
import { initAndUnseal, officer, openFixture } from './key-manager-fixture.ts';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

test('no unwrapped key bytes in the data directory or the audit file', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'sv-keymgr-disk-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const dataDir = join(root, 'store');
  const f = await openFixture({ dataDir });
  const secrets: Array<[string, Buffer]> = [];
  let auditDir: string;
  let storedWrapped = Buffer.alloc(0);
  let destroyedWrapped = Buffer.alloc(0);
  try {
    const { km, store } = f;
    auditDir = f.dir;
    const shares = await initAndUnseal(km);
    const volume = await f.volume('vol-disk');
    await km.createCoi('finance', {}, officer);
    await km.createCoi('hr', {}, officer);
    await km.presentVolume({ name: 'finance-disk', volumeId: volume.id, coi: 'finance' }, officer);
    await km.presentVolume({ name: 'hr-disk', volumeId: volume.id, coi: 'hr' }, officer);
    const { oldKeyId } = await km.rotateWorkgroupKey('finance', officer);
    const wrappedRows = await f.sql.query<{ id: string; wrapped: string }>("SELECT id, encode(wrapped, 'hex') AS wrapped FROM workgroup_keys");
    destroyedWrapped = Buffer.from(wrappedRows.find((r) => r.id === oldKeyId)!.wrapped, 'hex');
    storedWrapped = Buffer.from(wrappedRows.find((r) => r.id !== oldKeyId)!.wrapped, 'hex');
    for (const w of await km.wrappersForVolume(volume.id)) secrets.push([`workgroup key ${w.id.toString('hex')}`, Buffer.from(w.key)]);
    t.is(secrets.length, 3);
    await km.destroyWorkgroupKey(oldKeyId, officer);
    const client = await km.issueClientCertificate('db-01', {}, officer);
    secrets.push(['client private key', createPrivateKey(client.privateKeyPem).export({ type: 'pkcs8', format: 'der' })]);

    const masterKey = await recoverMasterKey(checkKeySetRecord((await store.getKeySet())!.record), shares.slice(0, 2));
    secrets.push(['master key', Buffer.from(masterKey)]);
    const ca = (await store.getApplianceCa())!;
    const caKey = decryptCaKey({ masterKey: () => masterKey }, ca.keyEncrypted, ca.certPem);
    secrets.push(['CA private key', caKey.export({ type: 'pkcs8', format: 'der' })]);
    masterKey.fill(0);
    await km.seal(officer);
  } finally {
    await f.audit.close();
    await f.store.close();
  }

  // Keys are looked for whole; the DER private keys by 32-byte windows across their length
  // (a primes or exponent fragment is as bad as the whole key). Raw bytes, hex and base64.
  const needles: Array<[string, Buffer]> = [];
  for (const [what, bytes] of secrets) {
    const windows = bytes.length <= 32 ? [bytes] : Array.from({ length: Math.floor(bytes.length / 96) }, (_, i) => bytes.subarray(i * 96 + 30, i * 96 + 62));
    for (const w of windows) {
      needles.push([what, w], [`${what} (hex)`, Buffer.from(w.toString('hex'))]);
      if (w.length === bytes.length) needles.push([`${what} (base64)`, Buffer.from(w.toString('base64'))]);
    }
  }
  const files = [...(await filesUnder(dataDir)), ...(await filesUnder(auditDir!))];
  t.true(files.length > 10, 'the data directory was written');
  let scannedBytes = 0;
  let storedFound = false;
  let destroyedFound = false;
  for (const file of files) {
    const content = await readFile(file);
    scannedBytes += content.length;
    storedFound ||= content.includes(storedWrapped);
    destroyedFound ||= content.includes(destroyedWrapped);
    for (const [what, needle] of needles) t.false(content.includes(needle), `${what} found in ${file}`);
  }
  // The scan sees what the store keeps: a live wrapped key is there, as raw bytes.
  t.true(storedFound, 'a stored wrapped key is found by the same scan');
  // A destroyed key's wrapped bytes may survive in dead tuples or WAL until PostgreSQL reuses the
  // space; the store no longer serves them. Reported, not asserted.
  t.log(`${files.length} files, ${scannedBytes} bytes, ${needles.length} needles; destroyed wrapped key still in files: ${destroyedFound}`);
});
