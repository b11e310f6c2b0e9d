/**
 * The key manager's init, unseal and seal over an in-memory PGlite store and a temp audit file:
 * every T-subset of officers unseals, T-1 do not, bad shares are refused with their codes, sealed
 * operations are SV_SEALED, and neither the audit log nor the store ever sees a share or the key.
 */
import test from 'ava';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ErrorCode } from '../../appliance/errors.ts';
import { initMasterKey, checkKeySetRecord, recoverMasterKey } from '../../keymgr/master-key.ts';
import { encodeOfficerShare, parseOfficerShare } from '../../keymgr/officer-share.ts';
import { KeyManager } from '../../keymgr/key-manager.ts';
import { expectCode, officer, openFixture, type Fixture } from './key-manager-fixture.ts';

const officers = ['alice', 'bob', 'carol', 'dave', 'erin'];
const threshold = 3;

let fixture: Fixture | null = null;
test.before(async () => {
  fixture = await openFixture();
});
test.after.always(async () => {
  await fixture?.close();
});
const f = (): Fixture => {
  if (fixture === null) throw new Error('fixture not opened');
  return fixture;
};

function subsets<T>(items: readonly T[], size: number): T[][] {
  if (size === 0) return [[]];
  if (items.length < size) return [];
  const [first, ...rest] = items as [T, ...T[]];
  return [...subsets(rest, size - 1).map((s) => [first, ...s]), ...subsets(rest, size)];
}

async function auditActions(): Promise<string[]> {
  return (await f().store.listAudit(0, 1000)).map((r) => r.action);
}

// The tests share one key set and run in order: before init, init, unseal, seal.
let shares: string[] = [];

test.serial('before init: uninitialized, and everything that needs a key set says so', async (t) => {
  const { km } = f();
  t.deepEqual(await km.status(), { initialized: false, sealed: true });
  await expectCode(t, () => km.submitShare('svshare1.x', officer), ErrorCode.NotInitialized);
  await expectCode(t, () => km.seal(officer), ErrorCode.NotInitialized);
  await expectCode(t, () => km.createCoi('finance', {}, officer), ErrorCode.NotInitialized);
  await expectCode(t, () => km.wrappersForVolume(randomUUID()), ErrorCode.NotInitialized);
  await expectCode(t, () => km.rotateWorkgroupKey('finance', officer), ErrorCode.NotInitialized);
  await expectCode(t, () => km.issueClientCertificate('db-01', {}, officer), ErrorCode.NotInitialized);
  await expectCode(t, () => km.caCertificatePem(), ErrorCode.NotInitialized);
});

test.serial('init: bad requests and an unwritable audit log are refused, leaving nothing behind', async (t) => {
  const { km } = f();
  const bad: Array<[string, unknown]> = [
    ['no officers', { officers: [], threshold: 1 }],
    ['threshold above K', { officers: ['a', 'b'], threshold: 3 }],
    ['threshold zero', { officers: ['a', 'b'], threshold: 0 }],
    ['officer twice', { officers: ['Alice', 'alice'], threshold: 1 }],
    ['officer with newline', { officers: ['a\nb'], threshold: 1 }],
    ['CA name with newline', { officers: ['a'], threshold: 1, caCommonName: 'CA\nX' }],
    ['not an object', null],
  ];
  for (const [why, request] of bad) await expectCode(t, () => km.init(request as never, officer), ErrorCode.InvalidArgument, why);
  await expectCode(t, () => km.init({ officers, threshold }, { name: '' }), ErrorCode.InvalidArgument, 'actor without a name');

  const restore = await f().breakAudit();
  try {
    await expectCode(t, () => km.init({ officers, threshold }, officer), ErrorCode.AuditUnavailable);
  } finally {
    await restore();
  }
  t.deepEqual(await km.status(), { initialized: false, sealed: true });
  t.is(await f().store.getKeySet(), null);
  t.is(await f().store.getApplianceCa(), null);
});

