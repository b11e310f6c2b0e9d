/**
 * Review of the write acknowledgement at the journal record (commit 126b4ca). A write is
 * acknowledged once its record is in the OWL file, which is meant to make it survive a crash of
 * this process. Journal groups are written concurrently, so a later group's writev can return
 * while an earlier group's is still under way; replay follows the chain of sequence numbers and
 * stops at the first missing record. These tests hold the earlier group's writev back to see what
 * an acknowledgement given meanwhile is worth.
 *
 * Every test patches FileHandle.prototype (shared by every handle of this worker): serial only.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { ErrorCode, type StripvaultError } from '../../appliance/errors.ts';
import { owlVolume, owlVolumeBlockBytes } from '../helpers/owl-volume.ts';

const volumeId = '7a1d7c2e-0000-4000-8000-00000000ac4f';
const blockBytes = owlVolumeBlockBytes;
// Every journal writev on the thread pool, where these tests can hold one back (a small run is
// otherwise written from the event loop, and cannot be overtaken).
const fixture = (t: Parameters<typeof owlVolume>[0]) => owlVolume(t, volumeId, { loopWriteBytesMax: 0 });

type Proto = { writev: (...args: unknown[]) => Promise<{ bytesWritten: number }>; datasync: () => Promise<void> };

async function fileHandleProto(dir: string): Promise<Proto> {
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as Proto;
  await probe.close();
  return proto;
}

/**
 * Holds the first writev issued after installation (the next journal group) until `release` (or
 * fails it with `failHeld`); later writevs pass. `laterWritten` settles when the second one returns.
 */
async function holdFirstJournalWritev(t: { teardown: (f: () => void) => void }, dir: string) {
  const proto = await fileHandleProto(dir);
  const real = proto.writev;
  let calls = 0;
  let open!: (fail: Error | null) => void;
  const gate = new Promise<Error | null>((r) => (open = r));
  let markHeld!: () => void;
  const held = new Promise<void>((r) => (markHeld = r));
  let markLater!: () => void;
  const laterWritten = new Promise<void>((r) => (markLater = r));
  proto.writev = async function writev(this: unknown, ...args: unknown[]) {
    const k = calls++;
    if (k === 0) {
      markHeld();
      const failure = await gate;
      if (failure !== null) throw failure;
      return real.apply(this, args);
    }
    const r = await real.apply(this, args);
    if (k === 1) markLater();
    return r;
  };
  const restore = (): void => {
    proto.writev = real;
  };
  t.teardown(() => {
    restore();
    open(null);
  });
  return { held, laterWritten, release: () => open(null), failHeld: (e: Error) => open(e), restore };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Flushes an older block B, then holds write A's journal writev and lets write B (next turn, so its
 * own group) overtake it: B's writev returns first.
 */
async function overtakenJournalWrite(t: Parameters<typeof fixture>[0]) {
  const { volume, reopen, dir } = await fixture(t);
  await volume.write(65536, randomBytes(blockBytes));
  await volume.flush();
  const gate = await holdFirstJournalWritev(t, dir);
  // Write A: its journal group's writev is under way (held: a large record, a busy thread pool).
  const a = volume.write(0, randomBytes(blockBytes));
  a.catch(() => undefined);
  await gate.held;
  const dataB = randomBytes(blockBytes);
  const state = { bAcked: false };
  const b = volume.write(65536, dataB).then(() => {
    state.bAcked = true;
  });
  b.catch(() => undefined);
  await gate.laterWritten;
  await turn();
  return { volume, reopen, gate, a, b, dataB, state };
}

test.serial('a write acknowledged while an earlier journal group is still being written survives a crash of the process', async (t) => {
  const { volume, reopen, gate, a, b, dataB, state } = await overtakenJournalWrite(t);

  // The appliance is killed here (SIGKILL): the journal file keeps what its writevs put in the page
  // cache; A's record never got there. A restart replays the journal.
  const again = await reopen();
  const got = await again.read(65536, blockBytes);
  await again.close();
  t.true(!state.bAcked || got.equals(dataB), 'write B was acknowledged, so a crash of the process must not lose it (it reads back as the older block)');

  gate.restore();
  gate.release();
  await Promise.allSettled([a, b]);
  await volume.close().catch(() => undefined);
});

test.serial('a write acknowledged while an earlier journal group fails is replayed by the reopen its failure asks for', async (t) => {
  const { volume, reopen, gate, a, b, dataB, state } = await overtakenJournalWrite(t);
  // A's journal write fails (a full disk on the ring's first lap, an I/O error).
  gate.failHeld(Object.assign(new Error('ENOSPC: injected journal write failure'), { code: 'ENOSPC' }));
  await t.throwsAsync(a, undefined, 'write A was never acknowledged: it fails');
  await Promise.allSettled([b]);
  if (state.bAcked) {
    // The volume failed closed: "reopen the volume to replay it".
    const err = await t.throwsAsync(volume.flush());
    t.is((err as StripvaultError).code, ErrorCode.VolumeUnavailable);
  }
  gate.restore();
  await volume.close().catch(() => undefined);

  const again = await reopen();
  const got = await again.read(65536, blockBytes);
  await again.close();
  t.true(!state.bAcked || got.equals(dataB), 'write B was acknowledged and the volume failed closed for a replay to finish it; after the reopen it reads back as the older block');
});

test.serial('a volume failed closed by a lost acknowledged write does not report itself healthy', async (t) => {
  const { volume, dir } = await fixture(t);
  await volume.write(0, randomBytes(blockBytes));
  await volume.flush();
  const proto = await fileHandleProto(dir);
  const real = proto.datasync;
  proto.datasync = function failOnce() {
    proto.datasync = real;
    return Promise.reject(Object.assign(new Error('EIO: injected journal sync failure'), { code: 'EIO' }));
  };
  t.teardown(() => void (proto.datasync = real));
  await volume.write(0, randomBytes(blockBytes));
  const read = await t.throwsAsync(volume.read(0, blockBytes));
  t.is((read as StripvaultError).code, ErrorCode.VolumeUnavailable, 'precondition: every request is refused');
  const other = await t.throwsAsync(volume.read(524288, blockBytes));
  t.is((other as StripvaultError).code, ErrorCode.VolumeUnavailable, 'precondition: even blocks never written');
  // health() is what the appliance, the admin UI and the CLI show and record in the store.
  t.not(volume.health().state, 'healthy', 'a volume refusing every request until it is reopened is not healthy');
  await volume.close().catch(() => undefined);
});
