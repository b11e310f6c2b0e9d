import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { writevSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import {
  decodeOwlRecordHeader,
  decodeOwlSuperblock,
  encodeOwlRecordHeader,
  encodeOwlSuperblock,
  owlRecordBytes,
  owlRecordHeaderBytes,
  owlRingOffset,
} from '../../appliance/volume/owl-format.ts';
import { Owl, type OwlAppend } from '../../appliance/volume/owl.ts';
import { Volume, stripBytesForVolume, uuidToBytes, type OwlRecoveryReport } from '../../appliance/volume/volume.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { testWrapper, withTempDir } from '../helpers/volumes.ts';

const vid = randomBytes(16);

function record(i: number, slotBytes = 512, targets = [0, 1, 2], count = 1): OwlAppend {
  return {
    first: i,
    count,
    epoch: 1,
    generation: 100 + i,
    targets,
    slotBytes,
    shares: targets.map((t) => Buffer.alloc(count * slotBytes, (i * 7 + t) & 0xff)),
  };
}

test('superblock and record header round-trip; damaged bytes are not mistaken for either', (t) => {
  const sb = { volumeId: vid, ringBytes: 1 << 20, counter: 7, retired: 41, tail: 4096 };
  const enc = encodeOwlSuperblock(sb);
  t.deepEqual(decodeOwlSuperblock(enc), sb);
  for (const at of [0, 20, 50, 70]) {
    const bad = Buffer.from(enc);
    bad[at]! ^= 1;
    t.is(decodeOwlSuperblock(bad), null, `flip at ${at}`);
  }
  t.is(decodeOwlSuperblock(Buffer.alloc(4096)), null);
  const h = { seq: 9, volumeId: vid, first: 12, count: 3, epoch: 2, generation: 77, targets: [0, 2, 5], slotBytes: 100, payloadBytes: 900 };
  const rh = encodeOwlRecordHeader(h);
  t.deepEqual(decodeOwlRecordHeader(rh), h);
  const flipped = Buffer.from(rh);
  flipped[40]! ^= 1;
  t.is(decodeOwlRecordHeader(flipped), null);
  t.is(decodeOwlRecordHeader(rh.subarray(0, 100)), null);
  // An intact checksum over inconsistent fields is a writer's bug: refused loudly, never replayed.
  t.throws(() => decodeOwlRecordHeader(encodeOwlRecordHeader({ ...h, payloadBytes: 901 })), { code: ErrorCode.OwlCorrupt } as never);
});

test('record headers are byte for byte the version-1 layout, large fields included, whatever the buffer pool held', (t) => {
  // The layout as first written (BigInt fields, a zeroed buffer of its own), kept here as the reference.
  const reference = (h: Parameters<typeof encodeOwlRecordHeader>[0]): Buffer => {
    const buf = Buffer.alloc(owlRecordHeaderBytes);
    Buffer.from('SVOWLRC\0', 'latin1').copy(buf, 0);
    buf.writeBigUInt64BE(BigInt(h.seq), 8);
    h.volumeId.copy(buf, 16);
    buf.writeBigUInt64BE(BigInt(h.first), 32);
    buf.writeUInt32BE(h.count, 40);
    buf.writeUInt32BE(h.epoch, 44);
    buf.writeBigUInt64BE(BigInt(h.generation), 48);
    buf.writeUInt32BE(h.targets.reduce((acc, x) => (acc | (1 << x)) >>> 0, 0), 56);
    buf.writeUInt32BE(h.slotBytes, 60);
    buf.writeUInt32BE(h.payloadBytes, 64);
    createHash('sha256').update(buf.subarray(0, 96)).digest().copy(buf, 96);
    return buf;
  };
  const big = Number.MAX_SAFE_INTEGER;
  const cases = [
    { seq: 1, first: 0, generation: 1, targets: [0, 1, 2] },
    { seq: 2 ** 32, first: 2 ** 32 - 1, generation: 2 ** 32 + 5, targets: [31] },
    { seq: big, first: big - 7, generation: big, targets: [0, 31] },
  ];
  for (const c of cases) {
    // Junk in Node's shared pool first: the encoder must write or clear every byte it returns.
    for (let i = 0; i < 40; i++) Buffer.allocUnsafe(128).fill(0xa5);
    const h = { ...c, volumeId: vid, count: 2, epoch: 7, slotBytes: 64, payloadBytes: c.targets.length * 2 * 64 };
    const got = encodeOwlRecordHeader(h);
    t.true(got.equals(reference(h)), `seq ${c.seq}`);
    t.deepEqual(decodeOwlRecordHeader(got), h);
  }
  for (const bad of [-1, 0.5, 2 ** 53]) {
    t.throws(() => encodeOwlRecordHeader({ seq: bad, volumeId: vid, first: 0, count: 1, epoch: 1, generation: 1, targets: [0], slotBytes: 64, payloadBytes: 64 }), undefined, `seq ${bad}`);
  }
});

test('appended records survive a crash (no retire) in order; retired ones do not come back', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'v.owl');
    const owl = await Owl.create(path, vid, 1 << 20);
    const entries = [];
    for (let i = 0; i < 5; i++) entries.push(await owl.append(record(i)));
    t.deepEqual(
      entries.map((e) => e.seq),
      [1, 2, 3, 4, 5],
    );
    // Crash: nothing retired. A second handle reads what the file holds.
    const seen = await Owl.open(path, vid);
    t.deepEqual(
      seen.outstanding.map((r) => r.first),
      [0, 1, 2, 3, 4],
    );
    const payload = await seen.readPayload(seen.outstanding[3]!);
    t.true(payload.subarray(512, 1024).equals(Buffer.alloc(512, (3 * 7 + 1) & 0xff)));
    await seen.close();

    for (const e of entries.slice(0, 3)) owl.complete(e);
    await owl.retire(owl.completed());
    const after = await Owl.open(path, vid);
    t.deepEqual(
      after.outstanding.map((r) => r.first),
      [3, 4],
    );
    await after.close();
    await owl.close();
    await t.throwsAsync(Owl.open(path, randomBytes(16)), { code: ErrorCode.OwlCorrupt } as never);
  });
});

