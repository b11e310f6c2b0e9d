/**
 * What every metadata store backend owes stripvault, as one ava suite that each backend test
 * file (PGlite in memory, PGlite on disk, a real PostgreSQL) registers against itself.
 * Not a test file itself (no .test.ts).
 *
 * Starting PGlite costs seconds, so the suite shares one store per backend and keeps tests
 * apart by unique names; the migration test gets a database of its own.
 */
import type { ExecutionContext, TestFn } from 'ava';
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import type { ErrorCode as ErrorCodeType } from '../../appliance/errors.ts';
import { eventDetailBytesMax, eventsListMax } from '../../appliance/store/events.ts';
import { migrate, migrations, schemaVersionLatest, type Migration } from '../../appliance/store/migrations.ts';
import type { Sql, SqlPool } from '../../appliance/store/sql.ts';
import { Store, type DeviceRecord, type EventRecord } from '../../appliance/store/store.ts';
import { nameBytesMax } from '../../appliance/store/validate.ts';

/** A new, empty database; the suite closes it. */
export type OpenFreshSql = () => Promise<SqlPool>;

export async function expectCode(t: ExecutionContext, run: () => Promise<unknown>, code: ErrorCodeType, why?: string): Promise<StripvaultError> {
  const error = await t.throwsAsync(run, { instanceOf: StripvaultError, code }, why);
  return error as StripvaultError;
}

const MiB = 1024 * 1024;
const deviceBytes = 64 * MiB;
const stripBytes = 4 * MiB;

