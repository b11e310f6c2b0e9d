/**
 * The audit log on an in-memory PGlite store and a temp file: the chain, verification against
 * edits, deletions and truncation in either sink, fail-closed appends when a sink cannot be
 * written, and concurrent appenders that never fork the chain.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, open, readFile, rename, rm, rmdir, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, StripvaultError, type ErrorCode as ErrorCodeType } from '../../appliance/errors.ts';
import { openPgliteSql } from '../../appliance/store/pglite-sql.ts';
import type { SqlPool } from '../../appliance/store/sql.ts';
import { Store } from '../../appliance/store/store.ts';
import { canonicalJson } from '../../keymgr/audit-canonical.ts';
import { auditHash, auditHashMatches, auditLine, checkAuditEntry, sealAuditRecord } from '../../keymgr/audit-entry.ts';
import { AuditLog, audited, auditGenesisHash, verifyAudit, type AuditEntry, type AuditRecord } from '../../keymgr/audit.ts';

interface Fixture {
  readonly store: Store;
  readonly sql: SqlPool;
  readonly dir: string;
  readonly filePath: string;
  readonly log: AuditLog;
}

// Starting PGlite costs seconds, so the tests share one store, run one at a time, and start
// from an empty log; only the test that closes its store gets one of its own.
let shared: { readonly sql: SqlPool; readonly store: Store } | null = null;
test.before(async () => {
  const sql = await openPgliteSql(null);
  shared = { sql, store: await Store.open(sql) };
});
test.after.always(async () => {
  await shared?.store.close();
});

async function fixture(t: ExecutionContext, options: { ownStore?: boolean } = {}): Promise<Fixture> {
  let sql: SqlPool;
  let store: Store;
  if (options.ownStore === true) {
    sql = await openPgliteSql(null);
    store = await Store.open(sql);
  } else {
    if (shared === null) throw new Error('store not opened');
    ({ sql, store } = shared);
    await asSuperuser(sql, 'TRUNCATE audit_log, audit_sinks');
  }
  const dir = await mkdtemp(join(tmpdir(), 'sv-audit-'));
  const filePath = join(dir, 'audit.log');
  const log = new AuditLog({ store, filePath });
  t.teardown(async () => {
    await log.close();
    if (options.ownStore === true) await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { store, sql, dir, filePath, log };
}

const entry = (i: number, actor = 'officer:alice'): AuditEntry => ({
  actor,
  action: 'key.workgroup.create',
  subject: `coi:finance-${i}`,
  detail: { keyId: `wk-${i}`, bits: 256, members: ['alice', 'bob'] },
});

async function appendMany(log: AuditLog, count: number, actor?: string): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let i = 1; i <= count; i++) out.push(await log.append(entry(i, actor)));
  return out;
}

async function expectCode(t: ExecutionContext, run: () => Promise<unknown>, code: ErrorCodeType): Promise<StripvaultError> {
  return (await t.throwsAsync(run, { instanceOf: StripvaultError, code })) as StripvaultError;
}

async function fileLines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split('\n').filter((l) => l.length > 0);
}

async function storeCount(store: Store): Promise<number> {
  return (await store.listAudit(0, 1000)).length;
}

/** As an attacker with database superuser rights would: past the append-only triggers and the chain's foreign key. */
async function asSuperuser(sql: SqlPool, statement: string): Promise<void> {
  await sql.transaction(async (tx) => {
    await tx.query('SET LOCAL session_replication_role = replica');
    await tx.query(statement);
  });
}

test('canonical JSON sorts keys, drops whitespace and refuses what is not plain JSON', (t) => {
  t.is(canonicalJson({ b: [1, { z: null, a: true }], a: 'x"y', é: -0 }), '{"a":"x\\"y","b":[1,{"a":true,"z":null}],"é":0}');
  t.is(canonicalJson({ b: 1, a: 2 }), canonicalJson({ a: 2, b: 1 }));
  for (const bad of [1.5, Number.NaN, 2 ** 53, undefined, () => 1, 1n, new Date(0), Buffer.from('k'), new Uint8Array(2), '\ud800', { ['\udc00']: 1 }]) {
    t.throws(() => canonicalJson({ v: bad }), { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument }, String(bad));
  }
});