test('the ring wraps many times; at every point a reopen sees exactly what is outstanding', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'v.owl');
    // Room for a few records of varying size, so records wrap at the ring's end with padding.
    const owl = await Owl.create(path, vid, 64 * 1024);
    const live: Array<{ first: number; entry: Awaited<ReturnType<Owl['append']>> }> = [];
    let next = 0;
    for (let round = 0; round < 60; round++) {
      const count = 1 + (round % 5);
      const entry = await owl.append(record(next, 1024, [0, 1, 2], count));
      live.push({ first: next, entry });
      next++;
      // Retire the oldest half now and then, as strip flushes would.
      if (round % 3 === 2) {
        const n = Math.ceil(live.length / 2);
        for (const l of live.slice(0, n)) owl.complete(l.entry);
        await owl.retire(owl.completed());
        live.splice(0, n);
      }
      const seen = await Owl.open(path, vid);
      t.deepEqual(
        seen.outstanding.map((r) => r.first),
        live.map((l) => l.first),
        `round ${round}`,
      );
      await seen.close();
    }
    await owl.close();
  });
});

test('a full ring makes appends wait until the strips are flushed and entries retired', async (t) => {
  await withTempDir(async (dir) => {
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 32 * 1024);
    let roomCalls = 0;
    owl.onFull(async () => {
      roomCalls++;
      await owl.retire(owl.completed());
    });
    const recBytes = owlRecordBytes(3 * 2048);
    const fit = Math.floor(owl.ringBytes / recBytes);
    const entries = [];
    for (let i = 0; i < fit; i++) entries.push(await owl.append(record(i, 2048)));
    let admitted = false;
    const waiting = owl.append(record(99, 2048)).then((e) => ((admitted = true), e));
    await new Promise((r) => setTimeout(r, 50));
    t.false(admitted, 'no room: the append waits');
    owl.complete(entries[0]!);
    const e = await waiting;
    t.true(admitted);
    t.true(roomCalls >= 1);
    t.true(owl.usage().usedBytes <= owl.ringBytes);
    owl.complete(e);
    await owl.close();
  });
});

