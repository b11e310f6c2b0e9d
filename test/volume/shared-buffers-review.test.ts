/**
 * Review of shared-buffer reuse on the write path (appliance/split/shared-buffers.ts): NBD WRITE
 * payloads of 64 KiB and more are received into pooled SharedArrayBuffers and given back once
 * answered; a turn's seal input is packed into one and given back when the seal job settles. A
 * buffer given back while anything can still read it is silent data corruption.
 *
 * The first tests are the review's findings and fail until the pool is fixed (see each test). The
 * serial ones are regression tests that pass today: a payload reused while the write it carried
 * is still on its way to the strips, and concurrent clients writing through a served volume.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { join } from 'node:path';
import test from 'ava';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { connectNbd, type NbdClient } from '../../appliance/nbd/client.ts';
import { SharedBuffers, sharedBuffers } from '../../appliance/split/shared-buffers.ts';
import { SplitPool } from '../../appliance/split/split-pool.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { Owl, owlRingBytesFor } from '../../appliance/volume/owl.ts';
import { volumeExport } from '../../appliance/volume/volume-export.ts';
import { Volume, stripBytesForVolume, uuidToBytes } from '../../appliance/volume/volume.ts';
import { eventually, serve, tempDir } from '../nbd/helpers.ts';
import { fileDevices, memoryVolume, testWrapper } from '../helpers/volumes.ts';
import { GatedDevice } from '../helpers/gated-device.ts';
import { drainSharedBuffers, poolHolds, spyOnSharedBuffers } from '../helpers/shared-buffers-spy.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const blockBytes = 4096;
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');


// ---------------------------------------------------------------- the pool itself (findings)

test('finding: a buffer given back twice is handed out to one taker only', (t) => {
  // Nothing stops a second give() today: the SharedArrayBuffer goes on the free list twice, and the
  // next two takes of its size class get the same memory — two writes then seal each other's blocks.
  const pool = new SharedBuffers();
  const a = pool.take(100 * KiB);
  pool.give(a);
  try {
    pool.give(a);
  } catch {
    // Refusing the second give is one correct answer; handing the memory out twice is not.
  }
  const x = pool.take(100 * KiB);
  const y = pool.take(100 * KiB);
  t.not(x.buffer, y.buffer, 'two buffers in use at once share their memory');
});

test('finding: a shared buffer the pool never handed out is refused', (t) => {
  // give() accepts any SharedArrayBuffer of a class size at offset 0 — a seal output
  // (batch.ts sealRuns), a copy made by inSharedMemory, a worker's read result — and the next take
  // hands that memory to a second owner while the first may still use it.
  const pool = new SharedBuffers();
  const foreign = Buffer.from(new SharedArrayBuffer(128 * KiB));
  t.throws(() => pool.give(foreign), { message: /not taken/ });
  t.not(pool.take(128 * KiB).buffer, foreign.buffer, 'memory another owner holds was handed out');
});

test.serial('finding: plaintext written to a volume does not stay in the shared pool once the volume is closed', async (t) => {
  // Volume.close() zeroes its block cache ("plaintext does not outlive the volume's keys"), but the
  // process-wide pool keeps up to 32 MiB of given-back seal inputs and NBD payloads — plaintext —
  // after the volume is closed (and after the appliance is sealed), until a later take overwrites it.
  const { volume } = await memoryVolume({ m: 2, n: 3, sizeBytes: 4 * MiB, blockBytes });
  drainSharedBuffers(t);
  // Not in shared memory: sealItems packs it into a pooled buffer of the 256 KiB class.
  const secret = randomBytes(256 * KiB);
  await volume.write(0, secret);
  await volume.close();
  const probe = secret.subarray(0, 64);
  t.true(sharedBuffers.keptBytes > 0, 'the seal input was given back to the pool');
  t.false(poolHolds(probe, 256 * KiB), 'a closed volume\'s plaintext is still in the shared pool');
});

// ---------------------------------------------------------------- regression: reuse while a write is in flight

test.serial('a payload given back at acknowledgement is reused while its write is still going to the strips, and both writes read back', async (t) => {
  drainSharedBuffers(t);
  const spy = spyOnSharedBuffers(t);
  const dir = await tempDir(t);
  const sizeBytes = 16 * MiB;
  const gated = Array.from({ length: 3 }, (_, i) => new GatedDevice(new MemoryDevice(stripBytesForVolume(sizeBytes, blockBytes, 2), { id: `mem${i}` })));
  const pool = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => pool.close());
  const id = '5b0e8c1a-2f4d-4e6b-9c3a-7d1e0f2a4b6c';
  const owl = await Owl.create(join(dir, 'v.owl'), uuidToBytes(id), owlRingBytesFor(slotBytesFor(blockBytes, 2), 3, 32 * MiB));
  const volume = await Volume.create({
    id,
    name: 'reuse',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: gated.map((device) => ({ device, base: 0 })),
    wrappers: [testWrapper()],
    regionsZeroed: true,
    runner: pool,
    owl,
    cacheBytes: 0,
  });
  t.teardown(() => volume.close().catch(() => undefined));
  const { address } = await serve(t, [volumeExport(volume, 'disk')]);
  const client = await connectNbd(address, 'disk');
  t.teardown(() => client.close());

  for (const g of gated) g.hold();
  const a = randomBytes(1 * MiB);
  const b = randomBytes(1 * MiB);
  const c = randomBytes(1 * MiB);
  // The pool also holds the sealed shares (2 MiB class here, held until they are on the strips):
  // the payloads are the 1 MiB buffers.
  const payloads = (): SharedArrayBuffer[] => spy.taken.filter((s) => s.byteLength === 1 * MiB);
  // Acknowledged at the journal record: the shares wait at the gate, the range stays locked.
  await client.write(0, a);
  await eventually(() => spy.given.includes(payloads()[0]!), 'the first payload given back');
  await client.write(4 * MiB, b);
  await eventually(() => spy.given.includes(payloads()[1]!), 'the second payload given back');
  await client.write(8 * MiB, c);
  t.is(payloads().length, 3, 'one pooled payload per write');
  t.is(payloads()[1], payloads()[0], 'the second payload was received into the first one\'s memory');
  t.is(payloads()[2], payloads()[0], 'and the third too');
  const shares = spy.taken.filter((s) => s.byteLength !== 1 * MiB);
  t.is(new Set(shares).size, 3, 'each write held its own sealed shares while they waited at the gate');
  for (const g of gated) g.openGate();
  await client.flush();
  t.is(sha256(await client.read(0, 1 * MiB)), sha256(a), 'the first write, sealed before its memory was reused');
  t.is(sha256(await client.read(4 * MiB, 1 * MiB)), sha256(b));
  t.is(sha256(await client.read(8 * MiB, 1 * MiB)), sha256(c));
});

// ---------------------------------------------------------------- stress: concurrent clients end to end

/** One operation of the workload, applied to the model when issued (ranges in flight never overlap). */
type Op = { kind: 'write'; offset: number; data: Buffer; fua: boolean } | { kind: 'zero' | 'trim'; offset: number; length: number; fua: boolean };

