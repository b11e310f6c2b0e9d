/**
 * Communities of interest, members, virtual disks and workgroup keys through the key manager, on an
 * in-memory PGlite store: life cycles, LDAP COIs through a fake directory (failing closed), key
 * rotation and destruction (gone from store and cache), wrapped keys bound to their COI and id,
 * and every change refused when the audit log cannot be written.
 */
import test from 'ava';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ErrorCode, StripvaultError, fail } from '../../appliance/errors.ts';
import type { DirectoryMember } from '../../keymgr/directory.ts';
import { KeyManager } from '../../keymgr/key-manager.ts';
import { encodings, expectCode, initAndUnseal, officer, openFixture, storeDump, type Fixture } from './key-manager-fixture.ts';

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
let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}`;
const user = (name: string): DirectoryMember => ({ kind: 'user', name });
const client = (name: string): DirectoryMember => ({ kind: 'client', name });
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

async function unsealAgain(km: KeyManager): Promise<void> {
  for (const share of shares.slice(0, 2)) await km.submitShare(share, officer);
}

test.serial('COIs: create, list, validate, members, remove', async (t) => {
  const { km } = f();
  const name = unique('finance');
  const coi = await km.createCoi(name, {}, officer);
  t.like(coi, { name, source: 'local' });
  t.regex(coi.workgroupKeyId ?? '', /^[0-9a-f]{32}$/);
  t.false('ldapGroup' in coi);
  t.deepEqual(await km.getCoi(name), coi);
  t.true((await km.listCois()).some((c) => c.name === name));
  await expectCode(t, () => km.createCoi(name, {}, officer), ErrorCode.StoreConflict);
  for (const bad of ['Finance', 'a b', '', 'x'.repeat(65), 'fin\n', '-fin', 'fin..x', 42]) {
    await expectCode(t, () => km.createCoi(bad as string, {}, officer), ErrorCode.InvalidArgument, String(bad));
  }
  await expectCode(t, () => km.createCoi(unique('x'), { ldapGroup: '' }, officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.createCoi(unique('x'), { ldapGroup: 'cn=a\n,dc=b' }, officer), ErrorCode.InvalidArgument);

  await km.addMember(name, user('alice'), officer);
  await km.addMember(name, client('db-01'), officer);
  await expectCode(t, () => km.addMember(name, user('alice'), officer), ErrorCode.StoreConflict);
  const badMembers: unknown[] = [null, { kind: 'group', name: 'x' }, { kind: 'user', name: '' }, { kind: 'user', name: 'a b' }, { kind: 'client', name: 'DB-01' }, { kind: 'user', name: 'x'.repeat(65) }];
  for (const bad of badMembers) await expectCode(t, () => km.addMember(name, bad as DirectoryMember, officer), ErrorCode.InvalidArgument, JSON.stringify(bad));
  await expectCode(t, () => km.addMember(unique('nope'), user('alice'), officer), ErrorCode.NotFound);
  t.deepEqual(await km.listMembers(name), [user('alice'), client('db-01')]);
  t.true((await km.coisOf(user('alice'))).includes(name));
  t.false((await km.coisOf(user('db-01'))).includes(name), 'a user is not the client of the same name');
  t.true((await km.coisOf(client('db-01'))).includes(name));

  await km.removeMember(name, user('alice'), officer);
  await expectCode(t, () => km.removeMember(name, user('alice'), officer), ErrorCode.NotFound);
  t.false((await km.coisOf(user('alice'))).includes(name), 'takes effect on the next question');
  await expectCode(t, () => km.listMembers(unique('nope')), ErrorCode.NotFound);

  const keyId = coi.workgroupKeyId!;
  await km.wrapperForCoi(name);
  t.true(km.cachedKeyIds().includes(keyId));
  await km.removeCoi(name, officer);
  await expectCode(t, () => km.getCoi(name), ErrorCode.NotFound);
  await expectCode(t, () => km.removeCoi(name, officer), ErrorCode.NotFound);
  t.false(km.cachedKeyIds().includes(keyId), 'its keys left the cache');
  t.deepEqual(await km.workgroupKeyMaterialPresent([keyId]), []);
  t.false((await km.coisOf(client('db-01'))).includes(name));
});

test.serial('LDAP COIs: membership is the directory\'s, asked every time, and fails closed', async (t) => {
  const { km, directory } = f();
  const group = 'cn=engineering,ou=groups,dc=example,dc=org';
  const name = unique('eng');
  const coi = await km.createCoi(name, { ldapGroup: group }, officer);
  t.like(coi, { source: 'ldap', ldapGroup: group });
  await expectCode(t, () => km.addMember(name, user('bob'), officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => km.removeMember(name, user('bob'), officer), ErrorCode.InvalidArgument);

  directory.groups.set(group, [user('bob'), client('build-01')]);
  t.true((await km.coisOf(user('bob'))).includes(name));
  t.true((await km.coisOf(client('build-01'))).includes(name));
  t.false((await km.coisOf(user('carol'))).includes(name));
  t.deepEqual(await km.listMembers(name), [user('bob'), client('build-01')]);
  // A change in the directory is seen by the next question.
  directory.groups.set(group, [user('carol')]);
  t.false((await km.coisOf(user('bob'))).includes(name));
  t.true((await km.coisOf(user('carol'))).includes(name));

  // Any failure of the directory: no answer, never "member".
  for (const failure of [new Error('connection reset'), new StripvaultError(ErrorCode.AuthFailed, 'bind refused'), new StripvaultError(ErrorCode.DirectoryUnavailable, 'down')]) {
    directory.failing = failure;
    await expectCode(t, () => km.coisOf(user('carol')), ErrorCode.DirectoryUnavailable);
    await expectCode(t, () => km.listMembers(name), ErrorCode.DirectoryUnavailable);
    await expectCode(t, () => km.virtualDisksFor(user('carol')), ErrorCode.DirectoryUnavailable);
  }
  directory.failing = null;
  // An answer that is not a plain `true` is not membership.
  const sloppy = Object.create(directory) as typeof directory;
  sloppy.isMember = async () => 'yes' as unknown as boolean;
  const withSloppy = await KeyManager.open({ store: f().store, audit: f().audit, directory: sloppy });
  t.false((await withSloppy.coisOf(user('carol'))).includes(name));
  // No directory at all: LDAP COIs cannot be answered.
  const without = await KeyManager.open({ store: f().store, audit: f().audit });
  const e = await expectCode(t, () => without.coisOf(user('carol')), ErrorCode.DirectoryUnavailable);
  t.regex(e.message, /no directory/);
  await km.removeCoi(name, officer);
});

test.serial('virtual disks: present, list, per member, keys for the volume, withdraw', async (t) => {
  const { km, directory } = f();
  const volume = await f().volume(unique('vol'));
  const local = unique('hr');
  const group = 'cn=ops,dc=example,dc=org';
  const ldap = unique('ops');
  await km.createCoi(local, {}, officer);
  await km.createCoi(ldap, { ldapGroup: group }, officer);
  await km.addMember(local, user('alice'), officer);
  directory.groups.set(group, [user('dave')]);

  const diskName = unique('hr disk ä');
  const disk = await km.presentVolume({ name: diskName, volumeId: volume.id, coi: local }, officer);
  t.like(disk, { name: diskName, volumeId: volume.id, volumeName: volume.name, coi: local });
  const opsDisk = await km.presentVolume({ name: unique('ops-disk'), volumeId: volume.id, coi: ldap }, officer);
  await expectCode(t, () => km.presentVolume({ name: diskName, volumeId: volume.id, coi: ldap }, officer), ErrorCode.StoreConflict);
  await expectCode(t, () => km.presentVolume({ name: unique('again'), volumeId: volume.id, coi: local }, officer), ErrorCode.StoreConflict);
  await expectCode(t, () => km.presentVolume({ name: unique('x'), volumeId: randomUUID(), coi: local }, officer), ErrorCode.NotFound);
  await expectCode(t, () => km.presentVolume({ name: unique('x'), volumeId: volume.id, coi: unique('nope') }, officer), ErrorCode.NotFound);
  for (const bad of ['', 'a'.repeat(256), 'a\u0000b', 'a\nb', 'a\u0007b', 'a\u202eb']) {
    await expectCode(t, () => km.presentVolume({ name: bad, volumeId: volume.id, coi: local }, officer), ErrorCode.InvalidArgument, JSON.stringify(bad));
  }
  await expectCode(t, () => km.presentVolume({ name: unique('x'), volumeId: 'not-a-uuid', coi: local }, officer), ErrorCode.InvalidArgument);

  t.deepEqual(
    (await km.listVirtualDisks({ volumeId: volume.id })).map((d) => d.name),
    [disk.name, opsDisk.name].sort(),
  );
  t.deepEqual(await km.listVirtualDisks({ coi: local }), [disk]);
  t.deepEqual(await km.virtualDisksFor(user('alice')), [disk]);
  t.deepEqual(await km.virtualDisksFor(user('dave')), [opsDisk]);
  t.deepEqual(await km.virtualDisksFor(user('mallory')), []);

  const wrappers = await km.wrappersForVolume(volume.id);
  const localKey = await km.wrapperForCoi(local);
  const ldapKey = await km.wrapperForCoi(ldap);
  t.deepEqual(
    wrappers.map((w) => hex(w.id)).sort(),
    [hex(localKey.id), hex(ldapKey.id)].sort(),
  );
  t.is(hex(localKey.id), (await km.getCoi(local)).workgroupKeyId ?? 'none');
  for (const w of wrappers) t.is(w.key.length, 32);
  // The caller gets copies: changing one does not change the key manager's.
  localKey.key.fill(0);
  t.notDeepEqual((await km.wrapperForCoi(local)).key, localKey.key);
  t.deepEqual(await km.wrappersForVolume((await f().volume(unique('unpresented'))).id), []);
  await expectCode(t, () => km.wrappersForVolume(randomUUID()), ErrorCode.NotFound);
  await expectCode(t, () => km.wrapperForCoi(unique('nope')), ErrorCode.NotFound);

  await expectCode(t, () => km.removeCoi(local, officer), ErrorCode.StoreConflict);
  await km.withdrawVirtualDisk(disk.name, officer);
  await expectCode(t, () => km.withdrawVirtualDisk(disk.name, officer), ErrorCode.NotFound);
  t.deepEqual(await km.virtualDisksFor(user('alice')), []);
  t.deepEqual(
    (await km.wrappersForVolume(volume.id)).map((w) => hex(w.id)),
    [hex(ldapKey.id)],
  );
  await km.removeCoi(local, officer);
});

test.serial('workgroup keys: rotation keeps the old key until it is destroyed, then it is gone from store and cache', async (t) => {
  const { km, sql } = f();
  const volume = await f().volume(unique('vol'));
  const coi = unique('legal');
  await km.createCoi(coi, {}, officer);
  await km.presentVolume({ name: unique('legal-disk'), volumeId: volume.id, coi }, officer);
  const old = await km.wrapperForCoi(coi);
  const oldId = hex(old.id);
  const [oldRow] = await sql.query<{ wrapped: string }>("SELECT encode(wrapped, 'hex') AS wrapped FROM workgroup_keys WHERE id = $1", [oldId]);
  const oldWrapped = oldRow!.wrapped;

  const { oldKeyId, newKeyId } = await km.rotateWorkgroupKey(coi, officer);
  t.is(oldKeyId, oldId);
  t.not(newKeyId, oldKeyId);
  t.is((await km.getCoi(coi)).workgroupKeyId, newKeyId);
  t.is(hex((await km.wrapperForCoi(coi)).id), newKeyId);
  const both = await km.wrappersForVolume(volume.id);
  t.deepEqual(both.map((w) => hex(w.id)).sort(), [oldKeyId, newKeyId].sort());
  t.deepEqual(both.find((w) => hex(w.id) === oldKeyId)?.key, old.key, 'the retired key still unwraps, unchanged');
  t.like(
    (await km.listWorkgroupKeys({ coi })).map((k) => [k.id, k.state]),
    [
      [oldKeyId, 'retired'],
      [newKeyId, 'active'],
    ],
  );
  t.deepEqual(await km.workgroupKeyMaterialPresent([oldKeyId, newKeyId]), [oldKeyId, newKeyId].sort());
  t.true(km.cachedKeyIds().includes(oldKeyId));

  await km.destroyWorkgroupKey(oldKeyId, officer);
  t.deepEqual(
    (await km.wrappersForVolume(volume.id)).map((w) => hex(w.id)),
    [newKeyId],
  );
  t.false(km.cachedKeyIds().includes(oldKeyId), 'cache wiped');
  t.deepEqual(await km.workgroupKeyMaterialPresent([oldKeyId, newKeyId]), [newKeyId]);
  t.like((await km.listWorkgroupKeys({ coi }))[0], { id: oldKeyId, state: 'destroyed' });
  t.true((await km.listWorkgroupKeys({ coi }))[0]!.destroyedAt instanceof Date);
  const dump = await storeDump(sql);
  t.true(dump.includes(oldKeyId), 'the row (id) stays for the shred check');
  t.false(dump.includes(oldWrapped), 'no wrapped copy left in any table');
  for (const text of encodings(old.key)) t.false(dump.includes(text), 'no unwrapped copy in any table');
  const audit = await readFile(f().auditPath, 'utf8');
  for (const text of [...encodings(old.key), oldWrapped]) t.false(audit.includes(text), 'nor in the audit file');
  // Destroying again changes nothing; an unknown id is SV_NOT_FOUND; a bad one SV_INVALID_ARGUMENT.
  const entries = (await f().store.listAudit(0, 1000)).length;
  await km.destroyWorkgroupKey(oldKeyId, officer);
  t.is((await f().store.listAudit(0, 1000)).length, entries);
  await expectCode(t, () => km.destroyWorkgroupKey('ab'.repeat(16), officer), ErrorCode.NotFound);
  await expectCode(t, () => km.destroyWorkgroupKey('AB'.repeat(16), officer), ErrorCode.InvalidArgument);

  // Destroying the active key works sealed too, and leaves the COI keyless until a new one is made.
  await km.seal(officer);
  t.deepEqual(km.cachedKeyIds(), [], 'seal wiped the cache');
  await km.destroyWorkgroupKey(newKeyId, officer);
  await unsealAgain(km);
  await expectCode(t, () => km.wrapperForCoi(coi), ErrorCode.KeyDestroyed);
  await expectCode(t, () => km.rotateWorkgroupKey(coi, officer), ErrorCode.KeyDestroyed);
  await expectCode(t, () => km.presentVolume({ name: unique('keyless'), volumeId: volume.id, coi }, officer), ErrorCode.KeyDestroyed);
  t.deepEqual(await km.wrappersForVolume(volume.id), []);
  const fresh = await km.createWorkgroupKey(coi, officer);
  await expectCode(t, () => km.createWorkgroupKey(coi, officer), ErrorCode.StoreConflict);
  t.is(hex((await km.wrapperForCoi(coi)).id), fresh);
});

test.serial('a wrapped key moved or copied to another COI or id does not unwrap', async (t) => {
  const { km, sql, store, audit, directory } = f();
  const a = unique('alpha');
  const b = unique('beta');
  await km.createCoi(a, {}, officer);
  await km.createCoi(b, {}, officer);
  const aKey = (await km.getCoi(a)).workgroupKeyId!;
  const bKey = (await km.getCoi(b)).workgroupKeyId!;
  // Someone with write access to the store gives B's row A's wrapped key...
  await sql.query('UPDATE workgroup_keys SET wrapped = (SELECT wrapped FROM workgroup_keys WHERE id = $1) WHERE id = $2', [aKey, bKey]);
  // ...and a fresh appliance (nothing cached) unwraps.
  const fresh = await KeyManager.open({ store, audit, directory });
  await unsealAgain(fresh);
  await expectCode(t, () => fresh.wrapperForCoi(b), ErrorCode.KeyUnwrap);
  t.is((await fresh.wrapperForCoi(a)).key.length, 32, 'the original still opens');

  // Moving A's row itself to B (keeping its id) fails too.
  await sql.query("UPDATE workgroup_keys SET state = 'retired', retired_at = now() WHERE id = $1", [bKey]);
  await sql.query('UPDATE workgroup_keys SET coi_id = (SELECT id FROM cois WHERE name = $1) WHERE id = $2', [b, aKey]);
  const again = await KeyManager.open({ store, audit, directory });
  await unsealAgain(again);
  await expectCode(t, () => again.wrapperForCoi(b), ErrorCode.KeyUnwrap);
  // A flipped bit is caught the same way.
  await sql.query("UPDATE workgroup_keys SET coi_id = (SELECT id FROM cois WHERE name = $1), wrapped = set_byte(wrapped, 5, get_byte(wrapped, 5) # 1) WHERE id = $2", [a, aKey]);
  const third = await KeyManager.open({ store, audit, directory });
  await unsealAgain(third);
  await expectCode(t, () => third.wrapperForCoi(a), ErrorCode.KeyUnwrap);
  await km.removeCoi(a, officer);
  await km.removeCoi(b, officer);
});

test.serial('an unwritable audit log refuses every change, and nothing changes', async (t) => {
  const { km, store, sql } = f();
  const volume = await f().volume(unique('vol'));
  const other = await f().volume(unique('vol'));
  const coi = unique('audited');
  const bare = unique('bare');
  await km.createCoi(coi, {}, officer);
  await km.createCoi(bare, {}, officer);
  await km.addMember(coi, user('alice'), officer);
  const diskName = unique('audited-disk');
  await km.presentVolume({ name: diskName, volumeId: volume.id, coi }, officer);
  const keyId = (await km.getCoi(coi)).workgroupKeyId!;
  await km.wrapperForCoi(coi);
  const before = await keyManagerTables();
  const auditRows = (await store.listAudit(0, 1000)).length;

  const restore = await f().breakAudit();
  try {
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['createCoi', () => km.createCoi(unique('refused'), {}, officer)],
      ['removeCoi', () => km.removeCoi(bare, officer)],
      ['addMember', () => km.addMember(coi, user('bob'), officer)],
      ['removeMember', () => km.removeMember(coi, user('alice'), officer)],
      ['presentVolume', () => km.presentVolume({ name: unique('refused'), volumeId: other.id, coi }, officer)],
      ['withdrawVirtualDisk', () => km.withdrawVirtualDisk(diskName, officer)],
      ['rotateWorkgroupKey', () => km.rotateWorkgroupKey(coi, officer)],
      ['destroyWorkgroupKey', () => km.destroyWorkgroupKey(keyId, officer)],
    ];
    for (const [why, run] of attempts) await expectCode(t, run, ErrorCode.AuditUnavailable, why);
  } finally {
    await restore();
  }
  t.deepEqual(await keyManagerTables(), before);
  t.is((await store.listAudit(0, 1000)).length, auditRows, 'nothing was recorded either');
  t.true(km.cachedKeyIds().includes(keyId), 'the refused destruction did not even touch the cache');
  t.deepEqual(await km.workgroupKeyMaterialPresent([keyId]), [keyId]);
  // Back to normal once the log can be written.
  await km.rotateWorkgroupKey(coi, officer);

  async function keyManagerTables(): Promise<Record<string, unknown[]>> {
    const out: Record<string, unknown[]> = {};
    for (const table of ['cois', 'coi_members', 'workgroup_keys', 'virtual_disks']) {
      out[table] = (await sql.query<{ row: string }>(`SELECT t::text AS row FROM ${table} t`)).map((r) => r.row).sort();
    }
    return out;
  }
});

test.serial('the store and the audit log never hold an unwrapped workgroup key', async (t) => {
  const { km, sql, auditPath } = f();
  const keys: Uint8Array[] = [];
  for (const coi of (await km.listCois()).filter((c) => c.workgroupKeyId !== undefined)) keys.push((await km.wrapperForCoi(coi.name)).key);
  t.true(keys.length > 0);
  const dump = await storeDump(sql);
  const audit = await readFile(auditPath, 'utf8');
  for (const key of keys) for (const text of encodings(key)) t.false(dump.includes(text) || audit.includes(text));
});

test('directory answers are validated before use', async (t) => {
  const { store, audit } = f();
  const broken = {
    kind: 'broken',
    authenticate: async () => fail(ErrorCode.AuthFailed, 'no'),
    isMember: async () => undefined as unknown as boolean,
    members: async () => null as unknown as DirectoryMember[],
    close: async () => undefined,
  };
  const name = unique('brk');
  await f().km.createCoi(name, { ldapGroup: 'cn=broken,dc=example,dc=org' }, officer);
  const km = await KeyManager.open({ store, audit, directory: broken });
  await expectCode(t, () => km.coisOf(user('x')), ErrorCode.DirectoryUnavailable);
  await expectCode(t, () => km.listMembers(name), ErrorCode.DirectoryUnavailable);
  await f().km.removeCoi(name, officer);
});
