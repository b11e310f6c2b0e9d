/**
 * What only a shared PostgreSQL shows: appliances (separate connection pools, separate audit
 * files) appending at the same time extend one chain, never two.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../appliance/store/store.ts';
import { AuditLog, auditGenesisHash, verifyAudit, type AuditRecord } from '../../keymgr/audit.ts';
import { startPostgres } from '../helpers/postgres.ts';

test('appliances appending concurrently to one PostgreSQL never fork the chain', async (t) => {
  const server = await startPostgres();
  const dir = await mkdtemp(join(tmpdir(), 'sv-audit-pg-'));
  const stores: Store[] = [];
  const logs: AuditLog[] = [];
  t.teardown(async () => {
    for (const log of logs) await log.close();
    for (const store of stores) await store.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const connectionString = await server.createDatabase();
  const appliances = 3;
  const perAppliance = 15;
  for (let i = 0; i < appliances; i++) {
    const store = await openStore({ kind: 'postgres', connectionString });
    stores.push(store);
    logs.push(new AuditLog({ store, filePath: join(dir, `appliance-${i}.log`), sinkName: `appliance-${i}` }));
  }
  // Several appends in flight per appliance, so each pool has several transactions racing for the lock.
  const records: AuditRecord[] = await Promise.all(
    logs.flatMap((log, i) =>
      Array.from({ length: perAppliance }, (_, j) =>
        log.append({ actor: `appliance-${i}`, action: 'coi.member.add', subject: `coi:${j}`, detail: { member: `user-${i}-${j}` } }),
      ),
    ),
  );
  const total = appliances * perAppliance;
  t.deepEqual(
    records.map((r) => r.seq).sort((a, b) => a - b),
    Array.from({ length: total }, (_, i) => i + 1),
  );
  const [first] = stores;
  if (first === undefined) throw new Error('no store');
  const rows = await first.listAudit(0, 1000);
  t.is(rows.length, total);
  rows.forEach((r, i) => t.is(r.prevHash as string | undefined, i === 0 ? auditGenesisHash : rows[i - 1]?.hash));
  for (const [i, log] of logs.entries()) {
    const result = await verifyAudit({ store: first, filePath: log.filePath, sinkName: log.sinkName });
    t.like(result, { ok: true, entries: total }, `appliance ${i}`);
    t.is(await log.sync(), total);
    t.deepEqual(await verifyAudit({ store: first, filePath: log.filePath, sinkName: log.sinkName }), { ok: true, entries: total, fileEntries: total });
  }
});
