/**
 * Review of today's NBD payload change (session 4): ByteReader copies a WRITE payload into the
 * pooled shared buffer with copyBytes (the addon's memmove at 1 KiB and more, TypedArray#set
 * below). Payloads arriving in many TCP chunks of odd sizes — some below the native threshold,
 * some above, some straddling the header — must land byte for byte, in pooled memory that is
 * dirty from earlier use, and a served volume must store exactly them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ByteReader } from '../../appliance/nbd/byte-reader.ts';
import { Command, simpleReplyMagic } from '../../appliance/nbd/protocol.ts';
import { encodeRequest } from '../../appliance/nbd/codec.ts';
import { nativeCopyBytesMin } from '../../appliance/split/native-seal.ts';
import { sharedBuffers } from '../../appliance/split/shared-buffers.ts';
import { SplitPool } from '../../appliance/split/split-pool.ts';
import { volumeExport } from '../../appliance/volume/volume-export.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { memoryVolume, testWrapper } from '../helpers/volumes.ts';
import { poolHolds } from '../helpers/shared-buffers-spy.ts';
import { poisonPool } from '../helpers/pool-watch.ts';
import { RawPeer, serve } from './helpers.ts';

const KiB = 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Chunk sizes that cross the native copy threshold both ways, odd and tiny ones included. */
function chunkSizes(total: number, seed: number): number[] {
  const pattern = [1, 7, nativeCopyBytesMin - 1, nativeCopyBytesMin, nativeCopyBytesMin + 1, 3, 4093, 65_537, 511, 12_289];
  const out: number[] = [];
  for (let at = 0, k = seed; at < total; k++) {
    const n = Math.min(total - at, pattern[k % pattern.length]!);
    out.push(n);
    at += n;
  }
  return out;
}