test('the entry hash matches a vector computed outside this code', (t) => {
  // printf '%s' '{"action":"key.workgroup.create","actor":"officer:alice","at":"2024-01-02T03:04:05.678Z",
  //   "detail":{"bits":256,"keyId":"wk-1"},"seq":1,"subject":"coi:finance"}'"$(printf '0%.0s' {1..64})" | sha256sum
  // (one line, no spaces; Python's json.dumps(sort_keys=True, separators=(',', ':')) + hashlib agrees).
  const vector = 'f58466c7f03504786d26b0b171609a1fe28b4fd4d6853647661b39463674f866';
  const body = { actor: 'officer:alice', action: 'key.workgroup.create', subject: 'coi:finance', detail: { keyId: 'wk-1', bits: 256 } };
  const record = sealAuditRecord({ seq: 0, hash: auditGenesisHash }, checkAuditEntry(body), new Date('2024-01-02T03:04:05.678Z'));
  t.is(record.seq, 1);
  t.is(record.prevHash, '0'.repeat(64));
  t.is(record.hash, vector);
  t.is(auditHash(record, record.prevHash), vector);
  t.true(auditHashMatches(record));
  t.false(auditHashMatches({ ...record, subject: 'coi:finance2' }));
  t.is(
    auditLine(record),
    `{"action":"key.workgroup.create","actor":"officer:alice","at":"2024-01-02T03:04:05.678Z","detail":{"bits":256,"keyId":"wk-1"},"hash":"${vector}","prevHash":"${'0'.repeat(64)}","seq":1,"subject":"coi:finance"}\n`,
  );
});

test.serial('entries are validated and secrets kept out before anything is recorded', async (t) => {
  const { log, store, filePath } = await fixture(t);
  const ok: AuditEntry = { actor: 'system', action: 'unseal', subject: 'appliance:a1', detail: { keyId: 'k1', shareIndex: 2, fingerprint: 'ab'.repeat(32), sizeBytes: 4096 } };
  const bad: Array<[string, unknown]> = [
    ['detail names a key', { ...ok, detail: { key: 'deadbeef' } }],
    ['nested master key', { ...ok, detail: { wrapped: { masterKey: 'x' } } }],
    ['password anywhere', { ...ok, detail: { ldapPasswordHash: 'x' } }],
    ['officer shares', { ...ok, detail: { list: [{ shares: ['a'] }] } }],
    ['private key', { ...ok, detail: { private_key_pem: 'x' } }],
    ['binary value', { ...ok, detail: { blob: Buffer.from('secret') } }],
    ['class instance', { ...ok, detail: { when: new Date() } }],
    ['detail too large', { ...ok, detail: { text: 'x'.repeat(5000) } }],
    ['control characters', { ...ok, detail: { note: 'line\nforged' } }],
    ['bad action', { ...ok, action: 'Key Create' }],
    ['empty actor', { ...ok, actor: '' }],
    ['actor with a newline', { ...ok, actor: 'alice\n{"seq":9}' }],
    ['not an object', null],
  ];
  for (const [label, value] of bad) {
    await t.throwsAsync(() => log.append(value as AuditEntry), { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument }, label);
  }
  t.is(await storeCount(store), 0);
  const record = await log.append(ok);
  t.is(record.seq, 1);
  t.deepEqual(record.detail, ok.detail);
  t.is((await fileLines(filePath)).length, 1);
});

test.serial('appends chain in both sinks and verify passes; audited runs the operation after the append', async (t) => {
  const { log, store, filePath } = await fixture(t);
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 0, fileEntries: 0 });
  const records = await appendMany(log, 5);
  const order: string[] = [];
  const result = await audited(log, { actor: 'officer:bob', action: 'cert.revoke', subject: 'serial:0a1b', detail: { reason: 'keyCompromise' } }, async (record) => {
    order.push(`op after ${record.seq}`);
    t.is((await store.listAudit(5, 10)).length, 1, 'the entry is in the store before the operation runs');
    t.is((await fileLines(filePath)).length, 6, 'and in the file');
    return 'done';
  });
  t.is(result, 'done');
  t.deepEqual(order, ['op after 6']);
  records.forEach((r, i) => {
    t.is(r.seq, i + 1);
    t.is(r.prevHash as string | undefined, i === 0 ? '0'.repeat(64) : records[i - 1]?.hash);
    t.true(auditHashMatches(r));
  });
  const rows = await store.listAudit(0, 100);
  t.deepEqual(rows.slice(0, 5), records);
  t.deepEqual(await fileLines(filePath), rows.map((r) => auditLine(r).trimEnd()));
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 6, fileEntries: 6 });
  t.is(await store.getAuditSinkMark(log.sinkName), 6);
});

