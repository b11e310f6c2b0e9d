import { randomBytes } from 'node:crypto';
import test from 'ava';
import { ErrorCode } from '../../appliance/errors.ts';
import { Strip } from '../../appliance/strip/strip.ts';
import { Volume } from '../../appliance/volume/volume.ts';
import { memoryVolume, testWrapper } from '../helpers/volumes.ts';

const openWith = (f: Awaited<ReturnType<typeof memoryVolume>>, wrappers: ReturnType<typeof testWrapper>[]) =>
  Volume.open({ locations: f.devices.map((device) => ({ device, base: 0 })), wrappers, expectId: f.volume.id });

test('a second key is added to every strip header online; removing the first leaves only the second able to open', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 1 << 20 });
  const data = randomBytes(8192);
  await f.volume.write(0, data);
  const second = testWrapper();
  await f.volume.addWrapper(second);
  t.deepEqual(f.volume.wrapperIds(), [f.wrapper.id.toString('hex'), second.id.toString('hex')].sort());
  // Still serving while re-wrapped.
  t.true((await f.volume.read(0, 8192)).equals(data));
  const viaSecond = await openWith(f, [second]);
  t.true((await viaSecond.read(0, 8192)).equals(data));
  await viaSecond.close();

  await f.volume.removeWrapper(f.wrapper.id);
  t.deepEqual(f.volume.wrapperIds(), [second.id.toString('hex')]);
  await t.throwsAsync(openWith(f, [f.wrapper]), { code: ErrorCode.VolumeUnavailable } as never);
  await t.throwsAsync(f.volume.removeWrapper(second.id), { code: ErrorCode.StoreConflict } as never, 'the last key stays');
  await f.volume.close();
  t.true(second.key.some((b) => b !== 0), "closing zeroes the volume's copies, not the caller's keys");
  const again = await openWith(f, [second]);
  t.true((await again.read(0, 8192)).equals(data));
  await again.close();
});

test('wiping the headers makes every strip unopenable by any key; the slots are untouched', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 1 << 20 });
  await f.volume.write(0, randomBytes(4096));
  const slotsBefore = await Promise.all([0, 1, 2].map((i) => f.volume.stripAt(i)!.readSlots(0, 1)));
  const { wiped, unreachable } = await f.volume.wipeHeaders();
  t.deepEqual(wiped, [0, 1, 2]);
  t.deepEqual(unreachable, []);
  for (const device of f.devices) t.true(await Strip.headersWiped({ device, base: 0 }));
  await t.throwsAsync(openWith(f, [f.wrapper]), { code: ErrorCode.VolumeUnavailable } as never);
  await t.throwsAsync(f.volume.read(0, 4096), { code: ErrorCode.VolumeClosed } as never);
  for (let i = 0; i < 3; i++) {
    const device = f.devices[i]!;
    const label = await Strip.readLabel({ device, base: 0 });
    t.true((await device.read(label.dataOffset, label.slotBytes)).equals(slotsBefore[i]!), `strip ${i} slot 0 unchanged`);
  }
});
