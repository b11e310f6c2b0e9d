import test from 'ava';
import { randomBytes } from 'node:crypto';
import { ErrorCode } from '../../appliance/errors.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { Strip } from '../../appliance/strip/strip.ts';
import { decodeSlot } from '../../appliance/strip/slot.ts';
import { Volume } from '../../appliance/volume/volume.ts';
import { generationBatch } from '../../appliance/volume/generation-ledger.ts';
import { memoryVolume, testWrapper } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;

test('bytes written at odd offsets and lengths read back exactly', async (t) => {
  const { volume } = await memoryVolume({ m: 2, n: 3, sizeBytes: 4 * MiB });
  const model = Buffer.alloc(4 * MiB);
  const cases: Array<[number, number]> = [[0, 1], [1, 4095], [4095, 2], [4096, 4096], [10_000, 50_001], [4 * MiB - 3, 3], [123_457, 1]];
  for (const [offset, length] of cases) {
    const data = randomBytes(length);
    await volume.write(offset, data);
    data.copy(model, offset);
  }
  t.true((await volume.read(0, 4 * MiB)).equals(model));
  for (const [offset, length] of cases) t.true((await volume.read(offset, length)).equals(model.subarray(offset, offset + length)));
  t.is(volume.health().state, 'healthy');
});

test('unwritten space reads as zeros; write-zeroes and trim zero partial and whole blocks', async (t) => {
  const { volume } = await memoryVolume({ m: 3, n: 5, sizeBytes: MiB });
  t.true((await volume.read(0, MiB)).equals(Buffer.alloc(MiB)));
  const data = randomBytes(64 * 1024);
  await volume.write(0, data);
  await volume.writeZeroes(100, 10_000);
  await volume.trim(20_000, 8192);
  const expect = Buffer.from(data);
  expect.fill(0, 100, 10_100);
  expect.fill(0, 20_000, 28_192);
  t.true((await volume.read(0, 64 * 1024)).equals(expect));
  // a range larger than any single request, with unaligned ends, in several pieces
  await volume.write(0, randomBytes(MiB));
  await volume.writeZeroes(1, MiB - 2);
  const all = await volume.read(0, MiB);
  t.true(all.subarray(1, MiB - 1).equals(Buffer.alloc(MiB - 2)));
});

test('concurrent writers to one block are serialised: no update is lost', async (t) => {
  const { volume } = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  const pieces = Array.from({ length: 64 }, (_, i) => ({ offset: 8192 + i * 64, data: randomBytes(64) }));
  await Promise.all(pieces.map((p) => volume.write(p.offset, p.data)));
  const got = await volume.read(8192, 4096);
  for (const p of pieces) t.true(got.subarray(p.offset - 8192, p.offset - 8192 + 64).equals(p.data));
});