test.serial('the store itself refuses edits, deletions and forks of the chain', async (t) => {
  const { log, store, sql } = await fixture(t);
  const records = await appendMany(log, 3);
  await t.throwsAsync(() => sql.query(`UPDATE audit_log SET detail = '{"keyId":"other"}' WHERE seq = 2`), { message: /append-only/ });
  await t.throwsAsync(() => sql.query('DELETE FROM audit_log WHERE seq = 3'), { message: /append-only/ });
  await t.throwsAsync(() => sql.query('TRUNCATE audit_log'), { message: /append-only/ });
  const second = records[1];
  if (second === undefined) throw new Error('no second record');
  // A second entry 3 after entry 2, or an entry 5 after nothing: what an appender without the lock might try.
  const fork = sealAuditRecord({ seq: 2, hash: second.hash }, checkAuditEntry(entry(9)), new Date());
  await expectCode(t, () => store.auditTransaction((tx) => tx.insert(fork)), ErrorCode.StoreConflict);
  const gap = sealAuditRecord({ seq: 4, hash: records[2]?.hash ?? '' }, checkAuditEntry(entry(9)), new Date());
  await expectCode(t, () => store.auditTransaction((tx) => tx.insert(gap)), ErrorCode.StoreConflict);
  t.is(await storeCount(store), 3);
});

test.serial('verify names the entry edited in the store', async (t) => {
  const { log, store, sql, filePath } = await fixture(t);
  await appendMany(log, 5);
  await asSuperuser(sql, `UPDATE audit_log SET detail = '{"keyId":"wk-forged","bits":256,"members":["alice","bob"]}' WHERE seq = 3`);
  const result = await verifyAudit({ store, filePath });
  t.false(result.ok);
  t.is(result.firstBad?.seq, 3);
  t.is(result.firstBad?.sink, 'store');
  t.regex(result.firstBad?.reason ?? '', /edited/);
  t.is(result.entries, 2);
  // A value our canonical JSON refuses cannot have been written by us: reported, not thrown.
  await asSuperuser(sql, `UPDATE audit_log SET detail = '{"keyId":1.5}' WHERE seq = 1`);
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 1, sink: 'store' });
});

test.serial('verify catches an entry rewritten in the store with a recomputed hash, by the file', async (t) => {
  const { log, store, sql, filePath } = await fixture(t);
  const records = await appendMany(log, 3);
  const last = records[2];
  if (last === undefined) throw new Error('no record');
  const forged = sealAuditRecord({ seq: 2, hash: last.prevHash }, checkAuditEntry({ ...entry(3), subject: 'coi:forged' }), new Date(last.at));
  await asSuperuser(sql, `UPDATE audit_log SET subject = 'coi:forged', hash = '${forged.hash}' WHERE seq = 3`);
  const result = await verifyAudit({ store, filePath });
  t.like(result.firstBad, { seq: 3, sink: 'both' });
});

test.serial('verify fails when a store row is deleted, and when the store tail is cut', async (t) => {
  const { log, store, sql, filePath } = await fixture(t);
  await appendMany(log, 5);
  await asSuperuser(sql, 'DELETE FROM audit_log WHERE seq = 5');
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 5, sink: 'store' });
  await asSuperuser(sql, 'DELETE FROM audit_log WHERE seq = 3');
  const result = await verifyAudit({ store, filePath });
  t.like(result.firstBad, { seq: 3, sink: 'store' });
  t.regex(result.firstBad?.reason ?? '', /missing from the store/);
});