test('recovery never reuses a sequence number, so a record of an unfinished group is never replayed later', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'v.owl');
    const owl = await Owl.create(path, vid, 1 << 20);
    for (let i = 0; i < 3; i++) await owl.append(record(i));
    await owl.close();
    // Tear the second record's header: replay must stop after the first.
    const fh = await open(path, 'r+');
    const second = owlRingOffset + owlRecordBytes(3 * 512);
    await fh.write(Buffer.alloc(8), 0, 8, second + 8);
    await fh.close();
    const r1 = await Owl.open(path, vid);
    t.deepEqual(
      r1.outstanding.map((r) => r.seq),
      [1],
    );
    await r1.retireOutstanding();
    const e = await r1.append(record(50));
    t.true(e.seq > 1 + r1.ringBytes / 512, `seq ${e.seq} skips past every record that may linger`);
    await r1.close();
    const r2 = await Owl.open(path, vid);
    t.deepEqual(
      r2.outstanding.map((r) => r.first),
      [50],
      'the third record (after the gap) is never replayed',
    );
    await r2.close();
  });
});

test('a journal that cannot be written from the event loop fails the write and every later one (fail closed)', async (t) => {
  await withTempDir(async (dir) => {
    let failing = false;
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 1 << 20, {
      writevSync: (fd, buffers, pos) => {
        if (failing) throw Object.assign(new Error('EIO: i/o error, writev'), { code: 'EIO' });
        return writevSync(fd, buffers, pos);
      },
    });
    await owl.append(record(0));
    failing = true;
    await t.throwsAsync(owl.append(record(1)), { code: ErrorCode.DeviceIo } as never);
    failing = false;
    // The device is fine again, but a later record could not be found behind the hole: refused.
    await t.throwsAsync(owl.append(record(2)), { code: ErrorCode.DeviceIo } as never);
    await owl.close();
    const seen = await Owl.open(join(dir, 'v.owl'), vid);
    t.deepEqual(seen.outstanding.map((r) => r.first), [0], 'only the record before the failure is in the journal');
    await seen.close();
  });
});

