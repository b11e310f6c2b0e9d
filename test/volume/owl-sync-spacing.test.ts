/**
 * The journal's syncs are spaced (owlSyncIntervalMinMs) and a group's slot is free once its writev
 * returns: records are written — and writes acknowledged — without waiting for any sync, while
 * whoever waits for a sync (flush, FUA, close, a full ring, a request for blocks being written, a
 * write that waits for its strips) turns the spacing off while it waits (urge(), hurry()).
 * An interval of a minute stands for "never on its own": what must happen does so long before it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import test from 'ava';
import { Owl, owlGroupsInFlightMax, type OwlAppend } from '../../appliance/volume/owl.ts';
import { owlVolume, owlVolumeBlockBytes } from '../helpers/owl-volume.ts';
import { withTempDir } from '../helpers/volumes.ts';

const vid = randomBytes(16);
const never = 60_000;

function record(i: number): OwlAppend {
  const slotBytes = 512;
  return { first: i, count: 1, epoch: 1, generation: 100 + i, targets: [0, 1, 2], slotBytes, shares: [0, 1, 2].map((t) => Buffer.alloc(slotBytes, (i + t) & 0xff)) };
}

test('records are written at once but journaled only at the next sync, which waits out the interval unless hurried', async (t) => {
  await withTempDir(async (dir) => {
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 1 << 20, { syncIntervalMinMs: never });
    t.teardown(() => owl.close());
    // The first sync has nothing before it to be spaced from.
    await owl.append(record(0));
    let journaled = false;
    let markWritten!: () => void;
    const written = new Promise<void>((resolve) => (markWritten = resolve));
    const second = owl.append(record(1), { written: markWritten }).then((e) => ((journaled = true), e));
    t.true(await prompt(written), 'the record is in the file (its write acknowledged) without a sync');
    // A while in which an unspaced sync would have run (a negative check: a slow machine only
    // makes it pass more easily, never fail wrongly).
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.false(journaled, 'it is not journaled before the next sync, which is being spaced');
    owl.hurry();
    const entry = await second;
    t.true(journaled && entry.state === 'journaled', 'hurry() starts the sync without waiting out the interval');
  });
});

test('more groups than owlGroupsInFlightMax are written while their sync is held back', async (t) => {
  await withTempDir(async (dir) => {
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 1 << 20, { syncIntervalMinMs: never });
    t.teardown(() => owl.close());
    await owl.append(record(0));
    const groups = owlGroupsInFlightMax + 4;
    let written = 0;
    let markAll!: () => void;
    const all = new Promise<void>((resolve) => (markAll = resolve));
    const pending: Promise<unknown>[] = [];
    for (let i = 1; i <= groups; i++) {
      pending.push(owl.append(record(i), { written: () => ++written === groups && markAll() }));
      // One group per turn of the event loop.
      await nextTurn();
      await nextTurn();
    }
    t.true(await prompt(all), `every group was written (and could be acknowledged) with no sync since the first (${written} of ${groups})`);
    owl.hurry();
    await Promise.all(pending);
  });
});

/** Whether `p` settles well before the interval would have let it (a third of a minute). */
async function prompt(p: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), never / 3)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

test('a flush, a read or overwrite of blocks just written, partial-block and zero writes, and a close do not wait out the journal sync interval', async (t) => {
  const { volume, reopen } = await owlVolume(t, randomUUID(), { syncIntervalMinMs: never });
  const data = randomBytes(8 * owlVolumeBlockBytes);
  await volume.write(0, data);
  const more = randomBytes(4 * owlVolumeBlockBytes);
  // This write's record is synced only when someone asks for durability.
  await volume.write(32 * owlVolumeBlockBytes, more);
  t.true(await prompt(volume.flush()), 'flush hurries the sync');
  // A write holds its blocks until its shares are out, i.e. until the sync after it.
  await volume.write(64 * owlVolumeBlockBytes, more);
  t.true(await prompt(volume.read(64 * owlVolumeBlockBytes, more.length)), 'a read of the blocks hurries the sync');
  await volume.write(96 * owlVolumeBlockBytes, more);
  t.true(await prompt(volume.write(96 * owlVolumeBlockBytes, data.subarray(0, more.length))), 'an overwrite hurries the sync');
  // Writes that wait for their strips: partial blocks (read-modify-write) and zeroes.
  t.true(await prompt(volume.write(160 * owlVolumeBlockBytes + 100, more.subarray(0, 5000))), 'an unaligned write does not wait out the interval');
  t.true(await prompt(volume.writeZeroes(192 * owlVolumeBlockBytes, 40 * owlVolumeBlockBytes)), 'writeZeroes does not wait out the interval');
  // A chain: each overwrite of one block waits for the one before it, sync after sync.
  const chain = Array.from({ length: 4 }, (_, i) => volume.write(240 * owlVolumeBlockBytes, Buffer.alloc(owlVolumeBlockBytes, i + 1)));
  t.true(await prompt(Promise.all(chain)), 'overwrites of one block, each behind the last, do not wait out the interval');
  await volume.write(128 * owlVolumeBlockBytes, data);
  t.true(await prompt(volume.close()), 'close hurries the sync');
  const again = await reopen();
  t.teardown(() => again.close());
  t.true((await again.read(0, data.length)).equals(data));
  t.true((await again.read(32 * owlVolumeBlockBytes, more.length)).equals(more));
  t.true((await again.read(64 * owlVolumeBlockBytes, more.length)).equals(more));
  t.true((await again.read(96 * owlVolumeBlockBytes, more.length)).equals(data.subarray(0, more.length)));
  t.true((await again.read(128 * owlVolumeBlockBytes, data.length)).equals(data));
  t.true((await again.read(160 * owlVolumeBlockBytes + 100, 5000)).equals(more.subarray(0, 5000)));
  t.true((await again.read(192 * owlVolumeBlockBytes, 40 * owlVolumeBlockBytes)).every((b) => b === 0));
  t.true((await again.read(240 * owlVolumeBlockBytes, owlVolumeBlockBytes)).equals(Buffer.alloc(owlVolumeBlockBytes, 4)), 'the last overwrite wins');
});