test.serial('verify names an edited, deleted or reordered file line; append refuses a file whose tail was edited', async (t) => {
  const { log, store, filePath } = await fixture(t);
  await appendMany(log, 5);
  const original = await readFile(filePath, 'utf8');
  const lines = original.split('\n').slice(0, -1);
  const write = async (ls: string[]): Promise<void> => writeFile(filePath, ls.map((l) => `${l}\n`).join(''));

  await write(lines.map((l, i) => (i === 1 ? l.replace('"wk-2"', '"wk-X"') : l)));
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 2, sink: 'file' });

  await write(lines.filter((_, i) => i !== 2));
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 3, sink: 'file' });

  const swapped = [...lines];
  [swapped[1], swapped[2]] = [swapped[2] ?? '', swapped[1] ?? ''];
  await write(swapped);
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 2, sink: 'file' });

  await write(lines.map((l, i) => (i === 0 ? l.replace('{"action"', '{ "action"') : l)));
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 1, sink: 'file', reason: 'line 1 is not canonical JSON' });

  await write([...lines.slice(0, 2), 'x'.repeat(40_000), ...lines.slice(2)]);
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 3, sink: 'file', reason: 'line 3 is longer than any entry' });

  await writeFile(filePath, Buffer.concat([Buffer.from(lines.slice(0, 2).join('\n') + '\n'), Buffer.from([0xff, 0xfe, 0x0a])]));
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 3, sink: 'file', reason: 'line 3 is not UTF-8' });

  await write(lines.map((l, i) => (i === 4 ? l.replace('"wk-5"', '"wk-Y"') : l)));
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 5, sink: 'file' });
  let ran = false;
  await expectCode(t, () => audited(log, entry(6), () => (ran = true)), ErrorCode.AuditTampered);
  t.false(ran);
  t.is(await storeCount(store), 5, 'refused before anything was recorded');

  await writeFile(filePath, original);
  t.true((await verifyAudit({ store, filePath })).ok);
  t.is((await log.append(entry(6))).seq, 6);
  t.true((await verifyAudit({ store, filePath })).ok);
});

test.serial('verify fails on a truncated file; append refuses to refill it', async (t) => {
  const { log, store, filePath } = await fixture(t);
  await appendMany(log, 4);
  const original = await readFile(filePath);
  await truncate(filePath, original.length - 20);
  let result = await verifyAudit({ store, filePath });
  t.like(result.firstBad, { seq: 4, sink: 'file' });
  t.is(result.fileEntries, 3);

  const withoutLast = original.subarray(0, original.lastIndexOf(0x0a, original.length - 2) + 1);
  await writeFile(filePath, withoutLast);
  result = await verifyAudit({ store, filePath });
  t.like(result.firstBad, { seq: 4, sink: 'file' });
  t.regex(result.firstBad?.reason ?? '', /truncated/);
  await expectCode(t, () => log.append(entry(5)), ErrorCode.AuditTampered);

  await rm(filePath);
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 1, sink: 'file' });
  await expectCode(t, () => log.append(entry(5)), ErrorCode.AuditTampered);
  t.is(await storeCount(store), 4);
});

test.serial('a torn last line above the mark is a crash, not tampering: verify passes and the next append repairs it', async (t) => {
  const { log, store, filePath, dir } = await fixture(t);
  await appendMany(log, 3);
  // Another appliance appends entry 4 to the shared store; this file lags legitimately.
  const other = new AuditLog({ store, filePath: join(dir, 'other.log') });
  t.teardown(() => other.close());
  const fourth = await other.append(entry(4, 'officer:carol'));
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 4, fileEntries: 3 });
  // A crash while writing entry 4 here would leave a prefix of its line.
  await writeFile(filePath, auditLine(fourth).slice(0, 40), { flag: 'a' });
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 4, fileEntries: 3 });
  await writeFile(filePath, 'garbage', { flag: 'a' });
  t.like((await verifyAudit({ store, filePath })).firstBad, { seq: 4, sink: 'file' });
  await expectCode(t, () => log.append(entry(5)), ErrorCode.AuditTampered);
  // Back to the torn prefix only.
  await truncate(filePath, (await readFile(filePath)).length - 'garbage'.length);
  t.is((await log.append(entry(5))).seq, 5);
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 5, fileEntries: 5 });
  t.deepEqual(await verifyAudit({ store, filePath: other.filePath }), { ok: true, entries: 5, fileEntries: 4 });
});