test.serial('a journal that cannot be written fails the write and every later one (fail closed)', async (t) => {
  await withTempDir(async (dir) => {
    // Every writev on the thread pool, where the prototype patch below reaches it.
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 1 << 20, { loopWriteBytesMax: 0 });
    await owl.append(record(0));
    // Every FileHandle shares one prototype: make journal writes fail with EIO for a moment.
    const probe = await open(join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { writev: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const real = proto.writev;
    proto.writev = async () => {
      throw Object.assign(new Error('EIO: i/o error, writev'), { code: 'EIO' });
    };
    try {
      await t.throwsAsync(owl.append(record(1)), { code: ErrorCode.DeviceIo } as never);
    } finally {
      proto.writev = real;
    }
    // The device is fine again, but a later record could not be found behind the hole: refused.
    await t.throwsAsync(owl.append(record(2)), { code: ErrorCode.DeviceIo } as never);
    await owl.close();
    await t.throwsAsync(owl.append(record(3)));
  });
});

interface TornFixture {
  devices: MemoryDevice[];
  wrapper: ReturnType<typeof testWrapper>;
  id: string;
  owlPath: string;
}

async function volumeWithOwl(dir: string, m: number, n: number, sizeBytes: number): Promise<{ volume: Volume; fx: TornFixture }> {
  const stripBytes = stripBytesForVolume(sizeBytes, 4096, m);
  const devices = Array.from({ length: n }, (_, i) => new MemoryDevice(stripBytes, { id: `mem${i}` }));
  const wrapper = testWrapper();
  const id = '7a1d7c2e-0000-4000-8000-00000000f00d';
  const owlPath = join(dir, 'v.owl');
  const owl = await Owl.create(owlPath, Buffer.from(id.replace(/-/g, ''), 'hex'), 4 << 20);
  const volume = await Volume.create({
    id,
    name: 'torn',
    m,
    n,
    sizeBytes,
    blockBytes: 4096,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    owl,
  });
  return { volume, fx: { devices, wrapper, id, owlPath } };
}

async function reopen(fx: TornFixture, report?: (r: OwlRecoveryReport) => void): Promise<Volume> {
  const owl = await Owl.open(fx.owlPath, Buffer.from(fx.id.replace(/-/g, ''), 'hex'));
  return Volume.open({
    locations: fx.devices.map((device) => ({ device, base: 0 })),
    wrappers: [fx.wrapper],
    expectId: fx.id,
    owl,
    ...(report ? { hooks: { onOwlRecovery: report } } : {}),
  });
}

test('3-of-4 torn 2/2 after a crash: the OWL rolls the write forward; without it the block is unreadable', async (t) => {
  await withTempDir(async (dir) => {
    const { volume, fx } = await volumeWithOwl(dir, 3, 4, 1 << 20);
    const oldData = randomBytes(8192);
    const newData = randomBytes(8192);
    await volume.write(40960, oldData);
    await volume.flush();
    const before = await Promise.all([0, 1].map((i) => volume.stripAt(i)!.readSlots(10, 2)));
    await volume.write(40960, newData);
    // Acknowledged at its journal record; let its shares reach the strips before undoing two of them.
    await volume.settleAcknowledged();
    // The crash: strips 0 and 1 never got the new shares (their slots still hold the old ones).
    for (const i of [0, 1]) await volume.stripAt(i)!.writeSlots(10, before[i]!);

    const withoutOwl = await Volume.open({ locations: fx.devices.map((device) => ({ device, base: 0 })), wrappers: [fx.wrapper], expectId: fx.id });
    await t.throwsAsync(withoutOwl.read(40960, 8192), { code: ErrorCode.NotEnoughShares } as never, 'the torn block is an error without a journal');

    let report: OwlRecoveryReport | undefined;
    const recovered = await reopen(fx, (r) => void (report = r));
    t.true((await recovered.read(40960, 8192)).equals(newData));
    t.is(report?.replayed, 1, 'the one write since the last retirement was replayed');
    t.is(report?.stoppedAt, undefined);
    const scrub = await recovered.scrub();
    t.is(scrub.blocksRepaired, 0, 'every share of every block is whole after replay');
    await recovered.close();
    // Retired: the next open replays nothing, and the data is the same.
    let again: OwlRecoveryReport | undefined;
    const third = await reopen(fx, (r) => void (again = r));
    t.is(again, undefined);
    t.true((await third.read(40960, 8192)).equals(newData));
    // Generations moved on: a new write is not rejected as older than the replayed one.
    const newest = randomBytes(4096);
    await third.write(40960, newest);
    t.true((await third.read(40960, 4096)).equals(newest));
    await third.close();
  });
});

test('a record whose shares do not authenticate ends the replay there; what was whole stays whole', async (t) => {
  await withTempDir(async (dir) => {
    const { volume, fx } = await volumeWithOwl(dir, 2, 3, 1 << 20);
    const a = randomBytes(4096);
    const b = randomBytes(4096);
    await volume.write(0, a);
    await volume.write(4096, b);
    // Acknowledged at the journal record; the shares go out after the journal's sync. The reopen
    // below replays only the first record, so b must already be on the strips.
    await volume.settleAcknowledged();
    // Damage the second record's payload in the journal (as a torn journal write would).
    const bytes = await readFile(fx.owlPath);
    const firstRec = owlRecordBytes(3 * volume.slotBytes);
    bytes[owlRingOffset + firstRec + owlRecordHeaderBytes + 100]! ^= 0xff;
    await writeFile(fx.owlPath, bytes);
    let report: OwlRecoveryReport | undefined;
    const recovered = await reopen(fx, (r) => void (report = r));
    t.is(report?.replayed, 1);
    t.is(report?.stoppedAt?.seq, 2);
    t.regex(report?.stoppedAt?.reason ?? '', /auth/);
    // Both writes had fully reached the strips, so both blocks read back.
    t.true((await recovered.read(0, 4096)).equals(a));
    t.true((await recovered.read(4096, 4096)).equals(b));
    await recovered.close();
  });
});

test('flush retires; a clean close leaves nothing outstanding; the journal never holds plaintext', async (t) => {
  await withTempDir(async (dir) => {
    const { volume, fx } = await volumeWithOwl(dir, 2, 3, 1 << 20);
    const canary = Buffer.alloc(4096, 0);
    Buffer.from('OWL-CANARY-PLAINTEXT-').copy(canary);
    for (let i = 0; i < 32; i++) await volume.write(i * 4096, canary);
    t.true(volume.owlUsage()!.entries > 0);
    await volume.flush();
    t.is(volume.owlUsage()!.entries, 0, 'a flush retires every completed write');
    await volume.write(0, canary);
    await volume.close();
    const journal = await readFile(fx.owlPath);
    t.is(journal.indexOf('OWL-CANARY-PLAINTEXT-'), -1);
    t.is(journal.indexOf(Buffer.from(fx.wrapper.key)), -1);
    let report: OwlRecoveryReport | undefined;
    const again = await reopen(fx, (r) => void (report = r));
    t.is(report, undefined, 'close retired everything');
    await again.close();
  });
});

test('writes wait for room when the journal is full and go on once retired; data is intact', async (t) => {
  await withTempDir(async (dir) => {
    const stripBytes = stripBytesForVolume(4 << 20, 4096, 2);
    const devices = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytes, { id: `m${i}` }));
    const id = '7a1d7c2e-0000-4000-8000-00000000beef';
    // The smallest ring the format allows for this shape: fills after a few large writes.
    const owl = await Owl.create(join(dir, 'v.owl'), Buffer.from(id.replace(/-/g, ''), 'hex'), 2 * owlRecordBytes(24 * 1024 * 1024));
    const volume = await Volume.create({
      id,
      name: 'full',
      m: 2,
      n: 3,
      sizeBytes: 4 << 20,
      blockBytes: 4096,
      locations: devices.map((device) => ({ device, base: 0 })),
      wrappers: [testWrapper()],
      regionsZeroed: true,
      owl,
    });
    const data = randomBytes(4 << 20);
    for (let round = 0; round < 12; round++) await Promise.all([0, 1, 2, 3].map((q) => volume.write(q << 20, data.subarray(q << 20, (q + 1) << 20))));
    t.true((await volume.read(0, 4 << 20)).equals(data));
    t.true(volume.owlUsage()!.usedBytes <= owl.ringBytes);
    await volume.close();
    t.true(isStripvaultError(await volume.write(0, data.subarray(0, 4096)).catch((e: unknown) => e), ErrorCode.VolumeClosed));
  });
});