test.serial('init: creates the key set and CA, hands out the shares once, and leaves the key manager sealed', async (t) => {
  const { km } = f();
  const result = await km.init({ officers, threshold, caCommonName: 'Test Appliance CA' }, officer);
  t.deepEqual(
    result.shares.map((s) => s.officer),
    officers,
  );
  shares = result.shares.map((s) => s.share);
  t.true(shares.every((s) => parseOfficerShare(s).keySetId === result.keySetId));
  t.regex(result.caCertificatePem, /^-----BEGIN CERTIFICATE-----/);
  t.is(await km.caCertificatePem(), result.caCertificatePem);
  const status = await km.status();
  t.like(status, { initialized: true, sealed: true, unseal: { sealed: true, keySetId: result.keySetId, threshold, received: 0, officers: [] } });

  await expectCode(t, () => km.init({ officers, threshold }, officer), ErrorCode.AlreadyInitialized);
  // Another appliance on the same store (or a restart) sees the key set, sealed.
  const other = await f().reopen();
  t.like(await other.status(), { initialized: true, sealed: true });
  await expectCode(t, () => other.init({ officers: ['mallory'], threshold: 1 }, officer), ErrorCode.AlreadyInitialized);
  t.is((await f().store.getKeySet())?.keySetId, result.keySetId);
});

test.serial('sealed: every operation that needs a key is SV_SEALED', async (t) => {
  const { km } = f();
  await expectCode(t, () => km.createCoi('finance', {}, officer), ErrorCode.Sealed);
  await expectCode(t, () => km.wrappersForVolume(randomUUID()), ErrorCode.Sealed);
  await expectCode(t, () => km.wrapperForCoi('finance'), ErrorCode.Sealed);
  await expectCode(t, () => km.rotateWorkgroupKey('finance', officer), ErrorCode.Sealed);
  await expectCode(t, () => km.createWorkgroupKey('finance', officer), ErrorCode.Sealed);
  await expectCode(t, () => km.issueClientCertificate('db-01', {}, officer), ErrorCode.Sealed);
  await expectCode(t, () => km.issueServerCertificate(['nbd.example.org'], {}, officer), ErrorCode.Sealed);
  // Questions that need no key still work.
  t.deepEqual(await km.listCois(), []);
  t.deepEqual(await km.listCertificates(), []);
});

test.serial('every T-subset of the officers unseals; T-1 shares do not', async (t) => {
  const { km } = f();
  const indices = officers.map((_, i) => i);
  for (const subset of subsets(indices, threshold)) {
    // Most-recent-first as well as in order: the order of arrival does not matter.
    const order = subset[0] === 0 ? [...subset].reverse() : subset;
    for (const [n, i] of order.entries()) {
      const progress = await km.submitShare(shares[i]!, { name: `officer:${officers[i]!}` });
      if (n < threshold - 1) t.like(progress, { sealed: true, received: n + 1 });
      else t.like(progress, { sealed: false, received: threshold });
    }
    const status = await km.status();
    t.false(status.sealed, `officers ${subset.join(',')}`);
    t.deepEqual(status.unseal?.officers, order.map((i) => officers[i]));
    await km.seal(officer);
    t.true((await km.status()).sealed);
  }
  for (const subset of subsets(indices, threshold - 1)) {
    for (const i of subset) await km.submitShare(shares[i]!, officer);
    t.like(await km.status(), { sealed: true, unseal: { received: threshold - 1 } });
    await km.seal(officer); // drops the pending shares
    t.like(await km.status(), { sealed: true, unseal: { received: 0 } });
  }
});

test.serial('wrong, foreign, duplicate and malformed shares are refused with their codes and keep the accepted ones', async (t) => {
  const { km } = f();
  const keySetId = (await km.status()).unseal!.keySetId;
  await km.submitShare(shares[0]!, officer);

  const forged = encodeOfficerShare({ keySetId, officerIndex: 2, threshold, officerCount: officers.length, shareBytes: randomBytes(33) });
  const invalid = await expectCode(t, () => km.submitShare(forged, officer), ErrorCode.OfficerShareInvalid);
  t.regex(invalid.message, /bob/);
  const foreignSet = await initMasterKey({ officers, threshold });
  await expectCode(t, () => km.submitShare(foreignSet.shares[1]!.text, officer), ErrorCode.OfficerShareForeign);
  await expectCode(t, () => km.submitShare(shares[0]!, officer), ErrorCode.OfficerShareDuplicate);
  // Whitespace is ignored, so the same share with a space is still a duplicate.
  await expectCode(t, () => km.submitShare(` ${shares[0]!}\n`, officer), ErrorCode.OfficerShareDuplicate);
  for (const bad of ['', 'svshare1.', 'svshare2.AAAA', shares[1]!.slice(0, -3), 'x'.repeat(5000), 42]) {
    await expectCode(t, () => km.submitShare(bad as string, officer), ErrorCode.OfficerShareMalformed, String(bad).slice(0, 20));
  }
  t.like(await km.status(), { sealed: true, unseal: { received: 1, officers: ['alice'] } });
  await km.submitShare(shares[3]!, officer);
  t.like(await km.submitShare(shares[4]!, officer), { sealed: false });
  await expectCode(t, () => km.submitShare(shares[1]!, officer), ErrorCode.AlreadyUnsealed);

  const rejections = (await f().store.listAudit(0, 1000)).filter((r) => r.action === 'keymgr.unseal.share.reject').map((r) => r.detail['reason']);
  for (const code of [ErrorCode.OfficerShareInvalid, ErrorCode.OfficerShareForeign, ErrorCode.OfficerShareDuplicate, ErrorCode.OfficerShareMalformed, ErrorCode.AlreadyUnsealed]) {
    t.true(rejections.includes(code), code);
  }
  await km.seal(officer);
});