test.serial('ByteReader: payloads in chunks of odd sizes land byte for byte in dirty pooled memory, and the frames around them are intact', async (t) => {
  const stream = new PassThrough();
  const reader = new ByteReader(stream);
  // Dirty the pool's memory of these size classes first.
  const dirty = [64 * KiB, 100 * KiB, 300 * KiB].map((n) => sharedBuffers.take(n).fill(0x5a));
  for (const d of dirty) sharedBuffers.give(d);
  const frames = [64 * KiB, 100 * KiB + 3, 300 * KiB - 1, 65 * KiB + 7].map((n) => ({ header: randomBytes(28), payload: randomBytes(n) }));
  const wire = Buffer.concat(frames.flatMap((f) => [f.header, f.payload]));
  const sizes = chunkSizes(wire.length, 3);
  // Written from the other side of the stream while the reader waits, chunk by chunk.
  const feeding = (async () => {
    let at = 0;
    for (const n of sizes) {
      stream.write(Buffer.from(wire.subarray(at, at + n)));
      at += n;
      if (at % 7 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  for (const [k, f] of frames.entries()) {
    const header = await reader.read(28);
    t.true(header.equals(f.header), `frame ${k}: header`);
    const payload = await reader.read(f.payload.length, (n) => sharedBuffers.take(n));
    t.true(payload.buffer instanceof SharedArrayBuffer, 'received into pooled memory');
    t.is(payload.length, f.payload.length);
    t.is(sha(payload), sha(f.payload), `frame ${k}: payload`);
    sharedBuffers.give(payload);
  }
  await feeding;
  t.is(reader.bufferedBytes, 0);
});

test.serial('a served volume stores WRITE payloads that arrived in odd TCP chunks exactly; no pooled payload is reused while in use', async (t) => {
  t.timeout(60_000);
  const watch = poisonPool(t);
  const blockBytes = 4096;
  const sizeBytes = 4 * 1024 * KiB;
  const devices = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytesForVolume(sizeBytes, blockBytes, 2), { id: `mem${i}` }));
  const pool = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => pool.close());
  const volume = await Volume.create({
    name: 's4nbd',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [testWrapper()],
    regionsZeroed: true,
    runner: pool,
    cacheBytes: 0,
  });
  t.teardown(() => volume.close().catch(() => undefined));
  const { address } = await serve(t, [volumeExport(volume, 'disk')]);
  const peer = await RawPeer.transmission(address, 'disk');
  peer.socket.setNoDelay(true);
  t.teardown(() => peer.socket.destroy());
  const model = Buffer.alloc(sizeBytes);
  // Pooled (64 KiB and more) and not; aligned and unaligned; all requests pipelined at once.
  const writes = [
    { offset: 0, data: randomBytes(64 * KiB) },
    { offset: 128 * KiB, data: randomBytes(200 * KiB + 4096) },
    { offset: 512 * KiB + 513, data: randomBytes(96 * KiB + 77) },
    { offset: 1024 * KiB, data: randomBytes(8 * KiB) },
    { offset: 2048 * KiB, data: randomBytes(1024 * KiB) },
    { offset: 3300 * KiB + 4, data: randomBytes(70 * KiB) },
  ];
  const wire = Buffer.concat(
    writes.flatMap((w, k) => [encodeRequest({ flags: 0, type: Command.Write, cookie: BigInt(k + 1), offset: w.offset, length: w.data.length }), w.data]),
  );
  for (const w of writes) w.data.copy(model, w.offset);
  let at = 0;
  for (const n of chunkSizes(wire.length, 5)) {
    peer.write(wire.subarray(at, at + n));
    at += n;
    // Now and then let the server take what has arrived, so its chunks really are this small.
    if (n < nativeCopyBytesMin) await new Promise((r) => setTimeout(r, 1));
  }
  const cookies: bigint[] = [];
  for (let k = 0; k < writes.length; k++) {
    const reply = await peer.reply();
    t.is(reply.kind, 'simple');
    if (reply.kind === 'simple') {
      t.is(reply.error, 0);
      cookies.push(reply.cookie);
    }
  }
  t.deepEqual([...cookies].sort(), writes.map((_, k) => BigInt(k + 1)).sort());
  // Read back through the protocol, and from the volume itself.
  peer.request({ type: Command.Read, cookie: 99n, offset: 0, length: sizeBytes });
  const head = await peer.read(16);
  t.is(head.readUInt32BE(0), simpleReplyMagic);
  t.is(head.readUInt32BE(4), 0);
  t.is(sha(await peer.read(sizeBytes)), sha(model), 'what the client reads is what it wrote');
  t.is(sha(await volume.read(0, sizeBytes)), sha(model));
  t.true(watch.takes > 0 && watch.gives > 0, 'payloads and shares went through the pool');
  t.deepEqual(watch.violations, []);
});

test.serial('finding: a WRITE payload received for a volume that is already closed goes back to the pool after the close wiped it, so its plaintext outlives the volume', async (t) => {
  // Volume.close() zeroes what the shared pool keeps ("plaintext does not outlive its volume"), but
  // an NBD WRITE that arrives during or after the close is received into pooled memory first, fails
  // (the volume is closed), and is then given back — unwiped — after the wipe. With the pool now
  // keeping up to 128 MiB, that plaintext stays in the process after the appliance is sealed, until
  // some later take happens to overwrite it. (The give-back in transmission.ts, or the pool, would
  // have to zero memory given back once its volume has closed.)
  const { volume } = await memoryVolume({ m: 2, n: 3, sizeBytes: 1024 * KiB });
  const { address } = await serve(t, [volumeExport(volume, 'disk')]);
  const peer = await RawPeer.transmission(address, 'disk');
  t.teardown(() => peer.socket.destroy());
  await volume.close();
  const secret = randomBytes(128 * KiB);
  peer.request({ type: Command.Write, cookie: 7n, offset: 0, length: secret.length }, secret);
  const reply = await peer.reply();
  t.true(reply.kind === 'simple' && reply.error !== 0, 'the write to a closed volume is refused');
  t.false(poolHolds(secret.subarray(1000, 1064), 128 * KiB), 'the refused write\'s plaintext is in the shared pool after its volume closed');
});