test('appendAll journals a list in order, acknowledges each record, waits for room part-way, and survives a crash', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'v.owl');
    const owl = await Owl.create(path, vid, 32 * 1024);
    owl.onFull(async () => {
      await owl.retire(owl.completed());
    });
    const recBytes = owlRecordBytes(3 * 2048);
    const fit = Math.floor(owl.ringBytes / recBytes);
    // Fill all but one record's room, so the list below has to wait for room after its first record.
    const filler = [];
    for (let i = 0; i < fit - 1; i++) filler.push(await owl.append(record(i, 2048)));
    const written: number[] = [];
    let done = false;
    // Two records: as much as a list may hold of this ring (half of it).
    const list = [100, 101].map((i) => record(i, 2048));
    let firstWritten!: () => void;
    const firstIn = new Promise<void>((resolve) => (firstWritten = resolve));
    const all = owl
      .appendAll(
        list,
        list.map((r) => () => {
          written.push(r.first);
          firstWritten();
        }),
      )
      .then((e) => ((done = true), e));
    // However long the first record's write takes (a pool write on a loaded disk), then a while
    // longer in which the second would show up if it were written without room.
    await firstIn;
    await new Promise((r) => setTimeout(r, 50));
    t.deepEqual(written, [100], 'the record that fits is written (and acknowledged) at once');
    t.false(done, 'the list settles only when every record is durable');
    for (const e of filler) owl.complete(e);
    const entries = await all;
    t.deepEqual(written, [100, 101]);
    t.deepEqual(entries.map((e) => e.seq), [fit, fit + 1], 'consecutive sequence numbers, in list order');
    t.true(entries.every((e) => e.state === 'journaled'));
    await owl.close();
    const seen = await Owl.open(path, vid);
    t.deepEqual(seen.outstanding.map((r) => r.first), [100, 101], 'a crash now replays the whole list');
    t.deepEqual(await seen.appendAll([]), [], 'an empty list is nothing to do');
    await seen.close();
    await t.throwsAsync(owl.appendAll([record(7)]), { code: ErrorCode.VolumeClosed } as never);
  });
});

