/**
 * The store contract on a real PostgreSQL server started by the test, plus what only a shared
 * server has: several appliances migrating and placing volumes at the same time.
 */
import test from 'ava';
import pg from 'pg';
import { ErrorCode } from '../../appliance/errors.ts';
import { migrations, schemaVersionLatest } from '../../appliance/store/migrations.ts';
import { openPgSql } from '../../appliance/store/pg-sql.ts';
import { openStore, type DeviceRecord, type Store } from '../../appliance/store/store.ts';
import { startPostgres, type PostgresServer } from '../helpers/postgres.ts';
import { expectCode, registerStoreContract } from './store-contract.ts';

// Started by whichever hook or test needs it first (ava runs before hooks concurrently).
let server: Promise<PostgresServer> | null = null;
const postgres = (): Promise<PostgresServer> => (server ??= startPostgres());
test.after.always(async () => {
  await (await server?.catch(() => null))?.stop();
});

registerStoreContract(test, 'postgresql', async () => openPgSql(await (await postgres()).createDatabase()));

async function rawQuery(connectionString: string, text: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

test('appliances starting together migrate one database once', async (t) => {
  const connectionString = await (await postgres()).createDatabase();
  const stores: Store[] = await Promise.all(Array.from({ length: 4 }, () => openStore({ kind: 'postgres', connectionString })));
  try {
    const rows = (await rawQuery(connectionString, 'SELECT version, name FROM schema_migrations ORDER BY version')) as Array<{ version: number; name: string }>;
    t.deepEqual(
      rows,
      migrations.map((m) => ({ version: m.version, name: m.name })),
    );
    // Every one of them works on the shared schema.
    const device = await stores[0]!.addDevice({ name: 'shared', kind: 'file', path: '/srv/shared.img', sizeBytes: 1 << 30 });
    for (const store of stores) t.deepEqual(await store.getDevice('shared'), device);
  } finally {
    for (const store of stores) await store.close();
  }
  t.is(schemaVersionLatest, migrations.length);
});

test('a newer schema is refused by openStore', async (t) => {
  const connectionString = await (await postgres()).createDatabase();
  await (await openStore({ kind: 'postgres', connectionString })).close();
  await rawQuery(connectionString, `INSERT INTO schema_migrations (version, name) VALUES (${schemaVersionLatest + 1}, 'from the future')`);
  const e = await expectCode(t, () => openStore({ kind: 'postgres', connectionString }), ErrorCode.StoreMigration);
  t.is(e.detail?.['knownVersion'], schemaVersionLatest);
});

test('two appliances placing strips on the same bytes: exactly one wins', async (t) => {
  const connectionString = await (await postgres()).createDatabase();
  const a = await openStore({ kind: 'postgres', connectionString });
  const b = await openStore({ kind: 'postgres', connectionString });
  try {
    const MiB = 1024 * 1024;
    const devices: DeviceRecord[] = [];
    for (let i = 0; i < 3; i++) devices.push(await a.addDevice({ name: `d${i}`, kind: 'file', path: `/srv/d${i}.img`, sizeBytes: 64 * MiB }));
    const volume = (store: Store, name: string, order: number[]) =>
      store.createVolume({
        name,
        m: 2,
        n: 3,
        sizeBytes: 4 * MiB,
        blockSize: 4096,
        strips: order.map((d, index) => ({ index, deviceId: devices[d]!.id, offsetBytes: 0, lengthBytes: 8 * MiB })),
      });
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([volume(a, `a${round}`, [0, 1, 2]), volume(b, `b${round}`, [2, 1, 0])]);
      const won = results.filter((r) => r.status === 'fulfilled');
      t.is(won.length, 1, `round ${round}`);
      const lost = results.find((r) => r.status === 'rejected');
      t.is((lost as PromiseRejectedResult).reason.code, ErrorCode.StoreConflict);
      await a.removeVolume((won[0] as PromiseFulfilledResult<{ id: string }>).value.id);
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test('an unreachable server is SV_STORE_UNAVAILABLE, without the password in the message', async (t) => {
  // Port 1 on loopback: nothing listens there.
  const connectionString = 'postgresql://postgres:sekrit-password@127.0.0.1:1/stripvault';
  const e = await expectCode(t, () => openStore({ kind: 'postgres', connectionString }), ErrorCode.StoreUnavailable);
  t.notRegex(e.message, /sekrit/);
  t.notRegex(JSON.stringify(e.detail ?? {}), /sekrit/);
});