export function registerStoreContract(test: TestFn, label: string, openFreshSql: OpenFreshSql): void {
  let shared: { sql: SqlPool; store: Store } | null = null;
  let counter = 0;
  const unique = (prefix: string): string => `${prefix}-${++counter}`;

  test.before(async () => {
    const sql = await openFreshSql();
    shared = { sql, store: await Store.open(sql) };
  });
  test.after.always(async () => {
    await shared?.store.close();
  });

  const store = (): Store => {
    if (shared === null) throw new Error('store not opened');
    return shared.store;
  };
  const sql = (): SqlPool => {
    if (shared === null) throw new Error('store not opened');
    return shared.sql;
  };

  const addDevices = async (count: number): Promise<DeviceRecord[]> => {
    const out: DeviceRecord[] = [];
    for (let i = 0; i < count; i++) {
      const name = unique('dev');
      out.push(await store().addDevice({ name, kind: 'file', path: `/srv/strips/${name}.img`, sizeBytes: deviceBytes }));
    }
    return out;
  };

  const stripsOn = (devices: readonly DeviceRecord[], offsetBytes = 0) =>
    devices.map((device, index) => ({ index, deviceId: device.id, offsetBytes, lengthBytes: stripBytes }));

  test.serial(`${label}: migrations apply once, refuse a foreign or newer schema`, async (t) => {
    const fresh = await openFreshSql();
    try {
      t.deepEqual(await migrate(fresh), { fromVersion: 0, toVersion: schemaVersionLatest });
      t.deepEqual(await migrate(fresh), { fromVersion: schemaVersionLatest, toVersion: schemaVersionLatest });
      const recorded = await fresh.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
      t.deepEqual(
        recorded.map((r) => Number(r.version)),
        migrations.map((m) => m.version),
      );

      // A store whose migration 1 is not ours (edited migration, other product).
      const renamed: Migration[] = migrations.map((m, i) => (i === 0 ? { ...m, name: `${m.name} (edited)` } : m));
      const foreign = await expectCode(t, () => migrate(fresh, renamed), ErrorCode.StoreMigration);
      t.regex(foreign.message, /expects/);

      // Newer code adds migration 2, then older code meets that store.
      const next: Migration = { version: schemaVersionLatest + 1, name: 'test: later table', statements: ['CREATE TABLE later_table (x integer)'] };
      t.deepEqual(await migrate(fresh, [...migrations, next]), { fromVersion: schemaVersionLatest, toVersion: schemaVersionLatest + 1 });
      const newer = await expectCode(t, () => migrate(fresh), ErrorCode.StoreMigration);
      t.is(newer.detail?.['storeVersion'], schemaVersionLatest + 1);
      t.regex(newer.message, /newer/);
      // Refusing must not half-apply anything: the rows are as before.
      t.is((await fresh.query('SELECT version FROM schema_migrations')).length, schemaVersionLatest + 1);

      // Store.open refuses too, and closes what it was given.
      await expectCode(t, () => Store.open(fresh), ErrorCode.StoreMigration);
      await expectCode(t, () => fresh.query('SELECT 1'), ErrorCode.StoreUnavailable);
    } finally {
      await fresh.close();
    }
  });

  test(`${label}: a failed migration leaves no trace`, async (t) => {
    const broken: Migration = { version: schemaVersionLatest + 1, name: 'test: broken', statements: ['CREATE TABLE half_done (x integer)', 'SELECT * FROM no_such_table'] };
    await t.throwsAsync(() => migrate(sql(), [...migrations, broken]));
    t.deepEqual(await migrate(sql()), { fromVersion: schemaVersionLatest, toVersion: schemaVersionLatest });
    const tables = await sql().query("SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done'");
    t.is(tables.length, 0);
  });

  test(`${label}: transactions commit, roll back, and nest as savepoints`, async (t) => {
    const subject = unique('tx');
    const count = async () => (await store().listEvents({ subject, limit: 10 })).length;
    const insert = (s: Sql) =>
      s.query("INSERT INTO events (kind, subject, detail) VALUES ('test.tx', $1, '{}'::jsonb)", [subject]);

    await sql().transaction(async (tx) => {
      await insert(tx);
    });
    t.is(await count(), 1);

    await t.throwsAsync(
      sql().transaction(async (tx) => {
        await insert(tx);
        throw new Error('abort');
      }),
      { message: 'abort' },
    );
    t.is(await count(), 1);

    await sql().transaction(async (tx) => {
      await insert(tx);
      await t.throwsAsync(
        tx.transaction(async (inner) => {
          await insert(inner);
          throw new Error('inner abort');
        }),
      );
      // A failed statement aborts only its savepoint, not the enclosing transaction.
      await t.throwsAsync(tx.transaction((inner) => inner.query('SELECT * FROM no_such_table')));
      await tx.transaction(async (inner) => {
        await insert(inner);
      });
    });
    t.is(await count(), 3);

    // A handle used after its transaction ended would run outside it: refused.
    const escaped: { handle?: Sql } = {};
    await sql().transaction(async (tx) => {
      escaped.handle = tx;
    });
    const handle = escaped.handle;
    if (handle === undefined) throw new Error('transaction callback did not run');
    await t.throwsAsync(() => insert(handle), { message: /finished transaction/ });
  });

  test(`${label}: devices: add, get, list, state, remove`, async (t) => {
    const name = unique('disk');
    const added = await store().addDevice({ name, kind: 'block', path: '/dev/sdz', sizeBytes: 2 ** 40 });
    t.regex(added.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    t.like(added, { name, kind: 'block', path: '/dev/sdz', sizeBytes: 2 ** 40, state: 'online' });
    t.true(added.createdAt instanceof Date);
    // Same machine's clock: a wrong time zone in timestamptz parsing would be hours off.
    t.true(Math.abs(added.createdAt.getTime() - Date.now()) < 3_600_000, 'createdAt in UTC');

    t.deepEqual(await store().getDevice(added.id), added);
    t.deepEqual(await store().getDevice(name), added);
    t.deepEqual(await store().getDevice(added.id.toUpperCase()), added);
    const listed = await store().listDevices();
    t.deepEqual(
      listed.find((d) => d.id === added.id),
      added,
    );
    const names = listed.map((d) => d.name);
    t.deepEqual(names, [...names].sort(), 'listed by name');

    const nbd = await store().addDevice({ name: unique('remote'), kind: 'nbd', path: 'nbds://10.0.0.5:10809/strip0', sizeBytes: MiB });
    t.is(nbd.kind, 'nbd');

    await store().setDeviceState(added.id, 'failed');
    t.is((await store().getDevice(added.id)).state, 'failed');
    await store().removeDevice(added.id);
    await expectCode(t, () => store().getDevice(added.id), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().getDevice(name), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().removeDevice(added.id), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().setDeviceState(added.id, 'online'), ErrorCode.StoreNotFound);
  });

  test(`${label}: device names are unique`, async (t) => {
    const name = unique('twin');
    await store().addDevice({ name, kind: 'file', path: '/srv/a.img', sizeBytes: MiB });
    const e = await expectCode(t, () => store().addDevice({ name, kind: 'file', path: '/srv/b.img', sizeBytes: MiB }), ErrorCode.StoreConflict);
    t.regex(e.message, new RegExp(name));
    t.is((await store().listDevices()).filter((d) => d.name === name).length, 1);
  });

  test(`${label}: device input is validated before SQL`, async (t) => {
    const ok = { name: unique('valid'), kind: 'file' as const, path: '/srv/x.img', sizeBytes: MiB };
    const bad: Array<[string, Record<string, unknown>]> = [
      ['empty name', { name: '' }],
      ['name too long', { name: 'é'.repeat(nameBytesMax / 2 + 1) }],
      ['control character', { name: 'a\u0007b' }],
      ['newline', { name: 'a\nb' }],
      ['bidi override', { name: 'a\u202eb' }],
      ['leading space', { name: ' a' }],
      ['name shaped like a uuid', { name: '01234567-89ab-cdef-0123-456789abcdef' }],
      ['name not a string', { name: 42 }],
      ['unknown kind', { kind: 'tape' }],
      ['relative path', { path: 'data/strip0.img' }],
      ['path with NUL', { path: '/srv/a\u0000b' }],
      ['nbd path not a URI', { kind: 'nbd', path: '/srv/x.img' }],
      ['zero size', { sizeBytes: 0 }],
      ['negative size', { sizeBytes: -1 }],
      ['fractional size', { sizeBytes: 1.5 }],
      ['unsafe size', { sizeBytes: 2 ** 53 }],
      ['size as string', { sizeBytes: '1024' }],
    ];
    for (const [why, change] of bad) {
      const e = await t.throwsAsync(() => store().addDevice({ ...ok, ...change } as never), { instanceOf: StripvaultError }, why);
      t.is(e?.code, ErrorCode.InvalidArgument, why);
    }
    t.is((await store().listDevices()).filter((d) => d.name === ok.name).length, 0);
    // A name at exactly the limit is fine, in bytes not characters.
    const longest = 'é'.repeat(nameBytesMax / 2);
    t.is((await store().addDevice({ ...ok, name: longest })).name, longest);
    await expectCode(t, () => store().setDeviceState('not-a-uuid', 'online'), ErrorCode.InvalidArgument);
    const device = await store().getDevice(longest);
    await expectCode(t, () => store().setDeviceState(device.id, 'broken' as never), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().getDevice('bad\u0000name'), ErrorCode.InvalidArgument);
  });

  test(`${label}: volumes: create, get, list, states, strips, remove`, async (t) => {
    const devices = await addDevices(3);
    const name = unique('vol');
    const volume = await store().createVolume({ name, m: 2, n: 3, sizeBytes: 8 * MiB, blockSize: 4096, strips: stripsOn(devices) });
    t.like(volume, { name, m: 2, n: 3, sizeBytes: 8 * MiB, blockSize: 4096, state: 'online', epoch: 0, generationReserved: 0 });
    t.true(volume.createdAt instanceof Date);
    t.deepEqual(
      volume.strips,
      devices.map((d, index) => ({ index, deviceId: d.id, offsetBytes: 0, lengthBytes: stripBytes, state: 'healthy' })),
    );
    t.deepEqual(await store().getVolume(volume.id), volume);
    t.deepEqual(await store().getVolume(name), volume);
    t.deepEqual(
      (await store().listVolumes()).find((v) => v.id === volume.id),
      volume,
    );

    t.is(volume.scrubNextBlock, 0);
    t.is(volume.scrubCompletedAt, null);
    await store().setScrubCursor(volume.id, 1234);
    t.is((await store().getVolume(volume.id)).scrubNextBlock, 1234);
    const finishedAt = new Date('2026-01-02T03:04:05.000Z');
    await store().setScrubCursor(volume.id, 0, finishedAt);
    t.like(await store().getVolume(volume.id), { scrubNextBlock: 0, scrubCompletedAt: finishedAt });
    await t.throwsAsync(store().setScrubCursor(volume.id, -1), { code: ErrorCode.InvalidArgument } as never);

    await store().setVolumeState(volume.id, 'degraded');
    await store().setStripState(volume.id, 1, 'stale');
    const changed = await store().getVolume(volume.id);
    t.is(changed.state, 'degraded');
    t.deepEqual(
      changed.strips.map((s) => s.state),
      ['healthy', 'stale', 'healthy'],
    );
    await expectCode(t, () => store().setStripState(volume.id, 3, 'stale'), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().setStripState(volume.id, 16, 'stale'), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().setStripState(volume.id, 0, 'gone' as never), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().setVolumeState(volume.id, 'healthy' as never), ErrorCode.InvalidArgument);

    t.deepEqual(await store().listStripsOnDevice(devices[1]!.id), [{ volumeId: volume.id, index: 1, offsetBytes: 0, lengthBytes: stripBytes }]);

    // A second volume placed after the first on the same devices, strips rotated.
    const second = await store().createVolume({
      name: unique('vol'),
      m: 1,
      n: 2,
      sizeBytes: MiB,
      blockSize: 512,
      strips: [
        { index: 0, deviceId: devices[2]!.id, offsetBytes: stripBytes, lengthBytes: stripBytes },
        { index: 1, deviceId: devices[1]!.id, offsetBytes: stripBytes, lengthBytes: stripBytes },
      ],
    });
    t.deepEqual(
      (await store().listStripsOnDevice(devices[1]!.id)).map((s) => [s.volumeId, s.index, s.offsetBytes]),
      [
        [volume.id, 1, 0],
        [second.id, 1, stripBytes],
      ],
    );

    await store().removeVolume(volume.id);
    await expectCode(t, () => store().getVolume(volume.id), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().removeVolume(volume.id), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().setVolumeState(volume.id, 'online'), ErrorCode.StoreNotFound);
    t.deepEqual(await store().listStripsOnDevice(devices[0]!.id), []);
    t.deepEqual(
      (await store().listStripsOnDevice(devices[1]!.id)).map((s) => s.volumeId),
      [second.id],
    );
    await store().removeDevice(devices[0]!.id);
    await expectCode(t, () => store().listStripsOnDevice(devices[0]!.id), ErrorCode.StoreNotFound);
  });

  test(`${label}: a device holding strips cannot be removed`, async (t) => {
    const devices = await addDevices(2);
    const name = unique('pinned');
    const volume = await store().createVolume({ name, m: 1, n: 2, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices) });
    const e = await expectCode(t, () => store().removeDevice(devices[0]!.id), ErrorCode.StoreConflict);
    t.deepEqual(e.detail?.['volumes'], [name]);
    t.is((await store().getDevice(devices[0]!.id)).id, devices[0]!.id);
    await store().removeVolume(volume.id);
    await store().removeDevice(devices[0]!.id);
    await expectCode(t, () => store().getDevice(devices[0]!.id), ErrorCode.StoreNotFound);
  });

  test(`${label}: volume names and ids are unique; a given id is kept`, async (t) => {
    const devices = await addDevices(4);
    const id = '6f1c2a8e-0d4b-4e7a-9c3f-2b5d8e1a7c90';
    const name = unique('same');
    const first = await store().createVolume({ id: id.toUpperCase(), name, m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices.slice(0, 1)) });
    t.is(first.id, id);
    const byName = await expectCode(
      t,
      () => store().createVolume({ name, m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices.slice(1, 2)) }),
      ErrorCode.StoreConflict,
    );
    t.regex(byName.message, /named/);
    const byId = await expectCode(
      t,
      () => store().createVolume({ id, name: unique('other'), m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices.slice(2, 3)) }),
      ErrorCode.StoreConflict,
    );
    t.regex(byId.message, /id/);
    // The refused volumes left no strips behind.
    t.deepEqual(await store().listStripsOnDevice(devices[1]!.id), []);
    t.deepEqual(await store().listStripsOnDevice(devices[2]!.id), []);
  });

  test(`${label}: volume input is validated, and a refused volume writes nothing`, async (t) => {
    const devices = await addDevices(3);
    const name = unique('bad');
    const ok = { name, m: 2, n: 3, sizeBytes: 8 * MiB, blockSize: 4096, strips: stripsOn(devices) };
    const cases: Array<[string, Record<string, unknown>, ErrorCodeType]> = [
      ['m > n', { m: 4 }, ErrorCode.InvalidGeometry],
      ['m = 0', { m: 0 }, ErrorCode.InvalidGeometry],
      ['n > 16', { n: 17 }, ErrorCode.InvalidGeometry],
      ['fractional m', { m: 1.5 }, ErrorCode.InvalidGeometry],
      ['block size not a power of two', { blockSize: 3000 }, ErrorCode.InvalidGeometry],
      ['block size too small', { blockSize: 256 }, ErrorCode.InvalidGeometry],
      ['size not a multiple of the block size', { sizeBytes: 8 * MiB + 512 }, ErrorCode.InvalidArgument],
      ['size zero', { sizeBytes: 0 }, ErrorCode.InvalidArgument],
      ['too few strips', { strips: stripsOn(devices.slice(0, 2)) }, ErrorCode.InvalidArgument],
      ['strips not an array', { strips: 'all' }, ErrorCode.InvalidArgument],
      ['index twice', { strips: stripsOn(devices).map((s) => ({ ...s, index: s.index === 2 ? 0 : s.index })) }, ErrorCode.InvalidArgument],
      ['index out of range', { strips: stripsOn(devices).map((s) => ({ ...s, index: s.index === 2 ? 3 : s.index })) }, ErrorCode.InvalidArgument],
      ['device twice', { strips: stripsOn([devices[0]!, devices[1]!, devices[0]!]) }, ErrorCode.InvalidArgument],
      ['negative offset', { strips: stripsOn(devices, -4096) }, ErrorCode.InvalidArgument],
      ['zero length', { strips: stripsOn(devices).map((s) => ({ ...s, lengthBytes: 0 })) }, ErrorCode.InvalidArgument],
      ['end past 2^53', { strips: stripsOn(devices, Number.MAX_SAFE_INTEGER - 1) }, ErrorCode.InvalidArgument],
      ['device id not a uuid', { strips: stripsOn(devices).map((s) => ({ ...s, deviceId: 'disk0' })) }, ErrorCode.InvalidArgument],
      ['id not a uuid', { id: 'vol-1' }, ErrorCode.InvalidArgument],
      ['unknown device', { strips: stripsOn(devices).map((s) => ({ ...s, deviceId: s.index === 1 ? '00000000-0000-4000-8000-000000000000' : s.deviceId })) }, ErrorCode.StoreNotFound],
      ['strip past the end of its device', { strips: stripsOn(devices, deviceBytes - stripBytes + 1) }, ErrorCode.OutOfRange],
    ];
    for (const [why, change, code] of cases) {
      const e = await t.throwsAsync(() => store().createVolume({ ...ok, ...change } as never), { instanceOf: StripvaultError }, why);
      t.is(e?.code, code, why);
    }
    for (const device of devices) t.deepEqual(await store().listStripsOnDevice(device.id), [], 'nothing written');
    await expectCode(t, () => store().getVolume(name), ErrorCode.StoreNotFound);

    // Overlap with another volume's strip: refused whole, even though the other strips were free.
    const other = await store().createVolume({ ...ok, name: unique('holder'), m: 1, n: 1, strips: [{ index: 0, deviceId: devices[2]!.id, offsetBytes: 8 * MiB, lengthBytes: stripBytes }] });
    const overlap = await expectCode(t, () => store().createVolume({ ...ok, strips: stripsOn(devices, 8 * MiB - 4096) }), ErrorCode.StoreConflict);
    t.regex(overlap.message, new RegExp(other.name));
    t.deepEqual(await store().listStripsOnDevice(devices[0]!.id), []);
    // Touching end to end is not overlapping.
    const adjacent = await store().createVolume({ ...ok, strips: stripsOn(devices, 8 * MiB + stripBytes) });
    t.is(adjacent.name, name);
  });

  test(`${label}: a strip moves to a replacement device, checked like a new placement, and starts stale`, async (t) => {
    const devices = await addDevices(5);
    const volume = await store().createVolume({ name: unique('mv'), m: 2, n: 3, sizeBytes: 8 * MiB, blockSize: 4096, strips: stripsOn(devices.slice(0, 3)) });
    // onto a device that already holds another strip of the volume: refused
    await expectCode(t, () => store().moveStrip(volume.id, { index: 1, deviceId: devices[0]!.id, offsetBytes: 8 * MiB, lengthBytes: stripBytes }), ErrorCode.InvalidArgument);
    // overlapping another volume's strip: refused
    const other = await store().createVolume({ name: unique('mv-other'), m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: [{ index: 0, deviceId: devices[3]!.id, offsetBytes: 0, lengthBytes: stripBytes }] });
    await expectCode(t, () => store().moveStrip(volume.id, { index: 1, deviceId: devices[3]!.id, offsetBytes: MiB, lengthBytes: stripBytes }), ErrorCode.StoreConflict);
    // past the end of the device: refused
    await expectCode(t, () => store().moveStrip(volume.id, { index: 1, deviceId: devices[4]!.id, offsetBytes: deviceBytes, lengthBytes: stripBytes }), ErrorCode.OutOfRange);
    await store().moveStrip(volume.id, { index: 1, deviceId: devices[4]!.id, offsetBytes: 0, lengthBytes: stripBytes });
    const moved = await store().getVolume(volume.id);
    t.like(moved.strips[1], { index: 1, deviceId: devices[4]!.id, offsetBytes: 0, state: 'stale' });
    t.deepEqual(await store().listStripsOnDevice(devices[1]!.id), []);
    // moving again onto a region overlapping its own current place is not a conflict with itself
    await store().moveStrip(volume.id, { index: 1, deviceId: devices[4]!.id, offsetBytes: MiB, lengthBytes: stripBytes });
    t.like((await store().getVolume(volume.id)).strips[1], { deviceId: devices[4]!.id, offsetBytes: MiB });
    await expectCode(t, () => store().moveStrip(volume.id, { index: 7, deviceId: devices[2]!.id, offsetBytes: 0, lengthBytes: stripBytes }), ErrorCode.InvalidArgument);
    t.truthy(other);
  });

  test(`${label}: generation ranges from concurrent allocations never overlap`, async (t) => {
    const devices = await addDevices(1);
    const volume = await store().createVolume({ name: unique('alloc'), m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices) });
    t.is(await store().allocateGenerations(volume.id, 5, 10), 15);
    // a floor below what was handed out never rewinds it
    t.is(await store().allocateGenerations(volume.id, 0, 10), 25);
    const ends = await Promise.all(Array.from({ length: 20 }, () => store().allocateGenerations(volume.id, 25, 100)));
    const ranges = ends.map((end) => [end - 100, end] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) t.true(ranges[i]![0] >= ranges[i - 1]![1], 'ranges overlap');
    t.is(ranges[0]![0], 25);
    await expectCode(t, () => store().allocateGenerations(volume.id, 0, 0), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().allocateGenerations('00000000-0000-4000-8000-000000000001', 1, 1), ErrorCode.StoreNotFound);
  });

  test(`${label}: epoch moves only by compare-and-set`, async (t) => {
    const devices = await addDevices(1);
    const volume = await store().createVolume({ name: unique('epoch'), m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices) });
    t.true(await store().compareAndSetEpoch(volume.id, 0, 1));
    t.false(await store().compareAndSetEpoch(volume.id, 0, 2), 'stale expectation loses');
    t.is((await store().getVolume(volume.id)).epoch, 1);
    await expectCode(t, () => store().compareAndSetEpoch(volume.id, 1, 1), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().compareAndSetEpoch(volume.id, 1, 0), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().compareAndSetEpoch(volume.id, -1, 0), ErrorCode.InvalidArgument);
    // Five appliances race to take over from epoch 1: exactly one wins.
    const results = await Promise.all(Array.from({ length: 5 }, () => store().compareAndSetEpoch(volume.id, 1, 2)));
    t.is(results.filter(Boolean).length, 1);
    t.is((await store().getVolume(volume.id)).epoch, 2);
    await expectCode(t, () => store().compareAndSetEpoch('00000000-0000-4000-8000-000000000002', 0, 1), ErrorCode.StoreNotFound);
  });

  test(`${label}: events: append, list newest first, bounded, paged`, async (t) => {
    const subject = unique('volume');
    const appended: EventRecord[] = [];
    for (let i = 0; i < 5; i++) appended.push(await store().appendEvent({ kind: 'volume.degraded', subject, detail: { strip: i, reason: 'device gone', nested: { ok: true } } }));
    await store().appendEvent({ kind: 'device.added', subject: unique('elsewhere'), detail: {} });
    t.true(appended.every((e, i) => i === 0 || e.id > appended[i - 1]!.id), 'ids increase');
    t.true(appended[0]!.at instanceof Date);

    const newest = await store().listEvents({ subject, limit: 3 });
    t.deepEqual(newest, appended.slice(2).reverse());
    t.deepEqual(newest[0]!.detail, { strip: 4, reason: 'device gone', nested: { ok: true } });
    const page2 = await store().listEvents({ subject, limit: 3, beforeId: newest.at(-1)!.id });
    t.deepEqual(page2, appended.slice(0, 2).reverse());
    t.is((await store().listEvents({ limit: 2 })).length, 2);

    await expectCode(t, () => store().listEvents({ limit: eventsListMax + 1 }), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().listEvents({ limit: 0 }), ErrorCode.InvalidArgument);
    t.true((await store().listEvents({ limit: eventsListMax })).length <= eventsListMax);

    const circular: Record<string, unknown> = {};
    circular['self'] = circular;
    const badEvents: Array<[string, Record<string, unknown>]> = [
      ['kind with spaces', { kind: 'volume degraded' }],
      ['kind upper case', { kind: 'Volume.Degraded' }],
      ['empty subject', { subject: '' }],
      ['subject with newline', { subject: 'a\nb' }],
      ['detail an array', { detail: [1, 2] }],
      ['detail null', { detail: null }],
      ['detail too big', { detail: { blob: 'x'.repeat(eventDetailBytesMax) } }],
      ['detail with NUL', { detail: { text: 'a\u0000b' } }],
      ['detail circular', { detail: circular }],
      ['detail with a bigint', { detail: { n: 1n } }],
    ];
    for (const [why, change] of badEvents) {
      const e = await t.throwsAsync(() => store().appendEvent({ kind: 'test.bad', subject, detail: {}, ...change } as never), { instanceOf: StripvaultError }, why);
      t.is(e?.code, ErrorCode.InvalidArgument, why);
    }
    // A backslash before "u0000" is text, not NUL.
    const escaped = await store().appendEvent({ kind: 'test.escape', subject, detail: { text: '\\u0000' } });
    t.deepEqual(escaped.detail, { text: '\\u0000' });
    t.is((await store().listEvents({ subject, limit: eventsListMax })).length, 6);
  });

  // ---- key manager tables (migration 3) ------------------------------------------------------

  const keyId = (): string => randomBytes(16).toString('hex');
  const newKey = (id = keyId()) => ({ id, wrapped: randomBytes(40), createdAt: new Date() });
  const newCoi = (name = unique('coi'), ldapGroup: string | null = null) => ({ id: randomUUID(), name, ldapGroup, createdAt: new Date(), firstKey: newKey() });
  const testCaPem = `-----BEGIN CERTIFICATE-----\n${randomBytes(300).toString('base64')}\n-----END CERTIFICATE-----\n`;

  test.serial(`${label}: key manager root: key set and CA recorded once, together`, async (t) => {
    t.is(await store().getKeySet(), null);
    t.is(await store().getApplianceCa(), null);
    const keySetId = randomUUID();
    const keyEncrypted = randomBytes(1800);
    const createdAt = new Date('2026-01-02T03:04:05.678Z');
    const root = { keySetId, keySetRecord: { version: 1, keySetId, nested: { list: [1, 'two'] } }, caCertPem: testCaPem, caKeyEncrypted: keyEncrypted, createdAt };
    const bad: Array<[string, Record<string, unknown>]> = [
      ['key set id not a uuid', { keySetId: 'ks-1' }],
      ['record not an object', { keySetRecord: [1] }],
      ['certificate not PEM', { caCertPem: 'MIIB...' }],
      ['empty CA key', { caKeyEncrypted: new Uint8Array(0) }],
      ['CA key too large', { caKeyEncrypted: new Uint8Array(16 * 1024 + 1) }],
      ['CA key not bytes', { caKeyEncrypted: 'secret' }],
      ['bad date', { createdAt: new Date(Number.NaN) }],
    ];
    for (const [why, change] of bad) await expectCode(t, () => store().initKeyManagerRoot({ ...root, ...change } as never), ErrorCode.InvalidArgument, why);
    t.is(await store().getKeySet(), null, 'nothing half-written');

    await store().initKeyManagerRoot(root);
    t.deepEqual(await store().getKeySet(), { keySetId, record: root.keySetRecord, createdAt });
    const ca = await store().getApplianceCa();
    t.is(ca?.certPem, testCaPem);
    t.true(ca?.keyEncrypted.equals(keyEncrypted));
    // A second init (another appliance, a replay) changes nothing.
    await expectCode(t, () => store().initKeyManagerRoot({ ...root, keySetId: randomUUID(), caKeyEncrypted: randomBytes(10) }), ErrorCode.StoreConflict);
    t.is((await store().getKeySet())?.keySetId, keySetId);
    t.true((await store().getApplianceCa())?.keyEncrypted.equals(keyEncrypted));
  });

  test(`${label}: COIs and local members`, async (t) => {
    const input = newCoi();
    const coi = await store().createCoi(input);
    t.like(coi, { id: input.id, name: input.name, source: 'local', ldapGroup: null, activeKeyId: input.firstKey.id });
    t.deepEqual(coi.createdAt, input.createdAt);
    t.deepEqual(await store().getCoi(input.name), coi);
    t.deepEqual(
      (await store().listCois()).find((c) => c.id === coi.id),
      coi,
    );
    const dup = await expectCode(t, () => store().createCoi({ ...newCoi(input.name) }), ErrorCode.StoreConflict);
    t.regex(dup.message, /already exists/);
    // The same key id twice is a conflict too, and the refused COI is not half-created.
    const twinKey = newCoi();
    await expectCode(t, () => store().createCoi({ ...twinKey, firstKey: { ...twinKey.firstKey, id: input.firstKey.id } }), ErrorCode.StoreConflict);
    await expectCode(t, () => store().getCoi(twinKey.name), ErrorCode.StoreNotFound);

    const ldap = await store().createCoi(newCoi(unique('ldap'), 'cn=finance,ou=groups,dc=example,dc=org'));
    t.like(ldap, { source: 'ldap', ldapGroup: 'cn=finance,ou=groups,dc=example,dc=org' });

    const alice = { kind: 'user' as const, name: 'alice' };
    const db = { kind: 'client' as const, name: 'db-01' };
    await store().addCoiMember(coi.name, alice, new Date());
    await store().addCoiMember(coi.name, db, new Date());
    await expectCode(t, () => store().addCoiMember(coi.name, alice, new Date()), ErrorCode.StoreConflict);
    await expectCode(t, () => store().addCoiMember(ldap.name, alice, new Date()), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().addCoiMember(unique('nope'), alice, new Date()), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().addCoiMember(coi.name, { kind: 'group', name: 'x' } as never, new Date()), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().addCoiMember(coi.name, { kind: 'user', name: '' }, new Date()), ErrorCode.InvalidArgument);
    t.deepEqual(await store().listCoiMembers(coi.name), [alice, db]);
    t.deepEqual(await store().listCoiMembers(ldap.name), []);
    await expectCode(t, () => store().listCoiMembers(unique('nope')), ErrorCode.StoreNotFound);
    t.true((await store().listLocalCoisOf(alice)).includes(coi.name));
    t.true(await store().isLocalCoiMember(coi.name, db));
    t.false(await store().isLocalCoiMember(coi.name, { kind: 'user', name: 'db-01' }), 'kind matters');
    t.false(await store().isLocalCoiMember(unique('nope'), db));

    await store().removeCoiMember(coi.name, alice);
    await expectCode(t, () => store().removeCoiMember(coi.name, alice), ErrorCode.StoreNotFound);
    t.deepEqual(await store().listCoiMembers(coi.name), [db]);
    t.false((await store().listLocalCoisOf(alice)).includes(coi.name));

    const { removedKeyIds } = await store().removeCoi(coi.name);
    t.deepEqual(removedKeyIds, [input.firstKey.id]);
    await expectCode(t, () => store().getCoi(coi.name), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().getWorkgroupKey(input.firstKey.id), ErrorCode.StoreNotFound);
    t.false(await store().isLocalCoiMember(coi.name, db), 'members went with it');
    await expectCode(t, () => store().removeCoi(coi.name), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().createCoi({ ...newCoi(), ldapGroup: 'bad\ngroup' }), ErrorCode.InvalidArgument);
  });

  test(`${label}: workgroup keys: rotate, retire, destroy keeps the row but not the bytes`, async (t) => {
    const input = newCoi();
    const coi = await store().createCoi(input);
    const first = input.firstKey.id;
    const second = newKey();
    t.deepEqual(await store().rotateWorkgroupKey(coi.name, first, second), { retiredKeyId: first });
    // A rotation that read a stale active key loses.
    await expectCode(t, () => store().rotateWorkgroupKey(coi.name, first, newKey()), ErrorCode.StoreConflict);
    await expectCode(t, () => store().rotateWorkgroupKey(coi.name, null, newKey()), ErrorCode.StoreConflict);
    t.is((await store().getCoi(coi.name)).activeKeyId, second.id);
    t.like(await store().getWorkgroupKey(first), { state: 'retired', coi: coi.name, coiId: coi.id, destroyedAt: null });
    t.true((await store().getWorkgroupKey(first)).retiredAt instanceof Date);
    const active = await store().activeWrappedKey(coi.name);
    t.like(active, { id: second.id, state: 'active', coiId: coi.id });
    t.true(active?.wrapped.equals(second.wrapped));
    t.deepEqual(
      (await store().listWorkgroupKeys({ coi: coi.name })).map((k) => [k.id, k.state]),
      [
        [first, 'retired'],
        [second.id, 'active'],
      ],
    );
    t.deepEqual(await store().workgroupKeysWithMaterial([second.id, first, keyId()]), [first, second.id].sort());

    const destroyedAt = new Date('2026-03-04T05:06:07.000Z');
    t.like(await store().destroyWorkgroupKey(first, destroyedAt), { state: 'destroyed', destroyedAt });
    t.like(await store().destroyWorkgroupKey(first, new Date()), { state: 'destroyed', destroyedAt }, 'the first destruction time stays');
    const raw = await sql().query<{ wrapped: unknown }>('SELECT wrapped FROM workgroup_keys WHERE id = $1', [first]);
    t.is(raw[0]?.wrapped, null, 'wrapped bytes gone, row kept');
    t.deepEqual(await store().workgroupKeysWithMaterial([first, second.id]), [second.id]);
    // Destroying the active key leaves the COI without one.
    await store().destroyWorkgroupKey(second.id, new Date());
    t.is(await store().activeWrappedKey(coi.name), null);
    t.is((await store().getCoi(coi.name)).activeKeyId, null);
    const third = newKey();
    t.deepEqual(await store().rotateWorkgroupKey(coi.name, null, third), { retiredKeyId: null });
    t.is((await store().getCoi(coi.name)).activeKeyId, third.id);

    // The schema itself refuses a destroyed key with bytes, and a second active key.
    await t.throwsAsync(() => sql().query("UPDATE workgroup_keys SET wrapped = decode(repeat('ab', 40), 'hex') WHERE id = $1", [first]));
    await t.throwsAsync(() => sql().query("UPDATE workgroup_keys SET state = 'active', retired_at = NULL WHERE id = $1", [first]));
    await expectCode(
      t,
      () => sql().query("INSERT INTO workgroup_keys (id, coi_id, wrapped, state, created_at) VALUES ($1, $2, decode(repeat('cd', 40), 'hex'), 'active', now())", [keyId(), coi.id]),
      ErrorCode.StoreConflict,
    );

    const bad: Array<[string, () => Promise<unknown>]> = [
      ['key id not hex', () => store().getWorkgroupKey('zz'.repeat(16))],
      ['key id upper case', () => store().getWorkgroupKey(keyId().toUpperCase())],
      ['key id short', () => store().destroyWorkgroupKey('ab', new Date())],
      ['wrapped too short', () => store().rotateWorkgroupKey(coi.name, third.id, { ...newKey(), wrapped: randomBytes(32) })],
      ['wrapped not bytes', () => store().rotateWorkgroupKey(coi.name, third.id, { ...newKey(), wrapped: 'x'.repeat(40) } as never)],
      ['ids not an array', () => store().workgroupKeysWithMaterial('abc' as never)],
      ['ids with a bad one', () => store().workgroupKeysWithMaterial([keyId(), 'nope'])],
    ];
    for (const [why, run] of bad) await expectCode(t, run, ErrorCode.InvalidArgument, why);
    await expectCode(t, () => store().getWorkgroupKey(keyId()), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().destroyWorkgroupKey(keyId(), new Date()), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().rotateWorkgroupKey(unique('nope'), null, newKey()), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().activeWrappedKey(unique('nope')), ErrorCode.StoreNotFound);
    t.deepEqual(await store().workgroupKeysWithMaterial([]), []);
  });

  test(`${label}: concurrent rotations of one COI: exactly one wins`, async (t) => {
    const input = newCoi();
    await store().createCoi(input);
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => store().rotateWorkgroupKey(input.name, input.firstKey.id, newKey())));
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') t.is((r.reason as StripvaultError).code, ErrorCode.StoreConflict);
    t.is((await store().listWorkgroupKeys({ coi: input.name })).filter((k) => k.state === 'active').length, 1);
  });

  test(`${label}: virtual disks: one volume to several COIs, names unique, both ends pinned`, async (t) => {
    const devices = await addDevices(1);
    const volume = await store().createVolume({ name: unique('vd-vol'), m: 1, n: 1, sizeBytes: MiB, blockSize: 4096, strips: stripsOn(devices) });
    const a = newCoi();
    const b = newCoi();
    await store().createCoi(a);
    await store().createCoi(b);
    const name = unique('export ä');
    const disk = await store().createVirtualDisk({ name, volumeId: volume.id, coi: a.name, createdAt: new Date() });
    t.like(disk, { name, volumeId: volume.id, volumeName: volume.name, coi: a.name });
    t.deepEqual(await store().getVirtualDisk(name), disk);
    await expectCode(t, () => store().createVirtualDisk({ name, volumeId: volume.id, coi: b.name, createdAt: new Date() }), ErrorCode.StoreConflict);
    const again = await expectCode(t, () => store().createVirtualDisk({ name: unique('other'), volumeId: volume.id, coi: a.name, createdAt: new Date() }), ErrorCode.StoreConflict);
    t.regex(again.message, /already presented/);
    const second = await store().createVirtualDisk({ name: unique('disk-b'), volumeId: volume.id, coi: b.name, createdAt: new Date() });
    t.deepEqual(
      (await store().listVirtualDisks({ volumeId: volume.id })).map((d) => d.name),
      [disk.name, second.name].sort(),
    );
    t.deepEqual(
      (await store().listVirtualDisks({ coi: b.name })).map((d) => d.name),
      [second.name],
    );
    t.deepEqual(
      (await store().listVirtualDisks({ cois: [a.name, unique('nope')] })).map((d) => d.name),
      [disk.name],
    );
    t.deepEqual(await store().listVirtualDisks({ cois: [] }), []);

    // The keys that open the volume: active and retired ones of both COIs, never destroyed ones.
    const bNext = newKey();
    await store().rotateWorkgroupKey(b.name, b.firstKey.id, bNext);
    t.deepEqual(
      (await store().wrappedKeysForVolume(volume.id)).map((k) => k.id).sort(),
      [a.firstKey.id, b.firstKey.id, bNext.id].sort(),
    );
    await store().destroyWorkgroupKey(b.firstKey.id, new Date());
    t.deepEqual(
      (await store().wrappedKeysForVolume(volume.id)).map((k) => k.id).sort(),
      [a.firstKey.id, bNext.id].sort(),
    );

    await expectCode(t, () => store().removeCoi(a.name), ErrorCode.StoreConflict);
    await expectCode(t, () => store().removeVolume(volume.id), ErrorCode.StoreConflict);
    await store().removeVirtualDisk(disk.name);
    await expectCode(t, () => store().removeVirtualDisk(disk.name), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().getVirtualDisk(disk.name), ErrorCode.StoreNotFound);
    await store().removeCoi(a.name);
    t.deepEqual(
      (await store().wrappedKeysForVolume(volume.id)).map((k) => k.id),
      [bNext.id],
    );

    // A COI whose keys are all destroyed presents nothing.
    const c = newCoi();
    await store().createCoi(c);
    await store().destroyWorkgroupKey(c.firstKey.id, new Date());
    await expectCode(t, () => store().createVirtualDisk({ name: unique('keyless'), volumeId: volume.id, coi: c.name, createdAt: new Date() }), ErrorCode.KeyDestroyed);
    await expectCode(t, () => store().createVirtualDisk({ name: unique('x'), volumeId: randomUUID(), coi: b.name, createdAt: new Date() }), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().createVirtualDisk({ name: unique('x'), volumeId: volume.id, coi: unique('nope'), createdAt: new Date() }), ErrorCode.StoreNotFound);
    const badNames: Array<[string, unknown]> = [
      ['empty', ''],
      ['256 bytes', 'a'.repeat(256)],
      ['NUL', 'a\u0000b'],
      ['newline', 'a\nb'],
      ['escape', 'a\u001bb'],
      ['bidi override', 'a\u202eb'],
      ['not a string', 7],
    ];
    for (const [why, bad] of badNames) {
      await expectCode(t, () => store().createVirtualDisk({ name: bad as string, volumeId: volume.id, coi: c.name, createdAt: new Date() }), ErrorCode.InvalidArgument, why);
    }
    // 255 bytes of UTF-8 is the longest name (é is two bytes).
    const d = newCoi();
    await store().createCoi(d);
    const longest = `${'é'.repeat(127)}${unique('')}`.slice(0, 128);
    const padded = longest + 'a'.repeat(255 - Buffer.byteLength(longest, 'utf8'));
    t.is((await store().createVirtualDisk({ name: padded, volumeId: volume.id, coi: d.name, createdAt: new Date() })).name, padded);
    await expectCode(t, () => store().listVirtualDisks({ volumeId: 'vol' }), ErrorCode.InvalidArgument);
  });

  test(`${label}: certificates: record, find, revoke once, list in issue order`, async (t) => {
    const serial = () => randomBytes(16).toString('hex');
    const notBefore = new Date('2026-01-01T00:00:00.000Z');
    const notAfter = new Date('2027-01-01T00:00:00.000Z');
    const first = { serial: serial(), kind: 'client' as const, subject: 'db-01', coiNames: ['finance', 'hr'], notBefore, notAfter };
    const second = { serial: serial().toUpperCase(), kind: 'server' as const, subject: 'nbd.example.org', coiNames: [], notBefore, notAfter };
    await store().recordCertificate(first);
    await store().recordCertificate(second);
    await expectCode(t, () => store().recordCertificate(first), ErrorCode.StoreConflict);
    t.deepEqual(await store().findCertificate(first.serial.toUpperCase()), { ...first, revokedAt: null });
    t.like(await store().findCertificate(second.serial), { serial: second.serial.toLowerCase(), coiNames: [] });
    t.is(await store().findCertificate(serial()), null);
    const listed = (await store().listCertificates()).map((c) => c.serial);
    t.true(listed.indexOf(first.serial) < listed.indexOf(second.serial.toLowerCase()), 'issue order');

    const at = new Date('2026-06-01T12:00:00.000Z');
    t.deepEqual((await store().revokeCertificate(first.serial, at))?.revokedAt, at);
    t.deepEqual((await store().revokeCertificate(first.serial, new Date()))?.revokedAt, at, 'revoking twice keeps the first time');
    t.is(await store().revokeCertificate(serial(), at), null);
    const bad: Array<[string, Record<string, unknown>]> = [
      ['serial not hex', { serial: 'xyz' }],
      ['serial odd length', { serial: 'abc' }],
      ['serial too long', { serial: 'ab'.repeat(21) }],
      ['unknown kind', { kind: 'ca' }],
      ['subject with newline', { subject: 'a\nb' }],
      ['coiNames not an array', { coiNames: 'finance' }],
      ['validity backwards', { notAfter: notBefore, notBefore: notAfter }],
    ];
    for (const [why, change] of bad) await expectCode(t, () => store().recordCertificate({ ...first, serial: serial(), ...change } as never), ErrorCode.InvalidArgument, why);
  });

  test(`${label}: local users: add, hash, change, remove`, async (t) => {
    const name = unique('user');
    await store().addLocalUser({ name, passwordHash: 'scrypt$15$8$1$salt$hash', at: new Date() });
    await expectCode(t, () => store().addLocalUser({ name, passwordHash: 'x', at: new Date() }), ErrorCode.StoreConflict);
    t.is(await store().getLocalUserPasswordHash(name), 'scrypt$15$8$1$salt$hash');
    await store().setLocalUserPasswordHash(name, 'scrypt$15$8$1$salt2$hash2', new Date());
    t.is(await store().getLocalUserPasswordHash(name), 'scrypt$15$8$1$salt2$hash2');
    t.true((await store().listLocalUsers()).some((u) => u.name === name));
    await store().removeLocalUser(name);
    t.is(await store().getLocalUserPasswordHash(name), null);
    await expectCode(t, () => store().removeLocalUser(name), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().setLocalUserPasswordHash(name, 'x', new Date()), ErrorCode.StoreNotFound);
    await expectCode(t, () => store().addLocalUser({ name: unique('u'), passwordHash: '', at: new Date() }), ErrorCode.InvalidArgument);
    await expectCode(t, () => store().addLocalUser({ name: 'a\u0000b', passwordHash: 'x', at: new Date() }), ErrorCode.InvalidArgument);
  });
}
