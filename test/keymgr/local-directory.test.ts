/**
 * The local directory over an in-memory PGlite store: scrypt passwords (empty always refused, one
 * error for every refusal), groups that are local COIs, audited user changes, no caching.
 */
import test from 'ava';
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode } from '../../appliance/errors.ts';
import { LocalDirectory } from '../../keymgr/local-directory.ts';
import { decoyPasswordHash, hashPassword, verifyPassword } from '../../keymgr/password-hash.ts';
import { expectCode, officer, openFixture, storeDump, type Fixture } from './key-manager-fixture.ts';

let fixture: Fixture | null = null;
let directory: LocalDirectory | null = null;
test.before(async () => {
  fixture = await openFixture();
  directory = new LocalDirectory({ store: fixture.store, audit: fixture.audit });
});
test.after.always(async () => {
  await directory?.close();
  await fixture?.close();
});
const f = (): Fixture => fixture!;
const d = (): LocalDirectory => directory!;

test.serial('users log in with their password; every refusal looks the same', async (t) => {
  const password = 'correct horse battery staple';
  await d().addUser('alice', password, officer);
  t.deepEqual(await d().authenticate('alice', password), { name: 'alice', ref: 'local:alice' });
  const refusals: Array<[string, unknown, unknown]> = [
    ['wrong password', 'alice', 'Correct horse battery staple'],
    ['empty password', 'alice', ''],
    ['password not a string', 'alice', null],
    ['unknown user', 'bob', password],
    ['bad user name', 'alice\n', password],
    ['user not a string', 42, password],
    ['huge password', 'alice', 'x'.repeat(2000)],
  ];
  const messages = new Set<string>();
  for (const [why, user, pw] of refusals) {
    const e = await expectCode(t, () => d().authenticate(user as string, pw as string), ErrorCode.AuthFailed, why);
    messages.add(e.message);
    t.is(e.detail, undefined, why);
  }
  t.is(messages.size, 1, 'one message for every refusal');

  await expectCode(t, () => d().addUser('alice', 'another password', officer), ErrorCode.StoreConflict);
  await expectCode(t, () => d().addUser('carol', 'short', officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => d().addUser('carol', '', officer), ErrorCode.InvalidArgument);
  await expectCode(t, () => d().addUser('car ol', 'long enough password', officer), ErrorCode.InvalidArgument);

  await d().setPassword('alice', 'a new long password', officer);
  await expectCode(t, () => d().authenticate('alice', password), ErrorCode.AuthFailed);
  t.is((await d().authenticate('alice', 'a new long password')).name, 'alice');
  const dump = await storeDump(f().sql);
  t.false(dump.includes('a new long password') || dump.includes(password), 'only hashes are stored');
  t.deepEqual(await d().listUsers(), ['alice']);
  await d().removeUser('alice', officer);
  await expectCode(t, () => d().authenticate('alice', 'a new long password'), ErrorCode.AuthFailed);
  await expectCode(t, () => d().removeUser('alice', officer), ErrorCode.NotFound);
});

test.serial('groups are local COIs; a change is seen at once', async (t) => {
  const { store } = f();
  const coi = 'finance';
  await store.createCoi({ id: randomUUID(), name: coi, ldapGroup: null, createdAt: new Date(), firstKey: { id: randomBytes(16).toString('hex'), wrapped: randomBytes(40), createdAt: new Date() } });
  t.false(await d().isMember(coi, { kind: 'user', name: 'dave' }));
  await store.addCoiMember(coi, { kind: 'user', name: 'dave' }, new Date());
  t.true(await d().isMember(coi, { kind: 'user', name: 'dave' }));
  t.false(await d().isMember(coi, { kind: 'client', name: 'dave' }));
  t.deepEqual(await d().members(coi), [{ kind: 'user', name: 'dave' }]);
  t.false(await d().isMember('no-such-group', { kind: 'user', name: 'dave' }));
  t.deepEqual(await d().members('no-such-group'), []);
  t.false(await d().isMember('bad\u0000group', { kind: 'user', name: 'dave' }));
  t.false(await d().isMember(coi, { kind: 'user', name: 'Bad Name' }));
  t.false(await d().isMember(coi, null as never));
  t.deepEqual(await d().members(''), []);
  await store.removeCoiMember(coi, { kind: 'user', name: 'dave' });
  t.false(await d().isMember(coi, { kind: 'user', name: 'dave' }));
});

test.serial('user changes are refused when the audit log cannot be written', async (t) => {
  const restore = await f().breakAudit();
  try {
    await expectCode(t, () => d().addUser('erin', 'long enough password', officer), ErrorCode.AuditUnavailable);
  } finally {
    await restore();
  }
  t.deepEqual(await d().listUsers(), []);
  await d().addUser('erin', 'long enough password', officer);
  t.true((await f().store.listAudit(0, 1000)).some((r) => r.action === 'directory.user.add' && r.subject === 'user:erin'));
});

test('password hashes: scrypt format, salted, and malformed hashes never match', async (t) => {
  const a = await hashPassword('same password');
  const b = await hashPassword('same password');
  t.regex(a, /^scrypt\$15\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
  t.not(a, b, 'salted');
  t.true(await verifyPassword('same password', a));
  t.false(await verifyPassword('same passwore', a));
  t.false(await verifyPassword('', a));
  t.false(await verifyPassword('anything', decoyPasswordHash));
  for (const bad of ['', 'plain', a.replace('scrypt', 'bcrypt'), a.replace('$15$', '$25$'), a.replace('$1$', '$9$'), a.slice(0, -1), `${a}x`]) {
    t.false(await verifyPassword('same password', bad), bad.slice(0, 30));
  }
});

test('a closed store makes the directory unavailable, not a refusal', async (t) => {
  const own = await openFixture();
  const dir = new LocalDirectory({ store: own.store, audit: own.audit });
  await own.store.close();
  await expectCode(t, () => dir.isMember('finance', { kind: 'user', name: 'x' }), ErrorCode.DirectoryUnavailable);
  await expectCode(t, () => dir.authenticate('x', 'long enough password'), ErrorCode.DirectoryUnavailable);
  await own.close().catch(() => undefined);
});