test('out-of-range and absurd requests get a typed error', async (t) => {
  const { volume } = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  await t.throwsAsync(volume.read(MiB - 1, 2), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(volume.read(-1, 2), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(volume.read(0, Number.MAX_SAFE_INTEGER), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(volume.write(MiB, Buffer.alloc(1)), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(volume.writeZeroes(1.5, 3), { code: ErrorCode.OutOfRange } as never);
  await t.throwsAsync(volume.writeZeroes(4096, MiB), { code: ErrorCode.OutOfRange } as never);
  t.is((await volume.read(MiB, 0)).length, 0);
});

test('impossible geometries and sizes are refused at create', async (t) => {
  const dev = () => ({ device: new MemoryDevice(4 * MiB), base: 0 });
  const base = { name: 'x', sizeBytes: MiB, blockBytes: 4096, wrappers: [testWrapper()], regionsZeroed: true };
  await t.throwsAsync(Volume.create({ ...base, m: 3, n: 2, locations: [dev(), dev()] }), { code: ErrorCode.InvalidGeometry } as never);
  await t.throwsAsync(Volume.create({ ...base, m: 0, n: 1, locations: [dev()] }), { code: ErrorCode.InvalidGeometry } as never);
  await t.throwsAsync(Volume.create({ ...base, m: 1, n: 2, blockBytes: 3000, locations: [dev(), dev()] }), { code: ErrorCode.InvalidGeometry } as never);
  await t.throwsAsync(Volume.create({ ...base, m: 1, n: 2, sizeBytes: 5000, locations: [dev(), dev()] }), { code: ErrorCode.InvalidArgument } as never);
  const same = dev();
  await t.throwsAsync(Volume.create({ ...base, m: 1, n: 2, locations: [same, same] }), { code: ErrorCode.InvalidArgument } as never);
  await t.throwsAsync(
    Volume.create({ ...base, m: 1, n: 2, locations: [{ device: new MemoryDevice(1000), base: 0 }, dev()] }),
    { code: ErrorCode.DeviceTooSmall } as never,
  );
});

test('a reopened volume serves the same data and never reuses a generation', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  const data = randomBytes(MiB);
  await fx.volume.write(0, data);
  await fx.volume.close();
  await t.throwsAsync(fx.volume.read(0, 1), { code: ErrorCode.VolumeClosed } as never);
  const seen = async (v: Volume): Promise<number[]> => {
    const strip = v.stripAt(0)!;
    const slots = await strip.readSlots(0, 4);
    return [0, 1, 2, 3].map((i) => decodeSlot(0, slots.subarray(i * strip.label.slotBytes, (i + 1) * strip.label.slotBytes)).generation);
  };
  const v2 = await fx.reopen();
  t.true((await v2.read(0, MiB)).equals(data));
  const before = await seen(v2);
  await v2.write(0, randomBytes(4 * 4096));
  const after = await seen(v2);
  // Every new generation is above the previous session's whole reservation.
  for (let i = 0; i < 4; i++) t.true(after[i]! > before[i]! && after[i]! >= generationBatch, `${after[i]} vs ${before[i]}`);
  // And above everything any strip header had reserved before this session.
  const reserved = v2.stripAt(1)!.header.body.generationReserved;
  t.true(after.every((g) => g < reserved));
});

test('degraded: with one strip missing reads and writes go on; the missing strip is marked stale', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  const data = randomBytes(256 * 1024);
  await fx.volume.write(0, data);
  await fx.volume.close();
  const degraded = await fx.reopen([fx.devices[0]!, null, fx.devices[2]!]);
  t.is(degraded.health().state, 'degraded');
  t.true((await degraded.read(0, data.length)).equals(data));
  const newer = randomBytes(8192);
  await degraded.write(4096, newer);
  data.set(newer, 4096);
  await degraded.close();
  // The strip comes back: it is known to be stale, and reads still return the newest data.
  const back = await fx.reopen();
  t.is(back.health().strips[1]!.state, 'stale');
  t.true((await back.read(0, data.length)).equals(data));
  // Now lose strip 0: the blocks written while strip 1 was away have only one current share left.
  // They must fail with a typed error (never the older data strip 1 still holds); the others read.
  await back.close();
  const mixed = await fx.reopen([null, fx.devices[1]!, fx.devices[2]!]);
  await t.throwsAsync(mixed.read(4096, 8192), { code: ErrorCode.NotEnoughShares } as never);
  await t.throwsAsync(mixed.read(4096, 1), { code: ErrorCode.NotEnoughShares } as never);
  t.true((await mixed.read(0, 4096)).equals(data.subarray(0, 4096)));
  t.true((await mixed.read(12_288, data.length - 12_288)).equals(data.subarray(12_288)));
});

test('with fewer than M strips the volume refuses with a typed error, never data', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  await fx.volume.write(0, randomBytes(4096));
  await fx.volume.close();
  await t.throwsAsync(fx.reopen([fx.devices[0]!, null, null]), { code: ErrorCode.VolumeUnavailable } as never);
});

test('a strip of another volume, or at the wrong position, is refused', async (t) => {
  const a = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  const b = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  await t.throwsAsync(a.reopen([a.devices[1]!, a.devices[0]!, a.devices[2]!]), { code: ErrorCode.VolumeMismatch } as never);
  // b's strip opened with a's wrapper cannot even be decrypted; with both wrappers it is a mismatch
  await t.throwsAsync(
    Volume.open({
      locations: [a.devices[0]!, b.devices[1]!, a.devices[2]!].map((device) => ({ device, base: 0 })),
      wrappers: [a.wrapper, b.wrapper],
      expectId: a.volume.id,
    }),
    { code: ErrorCode.VolumeMismatch } as never,
  );
});

test('a wrong wrapping key opens nothing', async (t) => {
  const fx = await memoryVolume({ m: 2, n: 3, sizeBytes: MiB });
  await fx.volume.close();
  await t.throwsAsync(
    Volume.open({ locations: fx.devices.map((device) => ({ device, base: 0 })), wrappers: [testWrapper()] }),
    { code: ErrorCode.VolumeUnavailable } as never,
  );
  await t.throwsAsync(Strip.load({ device: fx.devices[0]!, base: 0 }, [{ id: fx.wrapper.id, key: randomBytes(32) }]), {
    code: ErrorCode.StripNoKeyForWrapper,
  } as never);
});