test.serial('concurrent submissions of the same share: one is accepted, the other is a duplicate', async (t) => {
  const { km } = f();
  const results = await Promise.allSettled([km.submitShare(shares[2]!, officer), km.submitShare(shares[2]!, officer)]);
  t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
  const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  t.is(rejected.reason.code, ErrorCode.OfficerShareDuplicate);
  t.like(await km.status(), { unseal: { received: 1 } });
  await km.seal(officer);
});

test.serial('an unwritable audit log refuses shares (not counted) but never prevents sealing', async (t) => {
  const { km } = f();
  const restore = await f().breakAudit();
  try {
    await expectCode(t, () => km.submitShare(shares[0]!, officer), ErrorCode.AuditUnavailable);
    t.like(await km.status(), { sealed: true, unseal: { received: 0 } });
  } finally {
    await restore();
  }
  for (const share of shares.slice(0, threshold)) await km.submitShare(share, officer);
  t.false((await km.status()).sealed);
  const restoreAgain = await f().breakAudit();
  try {
    // Sealing takes capability away: it happens even unrecorded, and the caller hears why.
    await expectCode(t, () => km.seal(officer), ErrorCode.AuditUnavailable);
    t.true((await km.status()).sealed);
  } finally {
    await restoreAgain();
  }
});

test.serial('the audit log records init, shares and seals by officer, and never a share or the key', async (t) => {
  const { store, auditPath } = f();
  const actions = await auditActions();
  for (const action of ['keymgr.init', 'keymgr.unseal.share.accept', 'keymgr.unseal.share.reject', 'keymgr.seal']) t.true(actions.includes(action), action);
  const accepted = (await store.listAudit(0, 1000)).filter((r) => r.action === 'keymgr.unseal.share.accept');
  t.true(accepted.some((r) => r.detail['officer'] === 'carol' && r.detail['unseals'] === false));
  t.true(accepted.some((r) => r.detail['unseals'] === true));

  const keySet = checkKeySetRecord((await store.getKeySet())!.record);
  const masterKey = await recoverMasterKey(keySet, shares.slice(0, threshold));
  const file = await readFile(auditPath, 'utf8');
  const rows = JSON.stringify(await store.listAudit(0, 1000));
  for (const text of [file, rows]) {
    for (const share of shares) {
      t.false(text.includes(share.slice('svshare1.'.length, 40)), 'no share text');
    }
    for (const encoding of ['hex', 'base64', 'base64url'] as const) t.false(text.includes(Buffer.from(masterKey).toString(encoding)), encoding);
  }
  // Nor anywhere in the store.
  const tables = await f().sql.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
  for (const { table_name } of tables) {
    const dump = JSON.stringify(await f().sql.query(`SELECT t::text AS row FROM ${table_name} t`));
    t.false(dump.includes(Buffer.from(masterKey).toString('hex')), table_name);
    for (const share of shares) t.false(dump.includes(share.slice(9, 40)), table_name);
  }
  masterKey.fill(0);
});

test('KeyManager.open refuses missing dependencies', async (t) => {
  await expectCode(t, () => KeyManager.open({} as never), ErrorCode.InvalidArgument);
  await expectCode(t, () => KeyManager.open(null as never), ErrorCode.InvalidArgument);
});
