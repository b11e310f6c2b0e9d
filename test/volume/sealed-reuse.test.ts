/**
 * Sealed shares are sealed into memory from the shared pool and the pool takes it back once a
 * write's shares are on every strip — not before (a strip write still reading them would send
 * another write's shares), and never after a strip write failed or was given up on (it may still
 * be reading them).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { owlVolume, owlVolumeBlockBytes } from '../helpers/owl-volume.ts';
import { drainSharedBuffers, spyOnSharedBuffers } from '../helpers/shared-buffers-spy.ts';

const volumeId = '0c7a2e51-94b3-4f0e-8a6d-3b5c1e9f7a20';

test.serial('sealed shares reuse pooled memory once they are on every strip, and every write reads back after a reopen', async (t) => {
  drainSharedBuffers(t);
  const spy = spyOnSharedBuffers(t);
  const { volume, reopen } = await owlVolume(t, volumeId);
  const writes = Array.from({ length: 24 }, (_, i) => ({ offset: i * 8 * owlVolumeBlockBytes, data: randomBytes(4 * owlVolumeBlockBytes) }));
  // A write is acknowledged at its journal record, before its shares are out; waiting for them to
  // reach the strips after each write makes the count independent of timing: each write's shares
  // are back in the pool before the next write takes memory, so the same buffer comes round again.
  for (const w of writes) {
    await volume.write(w.offset, w.data);
    await volume.settleAcknowledged();
  }
  await volume.flush();
  t.true(spy.taken.length >= writes.length, 'the seals drew from the pool');
  const distinct = new Set(spy.taken).size;
  t.log(`${distinct} distinct buffers for ${spy.taken.length} takes`);
  // Without reuse every write's shares would be a buffer of their own.
  t.true(distinct <= 2, `the writes reused their memory (${distinct} distinct buffers for ${spy.taken.length} takes)`);
  await volume.close();
  const again = await reopen();
  t.teardown(() => again.close());
  for (const w of writes) t.true((await again.read(w.offset, w.data.length)).equals(w.data), `write at ${w.offset} reads back from the strips`);
});

test.serial('a write with a failed strip write keeps its shares out of the pool; later writes still read back', async (t) => {
  drainSharedBuffers(t);
  const spy = spyOnSharedBuffers(t);
  const { volume, gated, reopen } = await owlVolume(t, volumeId);
  const first = randomBytes(4 * owlVolumeBlockBytes);
  gated[2]!.failing = true;
  const before = spy.taken.length;
  await volume.write(0, first);
  const takenByWrite = spy.taken.slice(before);
  const kept = takenByWrite.filter((sab) => !spy.given.includes(sab));
  t.is(kept.length, 1, 'exactly one buffer of that write (its shares) was not given back');
  // Degraded, the volume goes on writing to the two strips left.
  const later = Array.from({ length: 8 }, (_, i) => ({ offset: (i + 1) * 8 * owlVolumeBlockBytes, data: randomBytes(4 * owlVolumeBlockBytes) }));
  for (const w of later) await volume.write(w.offset, w.data);
  await volume.flush();
  t.false(spy.taken.slice(before + takenByWrite.length).includes(kept[0]!), 'the failed write\'s shares were never handed out again');
  await volume.close();
  gated[2]!.failing = false;
  const again = await reopen();
  t.teardown(() => again.close());
  t.true((await again.read(0, first.length)).equals(first), 'the degraded write reads back');
  for (const w of later) t.true((await again.read(w.offset, w.data.length)).equals(w.data), `write at ${w.offset} reads back`);
});
