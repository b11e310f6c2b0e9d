import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import test from 'ava';
import { withTempDir } from '../helpers/volumes.ts';
import { devAppliance } from '../helpers/appliance.ts';

const MiB = 1024 * 1024;

test('session key rotation through the appliance is audited before it starts and recorded as events', async (t) => {
  await withTempDir(async (dir) => {
    const a = await devAppliance(join(dir, 'data'));
    t.teardown(() => a.close());
    for (let i = 0; i < 3; i++) await a.addDevice({ name: `d${i}`, path: join(dir, `d${i}.img`), createBytes: 16 * MiB });
    await a.createVolume({ name: 'v', m: 2, sizeBytes: 2 * MiB, blockBytes: 4096, devices: ['d0', 'd1', 'd2'], coi: 'default', regionsZeroed: true });
    const data = randomBytes(2 * MiB);
    await (await a.openVolume('v')).write(0, data);
    const report = await a.rekeyVolume('v', {}, { name: 'officer:test' });
    t.true(report.finished);
    t.is(report.blocksRepaired, 512);
    const audit = await a.store.listAudit(0, 1000);
    t.true(audit.some((r) => r.action === 'key.session.rotate' && r.actor === 'officer:test' && r.subject === 'volume:v'));
    const events = (await a.store.listEvents({ limit: 100 })).map((e) => e.kind);
    t.true(events.includes('volume.rekey_started') && events.includes('volume.rekey_finished'));
    // After a reopen (keys from the headers only), the data reads back under the new keys.
    await a.closeVolume((await a.store.getVolume('v')).id);
    t.true((await (await a.openVolume('v')).read(0, 2 * MiB)).equals(data));
  });
});
