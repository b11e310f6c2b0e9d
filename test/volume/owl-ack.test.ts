/**
 * A write is acknowledged once its journal record is in the OWL file; its shares go to the strips
 * after the record is durable. These tests hold the strip writes back to see the in-between state:
 * reads and flushes must still see a consistent, durable volume, and a write that fails after its
 * acknowledgement must fail the volume closed until a reopen replays it.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';
import { testWrapper } from '../helpers/volumes.ts';
import { GatedDevice } from '../helpers/gated-device.ts';
import { owlVolume, owlVolumeBytes } from '../helpers/owl-volume.ts';

const volumeId = '7a1d7c2e-0000-4000-8000-00000000ac4e';
const sizeBytes = owlVolumeBytes;
const fixture = (t: Parameters<typeof owlVolume>[0]) => owlVolume(t, volumeId);


test('a write is acknowledged at its journal record; reads wait for its shares, flush waits for the strips', async (t) => {
  const { volume, gated } = await fixture(t);
  const data = randomBytes(16384);
  for (const g of gated) g.hold();
  await volume.write(8192, data);
  let readDone = false;
  const reading = volume.read(8192, 16384).then((b) => {
    readDone = true;
    return b;
  });
  let flushed = false;
  const flushing = volume.flush().then(() => (flushed = true));
  await new Promise((r) => setTimeout(r, 50));
  t.false(readDone, 'a read of the range waits until the shares are out');
  t.false(flushed, 'a flush waits until the acknowledged write is on the strips');
  for (const g of gated) g.openGate();
  t.true((await reading).equals(data));
  await flushing;
  t.true(flushed);
  t.true((await volume.read(8192, 16384)).equals(data));
  await volume.close();
});

test('a write that fails after its acknowledgement fails the volume closed; a reopen replays it', async (t) => {
  const { volume, gated, reopen } = await fixture(t);
  const before = randomBytes(4096);
  await volume.write(0, before);
  await volume.flush();
  const data = randomBytes(8192);
  for (const g of gated) {
    g.failing = true;
    g.hold();
  }
  // The client is told the write succeeded: its record is in the journal.
  await volume.write(0, data);
  for (const g of gated) g.openGate();
  const flush = await t.throwsAsync(volume.flush());
  t.is((flush as StripvaultError).code, ErrorCode.VolumeUnavailable, 'the flush reports the lost acknowledged write');
  // Older data must not be served for a block whose write was acknowledged.
  const read = await t.throwsAsync(volume.read(0, 4096));
  t.is((read as StripvaultError).code, ErrorCode.VolumeUnavailable);
  const write = await t.throwsAsync(volume.write(65536, randomBytes(4096)));
  t.is((write as StripvaultError).code, ErrorCode.VolumeUnavailable);
  await volume.close().catch(() => undefined);
  const again = await reopen();
  t.true((await again.read(0, 8192)).equals(data), 'the journal replay finished the acknowledged write');
  await again.close();
});

test('without a journal, a write is acknowledged only when its shares are on the strips', async (t) => {
  const stripBytes = stripBytesForVolume(sizeBytes, 4096, 2);
  const gated = Array.from({ length: 3 }, (_, i) => new GatedDevice(new MemoryDevice(stripBytes, { id: `m${i}` }), dataOffset));
  const volume = await Volume.create({
    id: volumeId,
    name: 'plain',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes: 4096,
    locations: gated.map((device) => ({ device, base: 0 })),
    wrappers: [testWrapper()],
    regionsZeroed: true,
  });
  for (const g of gated) g.hold();
  let acked = false;
  const writing = volume.write(0, randomBytes(4096)).then(() => (acked = true));
  await new Promise((r) => setTimeout(r, 50));
  t.false(acked);
  for (const g of gated) g.openGate();
  await writing;
  t.true(acked);
  await volume.close();
});

// Serial: it patches the FileHandle prototype, which every other test's journal would see too.
test.serial('a journal that cannot be synced after a write was acknowledged: nothing serves the older data', async (t) => {
  const { volume, reopen } = await fixture(t);
  const before = randomBytes(4096);
  await volume.write(0, before);
  await volume.flush();
  // Every FileHandle of this process shares the prototype: make the journal's next sync fail once.
  const { open } = await import('node:fs/promises');
  const probe = await open(join(tmpdir(), `sv-owl-ack-probe-${process.pid}`), 'w');
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
  await probe.close();
  await rm(join(tmpdir(), `sv-owl-ack-probe-${process.pid}`), { force: true });
  const real = proto.datasync;
  proto.datasync = function failOnce() {
    proto.datasync = real;
    return Promise.reject(Object.assign(new Error('EIO: injected journal sync failure'), { code: 'EIO' }));
  };
  t.teardown(() => void (proto.datasync = real));
  await volume.write(0, randomBytes(4096));
  const read = await t.throwsAsync(volume.read(0, 4096));
  t.is((read as StripvaultError).code, ErrorCode.VolumeUnavailable, 'the strips still hold the older block: it must not be served');
  const flush = await t.throwsAsync(volume.flush());
  t.is((flush as StripvaultError).code, ErrorCode.VolumeUnavailable);
  // Nor may a scrub or a re-key work around the unreplayed record.
  t.is(((await t.throwsAsync(volume.scrub())) as StripvaultError).code, ErrorCode.VolumeUnavailable);
  t.is(((await t.throwsAsync(volume.rekey())) as StripvaultError).code, ErrorCode.VolumeUnavailable);
  t.is(volume.health().state, 'failed');
  await volume.close().catch(() => undefined);
  // The record may or may not have reached the disk: either the old or the new block, never an error.
  const again = await reopen();
  t.is((await again.read(0, 4096)).length, 4096);
  await again.close();
});