/** A round of non-overlapping operations over [from, to): chunks of 64 KiB to 1 MiB, some unaligned. */
function round(from: number, to: number): Op[] {
  const ops: Op[] = [];
  for (let at = from; at < to; ) {
    // Now and then an unaligned start or end: the read-modify-write path (modify) with a pooled payload.
    const skew = randomInt(8) === 0 ? randomInt(1, blockBytes) : 0;
    const offset = Math.min(to - 1, at + skew);
    let end = Math.min(to, offset + randomInt(64 * KiB, 1 * MiB + 1));
    // Mostly block-aligned ends: whole-block writes are sealed straight from the pooled payload.
    if (randomInt(4) !== 0 && end < to) end -= end % blockBytes;
    if (end <= offset) end = Math.min(to, offset + blockBytes);
    const length = end - offset;
    const fua = randomInt(4) === 0;
    const pick = randomInt(20);
    if (pick === 0) ops.push({ kind: 'zero', offset, length, fua });
    else if (pick === 1) ops.push({ kind: 'trim', offset, length, fua });
    else ops.push({ kind: 'write', offset, data: randomBytes(length), fua });
    at = offset + length;
  }
  return ops;
}

async function apply(client: NbdClient, op: Op): Promise<void> {
  if (op.kind === 'write') await client.write(op.offset, op.data, { fua: op.fua });
  else if (op.kind === 'zero') await client.writeZeroes(op.offset, op.length, { fua: op.fua });
  else await client.trim(op.offset, op.length, { fua: op.fua });
}