test('a list that could need more than the whole ring is refused at once, not left waiting for room only it could free', async (t) => {
  await withTempDir(async (dir) => {
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 32 * 1024);
    // Three 6.5 KiB records are more than half of a 32 KiB ring.
    await t.throwsAsync(owl.appendAll([1, 2, 3].map((i) => record(i, 2048))), { message: /larger than half the ring/ });
    t.is(owl.usage().entries, 0, 'nothing of it was admitted');
    t.is((await owl.append(record(4, 2048))).seq, 1, 'the list is still usable');
    await owl.close();
  });
});

test('many concurrent writes in one turn on a volume with a small journal ring all complete: a group never outgrows the ring', async (t) => {
  await withTempDir(async (dir) => {
    const sizeBytes = 1 << 20;
    const id = randomUUID();
    const devices = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytesForVolume(sizeBytes, 4096, 2), { id: `mem${i}` }));
    // Room for 8 one-block records; the 32 writes below arrive in one turn.
    const owl = await Owl.create(join(dir, 'v.owl'), uuidToBytes(id), 8 * owlRecordBytes(3 * slotBytesFor(4096, 2)));
    const volume = await Volume.create({ id, name: 'small-ring', m: 2, n: 3, sizeBytes, blockBytes: 4096, locations: devices.map((device) => ({ device, base: 0 })), wrappers: [testWrapper()], regionsZeroed: true, owl });
    const data = Array.from({ length: 32 }, () => randomBytes(4096));
    const all = Promise.all(data.map((d, i) => volume.write(i * 4096, d)));
    // A group larger than the ring would wait for room only it can free: a hang, reported as such.
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('writes still pending after 60 s: a group is waiting for ring room')), 60_000);
    });
    try {
      await Promise.race([all, hung]);
    } finally {
      clearTimeout(timer);
    }
    for (let i = 0; i < data.length; i++) t.true((await volume.read(i * 4096, 4096)).equals(data[i]!), `block ${i}`);
    await volume.flush();
    await volume.close();
  });
});

test.serial('after a journal write that stalled the event loop, writes go to the thread pool for a while', async (t) => {
  await withTempDir(async (dir) => {
    let loopWrites = 0;
    let stall = true;
    const owl = await Owl.create(join(dir, 'v.owl'), vid, 1 << 20, {
      writevSync: (fd, buffers, pos) => {
        loopWrites++;
        // A throttled buffered write: the loop is held for 15 ms.
        if (stall) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 15);
        return writevSync(fd, buffers, pos);
      },
    });
    const probe = await open(join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { writev: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const real = proto.writev;
    let poolWrites = 0;
    proto.writev = function counted(this: unknown, ...args: unknown[]) {
      poolWrites++;
      return real.apply(this, args);
    };
    try {
      // The second record is appended as soon as the first is in the file (not after its sync, which
      // a loaded disk may take longer than the pause to finish): well inside the pause.
      let second: Promise<unknown> | undefined;
      await owl.append(record(0), {
        written: () => {
          stall = false;
          second = owl.append(record(1));
        },
      });
      await second;
      t.is(loopWrites, 1, 'the first record was written from the loop, the second not right after it stalled');
      t.is(poolWrites, 1, 'the thread pool took the second');
    } finally {
      proto.writev = real;
    }
    await owl.close();
    const seen = await Owl.open(join(dir, 'v.owl'), vid);
    t.deepEqual(seen.outstanding.map((r) => r.first), [0, 1]);
    await seen.close();
  });
});