test.serial('an unwritable file sink refuses the append and audited() does not run the operation', async (t) => {
  const { store, dir } = await fixture(t);
  let ran = 0;
  const operation = (): void => {
    ran += 1;
  };

  // The path is a directory: nothing can be opened, and nothing is recorded.
  const dirPath = join(dir, 'is-a-directory');
  await mkdir(dirPath);
  const onDir = new AuditLog({ store, filePath: dirPath });
  t.teardown(() => onDir.close());
  const e1 = await expectCode(t, () => audited(onDir, entry(1), operation), ErrorCode.AuditUnavailable);
  t.regex(e1.message, /EISDIR/);
  t.is(await storeCount(store), 0);

  // A regular file that opens but refuses every write. Check that it really does, as root too.
  const refusing = '/proc/self/cmdline';
  const probe = await open(refusing, 'a+');
  await t.throwsAsync(() => probe.write('{}\n'), { code: 'EINVAL' });
  await probe.close();
  const onProc = new AuditLog({ store, filePath: refusing, sinkName: 'proc-sink' });
  t.teardown(() => onProc.close());
  const e2 = await expectCode(t, () => audited(onProc, entry(1), operation), ErrorCode.AuditUnavailable);
  t.regex(e2.message, /EINVAL/);
  t.is(ran, 0);
  // The store holds the attempt; the file never did, so no mark claims it.
  t.is(await storeCount(store), 1);
  t.is(await store.getAuditSinkMark('proc-sink'), 0);
});

test.serial('a file sink that breaks after working refuses appends, and catches up once it is back', async (t) => {
  const { log, store, filePath, dir } = await fixture(t);
  await appendMany(log, 2);
  const aside = join(dir, 'aside.log');
  await rename(filePath, aside);
  await mkdir(filePath);
  let ran = false;
  await expectCode(t, () => audited(log, entry(3), () => (ran = true)), ErrorCode.AuditUnavailable);
  t.false(ran);
  await rmdir(filePath);
  await rename(aside, filePath);
  t.is((await log.append(entry(3))).seq, 3);
  t.deepEqual(await verifyAudit({ store, filePath }), { ok: true, entries: 3, fileEntries: 3 });
});

test.serial('an unavailable store refuses the append and audited() does not run the operation', async (t) => {
  const { log, store, filePath } = await fixture(t, { ownStore: true });
  await appendMany(log, 1);
  await store.close();
  let ran = false;
  const e = await expectCode(t, () => audited(log, entry(2), () => (ran = true)), ErrorCode.AuditUnavailable);
  t.false(ran);
  t.regex(e.message, /store/);
  t.is((await fileLines(filePath)).length, 1);
  await log.close();
  await expectCode(t, () => log.append(entry(3)), ErrorCode.AuditUnavailable);
});

test.serial('concurrent appends from several AuditLog instances on one store never fork the chain', async (t) => {
  const { log, store, filePath, dir } = await fixture(t);
  const sameFile = new AuditLog({ store, filePath });
  const otherFile = new AuditLog({ store, filePath: join(dir, 'b.log') });
  t.teardown(async () => {
    await sameFile.close();
    await otherFile.close();
  });
  const perLog = 12;
  const total = 3 * perLog;
  const appends = [log, sameFile, otherFile].flatMap((l, n) => Array.from({ length: perLog }, (_, i) => l.append(entry(i, `officer:${n}`))));
  // Verifying while appends run never mistakes one in progress for tampering.
  const verifications = [filePath, otherFile.filePath, filePath, otherFile.filePath].map((path) => verifyAudit({ store, filePath: path }));
  const all = await Promise.all(appends);
  for (const result of await Promise.all(verifications)) t.true(result.ok, JSON.stringify(result.firstBad));
  const seqs = all.map((r) => r.seq).sort((a, b) => a - b);
  t.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1));
  const rows = await store.listAudit(0, 1000);
  t.is(rows.length, total);
  rows.forEach((r, i) => t.is(r.prevHash as string | undefined, i === 0 ? auditGenesisHash : rows[i - 1]?.hash));
  // Each file holds at least what its own writers appended; entries others appended later come
  // with its next append, or sync().
  const sharedFile = await verifyAudit({ store, filePath });
  t.like(sharedFile, { ok: true, entries: total });
  t.true(sharedFile.fileEntries >= Math.max(...all.filter((r) => r.actor !== 'officer:2').map((r) => r.seq)));
  const other = await verifyAudit({ store, filePath: otherFile.filePath });
  t.like(other, { ok: true, entries: total });
  t.true(other.fileEntries >= Math.max(...all.filter((r) => r.actor === 'officer:2').map((r) => r.seq)));
  t.is(await otherFile.sync(), total);
  t.is(await sameFile.sync(), total);
  for (const path of [filePath, otherFile.filePath]) {
    t.deepEqual(await verifyAudit({ store, filePath: path }), { ok: true, entries: total, fileEntries: total });
  }
});
