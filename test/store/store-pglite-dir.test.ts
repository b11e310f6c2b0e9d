/** The store contract on PGlite with a data directory: data survives a reopen, one process at a time. */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '../../appliance/errors.ts';
import { openPgliteSql } from '../../appliance/store/pglite-sql.ts';
import { openStore } from '../../appliance/store/store.ts';
import { expectCode, registerStoreContract } from './store-contract.ts';

const root = mkdtempSync(join(tmpdir(), 'stripvault-store-'));
let dirs = 0;
const freshDir = (): string => join(root, `db${++dirs}`);
test.after.always(() => rmSync(root, { recursive: true, force: true }));

registerStoreContract(test, 'pglite on disk', () => openPgliteSql(freshDir()));

test('data survives close and reopen; a newer schema on disk is refused', async (t) => {
  const dataDir = freshDir();
  const MiB = 1024 * 1024;
  const first = await openStore({ kind: 'pglite', dataDir });
  const device = await first.addDevice({ name: 'disk0', kind: 'file', path: '/srv/disk0.img', sizeBytes: 16 * MiB });
  const volume = await first.createVolume({
    name: 'vol0',
    m: 1,
    n: 1,
    sizeBytes: MiB,
    blockSize: 4096,
    strips: [{ index: 0, deviceId: device.id, offsetBytes: 0, lengthBytes: 2 * MiB }],
  });
  t.is(await first.allocateGenerations(volume.id, 0, 1000), 1000);
  t.true(await first.compareAndSetEpoch(volume.id, 0, 1));
  const event = await first.appendEvent({ kind: 'volume.created', subject: volume.id, detail: { name: 'vol0' } });
  // Another store on the same directory while this one is open would corrupt it.
  await expectCode(t, () => openStore({ kind: 'pglite', dataDir }), ErrorCode.StoreUnavailable);
  await first.close();

  const second = await openStore({ kind: 'pglite', dataDir });
  try {
    t.deepEqual(await second.listDevices(), [device]);
    const reread = await second.getVolume('vol0');
    t.deepEqual(reread, { ...volume, epoch: 1, generationReserved: 1000 });
    t.deepEqual(await second.listEvents({ subject: volume.id, limit: 10 }), [event]);
  } finally {
    await second.close();
  }

  const raw = await openPgliteSql(dataDir);
  await raw.query("INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')");
  await raw.close();
  const refused = await expectCode(t, () => openStore({ kind: 'pglite', dataDir }), ErrorCode.StoreMigration);
  t.is(refused.detail?.['storeVersion'], 999);
  // The refusal released the directory: a raw open works again.
  await (await openPgliteSql(dataDir)).close();
});