test.serial('stress: four clients writing distinct random 64 KiB–1 MiB chunks with FUA and flushes read back exactly, live and after a reopen', async (t) => {
  t.timeout(60_000);
  const spy = spyOnSharedBuffers(t);
  const dir = await tempDir(t);
  const clients = 4;
  const regionBytes = 8 * MiB;
  const sizeBytes = clients * regionBytes;
  const rounds = 12;
  const devices = await fileDevices(dir, 3, stripBytesForVolume(sizeBytes, blockBytes, 2));
  t.teardown(async () => {
    for (const d of devices) await d.close().catch(() => undefined);
  });
  // Crypto workers seal the pooled payloads in place; I/O workers write the shares to the strip files.
  const pool = new SplitPool(2);
  t.teardown(() => pool.close());
  const wrapper = testWrapper();
  const id = '3c9d2e7f-1a4b-4d8e-b6f0-5e2a9c7d1b3f';
  const slotBytes = slotBytesFor(blockBytes, 2);
  const owl = await Owl.create(join(dir, 'v.owl'), uuidToBytes(id), owlRingBytesFor(slotBytes, 3));
  const volume = await Volume.create({
    id,
    name: 'stress',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    runner: pool,
    owl,
  });
  const { address } = await serve(t, [volumeExport(volume, 'disk')]);
  const model = Buffer.alloc(sizeBytes);
  const conns = await Promise.all(Array.from({ length: clients }, () => connectNbd(address, 'disk')));
  t.teardown(async () => {
    for (const c of conns) await c.close().catch(() => undefined);
  });

  let written = 0;
  await Promise.all(
    conns.map(async (client, k) => {
      const from = k * regionBytes;
      for (let r = 0; r < rounds; r++) {
        const ops = round(from, from + regionBytes);
        for (const op of ops) {
          if (op.kind === 'write') {
            op.data.copy(model, op.offset);
            written += op.data.length;
          } else model.fill(0, op.offset, op.offset + op.length);
        }
        await Promise.all(ops.map((op) => apply(client, op)));
        if (r % 2 === k % 2) await client.flush();
      }
    }),
  );
  t.true(written >= clients * rounds * regionBytes * 0.8, 'the workload is mostly writes');
  t.log(`${written / MiB | 0} MiB written by ${clients} clients, ${spy.taken.length} shared buffers taken, ${new Set(spy.taken).size} distinct`);
  // Reuse really happened: some pooled memory carried more than one payload (or seal input).
  t.true(new Set(spy.taken).size < spy.taken.length, 'no shared buffer was reused: the test proves nothing');

  // Live: every client reads its region, another connection's cache and all.
  const live = await Promise.all(
    conns.map(async (client, k) => {
      const parts: Buffer[] = [];
      for (let at = k * regionBytes; at < (k + 1) * regionBytes; at += 1 * MiB) parts.push(await client.read(at, 1 * MiB));
      return Buffer.concat(parts);
    }),
  );
  live.forEach((region, k) => t.is(sha256(region), sha256(model.subarray(k * regionBytes, (k + 1) * regionBytes)), `region ${k} read back live`));

  // From the strips alone: closed, reopened without a cache.
  for (const c of conns) await c.close();
  await volume.close();
  const owl2 = await Owl.open(join(dir, 'v.owl'), uuidToBytes(id));
  const again = await Volume.open({ locations: devices.map((device) => ({ device, base: 0 })), wrappers: [wrapper], runner: pool, owl: owl2, cacheBytes: 0 });
  t.is(sha256(await again.read(0, sizeBytes)), sha256(model), 'the strips hold exactly what was written');
  await again.close();
});
