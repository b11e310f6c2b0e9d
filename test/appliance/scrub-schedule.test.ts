import test from 'ava';
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '../../appliance/errors.ts';
import { startScrubSchedule } from '../../appliance/scrub-schedule.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';
import { parseDuration } from '../../cli/sizes.ts';
import { withTempDir } from '../helpers/volumes.ts';
import { devAppliance } from '../helpers/appliance.ts';

const MiB = 1024 * 1024;

test('the scheduled scrub finds and repairs a damaged share, records events, and stops cleanly', async (t) => {
  await withTempDir(async (dir) => {
    const appliance = await devAppliance(join(dir, 'data'));
    try {
      for (let i = 0; i < 3; i++) await appliance.addDevice({ name: `d${i}`, path: join(dir, `d${i}.img`), createBytes: 16 * MiB });
      const record = await appliance.createVolume({ name: 'v', m: 2, sizeBytes: 4 * MiB, blockBytes: 4096, devices: ['d0', 'd1', 'd2'], coi: 'default' });
      const volume = await appliance.openVolume('v');
      const data = randomBytes(4 * MiB);
      await volume.write(0, data);
      await volume.flush();
      // Damage block 7's share on strip 2 behind the volume's back.
      const strip = record.strips[2]!;
      const fh = await open(join(dir, 'd2.img'), 'r+');
      const at = strip.offsetBytes + dataOffset + 7 * volume.slotBytes + 100;
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0]! ^= 0x80;
      await fh.write(b, 0, 1, at);
      await fh.close();

      t.throws(() => startScrubSchedule(appliance, { everyMs: 10, rateBytesPerSec: 0 }), { code: ErrorCode.InvalidArgument } as never);
      const schedule = startScrubSchedule(appliance, { everyMs: 1000, rateBytesPerSec: 0 });
      const deadline = Date.now() + 30_000;
      while (schedule.passes < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await schedule.stop();
      t.true(schedule.passes >= 1, 'a pass completed');
      const events = await appliance.store.listEvents({ subject: record.id, limit: 50 });
      const finished = events.find((e) => e.kind === 'scrub.finished');
      t.truthy(finished);
      t.like(finished!.detail, { blocksRepaired: 1, blocksLost: 0, complete: true });
      t.true((await volume.read(0, 4 * MiB)).equals(data));
    } finally {
      await appliance.close();
    }
  });
});

test('a scrub stopped part way saves where it was; the next start resumes there and records the finished pass', async (t) => {
  await withTempDir(async (dir) => {
    const appliance = await devAppliance(join(dir, 'data'));
    try {
      for (let i = 0; i < 3; i++) await appliance.addDevice({ name: `d${i}`, path: join(dir, `d${i}.img`), createBytes: 16 * MiB });
      const record = await appliance.createVolume({ name: 'v', m: 2, sizeBytes: 8 * MiB, blockBytes: 4096, devices: ['d0', 'd1', 'd2'], coi: 'default', regionsZeroed: true });
      // A clock that says the volume is overdue; 1 MiB/s makes the 8 MiB pass take seconds, so stop lands mid-way.
      let clock = Date.now() + 2000;
      const slow = startScrubSchedule(appliance, { everyMs: 1000, rateBytesPerSec: MiB, now: () => clock });
      const deadline = Date.now() + 30_000;
      const started = async () => (await appliance.store.listEvents({ subject: record.id, limit: 50 })).some((e) => e.kind === 'scrub.started');
      while (!(await started()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 1500));
      await slow.stop();
      const paused = await appliance.store.getVolume('v');
      t.true(paused.scrubNextBlock > 0 && paused.scrubNextBlock < 2048, `saved cursor ${paused.scrubNextBlock}`);
      t.is(paused.scrubCompletedAt, null);

      clock += 10_000;
      const fast = startScrubSchedule(appliance, { everyMs: 1000, rateBytesPerSec: 0, now: () => clock });
      while (fast.passes < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await fast.stop();
      const events = await appliance.store.listEvents({ subject: record.id, limit: 50 });
      const resumed = events.find((e) => e.kind === 'scrub.resumed');
      t.is(resumed?.detail['fromBlock'], paused.scrubNextBlock);
      const done = await appliance.store.getVolume('v');
      t.is(done.scrubNextBlock, 0);
      t.truthy(done.scrubCompletedAt);
    } finally {
      await appliance.close();
    }
  });
});

test('durations: the forms people type, and clear errors', (t) => {
  t.is(parseDuration('30s'), 30_000);
  t.is(parseDuration('15m'), 900_000);
  t.is(parseDuration('7d'), 7 * 86_400_000);
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('off'), null);
  t.is(parseDuration('0'), null);
  for (const bad of ['soon', '10', '-5s', '1.5h', '99999999999999999d']) t.throws(() => parseDuration(bad), { code: ErrorCode.InvalidArgument } as never, bad);
});
