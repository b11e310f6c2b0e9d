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
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode, type StripvaultError } from '../../appliance/errors.ts';
import { Owl } from '../../appliance/volume/owl.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';

const volumeId = '7a1d7c2e-0000-4000-8000-00000000ac4f';
const sizeBytes = 1 << 20;
const blockBytes = 4096;

type Teardown = { teardown: (f: () => void | Promise<void>) => void };

async function fixture(t: Teardown) {
  const dir = await mkdtemp(join(tmpdir(), 'sv-owl-ack-review-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const stripBytes = stripBytesForVolume(sizeBytes, blockBytes, 2);
  const memory = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytes, { id: `rev${i}` }));
  const wrapper = testWrapper();
  const owlPath = join(dir, 'v.owl');
  const idBytes = Buffer.from(volumeId.replace(/-/g, ''), 'hex');
  const owl = await Owl.create(owlPath, idBytes, 4 << 20);
  const volume = await Volume.create({
    id: volumeId,
    name: 'ack-review',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: memory.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    owl,
  });
  // What a restart sees: the strips as they are and the journal file as the page cache holds it.
  const reopen = async (): Promise<Volume> =>
    Volume.open({ locations: memory.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: volumeId, owl: await Owl.open(owlPath, idBytes) });
  return { volume, reopen, dir };
}

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
async function holdFirstJournalWritev(t: Teardown, dir: string) {
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

test.serial('a write acknowledged while an earlier journal group is still being written survives a crash of the process', async (t) => {
  const { volume, reopen, dir } = await fixture(t);
  const before = randomBytes(blockBytes);
  await volume.write(65536, before);
  await volume.flush();

  const gate = await holdFirstJournalWritev(t, dir);
  // Write A: its journal group's writev is under way (held: a large record, a busy thread pool).
  const a = volume.write(0, randomBytes(blockBytes));
  a.catch(() => undefined);
  await gate.held;
  // Write B, next turn, so its own group: its writev returns first.
  const dataB = randomBytes(blockBytes);
  let bAcked = false;
  const b = volume.write(65536, dataB).then(() => {
    bAcked = true;
  });
  b.catch(() => undefined);
  await gate.laterWritten;
  await turn();

  // The appliance is killed here (SIGKILL): the journal file keeps what its writevs put in the page
  // cache; A's record never got there. A restart replays the journal.
  const again = await reopen();
  const got = await again.read(65536, blockBytes);
  await again.close();
  t.true(!bAcked || got.equals(dataB), 'write B was acknowledged, so a crash of the process must not lose it (it reads back as the older block)');

  gate.restore();
  gate.release();
  await Promise.allSettled([a, b]);
  await volume.close().catch(() => undefined);
});

test.serial('a write acknowledged while an earlier journal group fails is replayed by the reopen its failure asks for', async (t) => {
  const { volume, reopen, dir } = await fixture(t);
  const before = randomBytes(blockBytes);
  await volume.write(65536, before);
  await volume.flush();

  const gate = await holdFirstJournalWritev(t, dir);
  const a = volume.write(0, randomBytes(blockBytes));
  a.catch(() => undefined);
  await gate.held;
  const dataB = randomBytes(blockBytes);
  let bAcked = false;
  const b = volume.write(65536, dataB).then(() => {
    bAcked = true;
  });
  b.catch(() => undefined);
  await gate.laterWritten;
  await turn();
  // A's journal write fails (a full disk on the ring's first lap, an I/O error).
  gate.failHeld(Object.assign(new Error('ENOSPC: injected journal write failure'), { code: 'ENOSPC' }));
  await t.throwsAsync(a, undefined, 'write A was never acknowledged: it fails');
  await Promise.allSettled([b]);
  if (bAcked) {
    // The volume failed closed: "reopen the volume to replay it".
    const err = await t.throwsAsync(volume.flush());
    t.is((err as StripvaultError).code, ErrorCode.VolumeUnavailable);
  }
  gate.restore();
  await volume.close().catch(() => undefined);

  const again = await reopen();
  const got = await again.read(65536, blockBytes);
  await again.close();
  t.true(!bAcked || got.equals(dataB), 'write B was acknowledged and the volume failed closed for a replay to finish it; after the reopen it reads back as the older block');
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
