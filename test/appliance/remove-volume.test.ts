import { join } from 'node:path';
import test from 'ava';
import { openFileDevice } from '../../appliance/device/file-device.ts';
import { Strip } from '../../appliance/strip/strip.ts';
import { withTempDir } from '../helpers/volumes.ts';
import { devAppliance } from '../helpers/appliance.ts';

const MiB = 1024 * 1024;

test('removing a volume withdraws its virtual disks and wipes its strip headers before freeing the regions', async (t) => {
  await withTempDir(async (dir) => {
    const a = await devAppliance(join(dir, 'data'));
    t.teardown(() => a.close());
    for (let i = 0; i < 3; i++) await a.addDevice({ name: `d${i}`, path: join(dir, `d${i}.img`), createBytes: 16 * MiB });
    const v = await a.createVolume({ name: 'gone', m: 2, sizeBytes: 2 * MiB, blockBytes: 4096, devices: ['d0', 'd1', 'd2'], coi: 'default', regionsZeroed: true });
    await (await a.openVolume('gone')).write(0, Buffer.alloc(4096, 7));
    await a.removeVolume('gone');
    t.deepEqual(await a.keys.listVirtualDisks({ volumeId: v.id }).catch(() => []), []);
    for (const s of v.strips) {
      const device = await openFileDevice(join(dir, `d${s.index}.img`));
      t.true(await Strip.headersWiped({ device, base: s.offsetBytes }), `strip ${s.index}`);
      await device.close();
    }
    t.is((await a.store.listVolumes()).length, 0);
  });
});
