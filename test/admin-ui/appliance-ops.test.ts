/**
 * `applianceAdminOps` over a real appliance (embedded store in a temp dir, dev-unsealed): what the
 * admin API's device and volume routes do to it. Devices in and out, a volume made and shown with
 * live health, a taken virtual disk name refused before anything is recorded, a scrub recorded as
 * an event like the scheduled one, and a strip whose device vanished rebuilt on another device.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { applianceAdminOps } from '../../admin-ui/appliance-ops.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { defaultCoiName } from '../../keymgr/dev-unseal.ts';
import { devAppliance } from '../helpers/appliance.ts';
import { withTempDir } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;
const officer = { name: 'officer:test' };

test('devices and volumes through the adapter, with live health and scrub events', async (t) => {
  await withTempDir(async (root) => {
    const a = await devAppliance(join(root, 'data'));
    t.teardown(() => a.close());
    const ops = applianceAdminOps(a);

    for (let i = 0; i < 3; i++) {
      const d = await ops.addDevice({ name: `d${i}`, path: join(root, `d${i}.img`), createBytes: 32 * MiB });
      t.like(d, { name: `d${i}`, kind: 'file', sizeBytes: 32 * MiB, created: true });
    }
    t.deepEqual(
      (await ops.listDevices()).map((d) => d.name),
      ['d0', 'd1', 'd2'],
    );
    await t.throwsAsync(ops.addDevice({ name: 'd0', path: join(root, 'other.img'), createBytes: MiB }), { code: ErrorCode.StoreConflict } as never);

    const v = await ops.createVolume({ name: 'v1', sizeBytes: 4 * MiB, devices: ['d0', 'd1', 'd2'], m: 2, blockBytes: 4096, coi: defaultCoiName }, officer);
    t.like(v, { name: 'v1', m: 2, n: 3, state: 'online' });
    t.deepEqual(
      (await a.keys.listVirtualDisks({ volumeId: v.id })).map((d) => d.name),
      ['v1'],
    );
    const detail = await ops.getVolume('v1');
    t.is(detail.volume.id, v.id);
    t.like(detail.health, { state: 'healthy' });
    t.is((await ops.getDevice('d0')).strips.length, 1);

    // A taken virtual disk name: refused before any volume is recorded.
    const before = (await ops.listVolumes()).length;
    await t.throwsAsync(
      ops.createVolume({ name: 'v2', sizeBytes: 4 * MiB, devices: ['d0', 'd1', 'd2'], m: 2, blockBytes: 4096, coi: defaultCoiName, virtualDisk: 'v1' }, officer),
      { code: ErrorCode.StoreConflict } as never,
    );
    t.is((await ops.listVolumes()).length, before, 'nothing left behind');

    const { volumeName, report } = await ops.scrubVolume('v1', { rateBytesPerSec: 0 });
    t.is(volumeName, 'v1');
    t.like(report, { blocksDone: 1024, blocksTotal: 1024, blocksLost: 0, nextBlock: 1024 });
    const kinds = (await a.store.listEvents({ subject: v.id, limit: 50 })).map((e) => e.kind);
    t.true(kinds.includes('scrub.started') && kinds.includes('scrub.finished'), kinds.join(', '));

    await t.throwsAsync(ops.removeDevice('d0'), { code: ErrorCode.StoreConflict } as never, 'a device holding a strip stays');
    t.is((await ops.removeVolume('v1', officer)).id, v.id);
    t.deepEqual(await a.keys.listVirtualDisks({ volumeId: v.id }), []);
    await t.throwsAsync(ops.getVolume('v1'), { code: ErrorCode.StoreNotFound } as never);
    t.is((await ops.removeDevice('d0')).name, 'd0');
    t.deepEqual(
      (await ops.listDevices()).map((d) => d.name),
      ['d1', 'd2'],
    );
  });
});

test('a strip whose device vanished is rebuilt on another device', async (t) => {
  await withTempDir(async (root) => {
    const dataDir = join(root, 'data');
    let a = await devAppliance(dataDir);
    let ops = applianceAdminOps(a);
    try {
      for (let i = 0; i < 4; i++) await ops.addDevice({ name: `d${i}`, path: join(root, `d${i}.img`), createBytes: 16 * MiB });
      await ops.createVolume({ name: 'v1', sizeBytes: 2 * MiB, devices: ['d0', 'd1', 'd2'], m: 2, blockBytes: 4096, coi: defaultCoiName }, officer);
      await (await a.openVolume('v1')).write(0, Buffer.alloc(64 * 1024, 7));
    } finally {
      await a.close();
    }
    await rm(join(root, 'd2.img'));
    a = await devAppliance(dataDir);
    t.teardown(() => a.close());
    ops = applianceAdminOps(a);

    const degraded = await ops.getVolume('v1');
    t.like(degraded.health, { state: 'degraded' });
    const strips = 'strips' in degraded.health ? degraded.health.strips : [];
    t.deepEqual(
      strips.map((s) => s.state),
      ['healthy', 'healthy', 'missing'],
    );

    const { report } = await ops.rebuildStrip('v1', { strip: 2, device: 'd3', rateBytesPerSec: 0 });
    t.deepEqual(report.caughtUp, [2]);
    t.is(report.blocksLost, 0);
    t.like((await ops.getVolume('v1')).health, { state: 'healthy' });
    t.is((await ops.getDevice('d3')).strips.length, 1);
    t.true((await (await a.openVolume('v1')).read(0, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 7)));
  });
});
