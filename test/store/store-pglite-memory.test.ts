/** The store contract on PGlite in memory, plus opening through openStore and bad configs. */
import test from 'ava';
import { ErrorCode } from '../../appliance/errors.ts';
import { openPgliteSql } from '../../appliance/store/pglite-sql.ts';
import { openStore, type StoreConfig } from '../../appliance/store/store.ts';
import { expectCode, registerStoreContract } from './store-contract.ts';

registerStoreContract(test, 'pglite in memory', () => openPgliteSql(null));

test('openStore opens an in-memory PGlite store, migrated and empty', async (t) => {
  const store = await openStore({ kind: 'pglite', dataDir: null });
  try {
    t.deepEqual(await store.listDevices(), []);
    t.deepEqual(await store.listVolumes(), []);
  } finally {
    await store.close();
  }
  await expectCode(t, () => store.listDevices(), ErrorCode.StoreUnavailable);
  await store.close(); // closing twice is harmless
});

test('openStore refuses malformed configs', async (t) => {
  const bad: unknown[] = [
    null,
    {},
    { kind: 'sqlite', dataDir: null },
    { kind: 'pglite', dataDir: 7 },
    { kind: 'pglite', dataDir: '' },
    { kind: 'postgres', connectionString: '' },
    { kind: 'postgres' },
  ];
  for (const config of bad) await expectCode(t, () => openStore(config as StoreConfig), ErrorCode.InvalidArgument);
});
