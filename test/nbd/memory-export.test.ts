import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { createMemoryExport } from '../../appliance/nbd/memory-export.ts';
import { StateFlag } from '../../appliance/nbd/protocol.ts';

test('sparse: reads of unwritten space are zero and allocate nothing', async (t) => {
  const e = createMemoryExport({ name: 'm', sizeBytes: 1 << 30 });
  t.true((await e.read(123_456, 10_000)).every((b) => b === 0));
  t.is(e.allocatedChunks, 0);
});

test('writes across chunk boundaries read back exactly', async (t) => {
  const e = createMemoryExport({ name: 'm', sizeBytes: 1 << 20, chunkBytes: 4096 });
  const data = Buffer.alloc(10_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  await e.write(4000, data, { fua: false });
  t.deepEqual(await e.read(4000, 10_000), data);
  t.is((await e.read(3999, 1))[0], 0);
  t.is(e.allocatedChunks, 4);
});

test('trim and write zeroes: whole chunks become holes unless NO_HOLE', async (t) => {
  const e = createMemoryExport({ name: 'm', sizeBytes: 64 * 1024, chunkBytes: 4096 });
  await e.write(0, Buffer.alloc(64 * 1024, 1), { fua: false });
  await e.trim(4096, 8192, { fua: false });
  await e.writeZeroes(16384, 4096, { fua: false, noHole: true });
  await e.writeZeroes(20480 + 100, 100, { fua: false, noHole: false });
  t.deepEqual(await e.blockStatus(0, 32768), [
    { length: 4096, flags: 0 },
    { length: 8192, flags: StateFlag.Hole | StateFlag.Zero },
    { length: 4096, flags: 0 },
    { length: 4096, flags: StateFlag.Zero },
    { length: 12288, flags: 0 },
  ]);
  t.true((await e.read(20580, 100)).every((b) => b === 0));
  t.is((await e.read(20579, 1))[0], 1);
});

test('out-of-range calls fail with SV_OUT_OF_RANGE', async (t) => {
  const e = createMemoryExport({ name: 'm', sizeBytes: 4096 });
  const err = await t.throwsAsync(e.read(4000, 200));
  t.true(isStripvaultError(err, ErrorCode.OutOfRange));
});
