/**
 * copyBytes (native-seal.ts): the addon's memmove for copies to and from shared memory, which V8
 * does with a slow relaxed-atomic loop. It must copy exactly what TypedArray#set would, in every
 * combination of shared and ordinary memory, and refuse ranges outside either array.
 */
import test from 'ava';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { copyBytes, nativeCopyBytesMin, nativeSeal } from '../../appliance/split/native-seal.ts';

const disabled = process.env.STRIPVAULT_NATIVE_SEAL === '0';

function memory(kind: 'shared' | 'plain', bytes: number): Buffer {
  return kind === 'shared' ? Buffer.from(new SharedArrayBuffer(bytes)) : Buffer.alloc(bytes);
}

test('copyBytes copies like TypedArray#set between shared and ordinary memory, small and large', (t) => {
  if (!disabled) t.true(nativeSeal.available, `addon not loaded: ${nativeSeal.why}`);
  const sizes = [0, 1, 7, nativeCopyBytesMin - 1, nativeCopyBytesMin, 4096, 65536 + 13, 1 << 20];
  const failures: string[] = [];
  for (const from of ['shared', 'plain'] as const) {
    for (const to of ['shared', 'plain'] as const) {
      for (const n of sizes) {
        const src = memory(from, n + 40);
        src.set(randomBytes(src.length));
        const dst = memory(to, n + 100);
        dst.fill(0x5c);
        const want = Buffer.from(dst);
        const srcAt = n % 2 === 0 ? 0 : 17;
        const dstAt = n % 3 === 0 ? 0 : 29;
        want.set(src.subarray(srcAt, srcAt + n), dstAt);
        copyBytes(dst, dstAt, src, srcAt, n);
        if (!Buffer.from(dst).equals(want)) failures.push(`${from} → ${to}, ${n} bytes from ${srcAt} to ${dstAt}`);
      }
    }
  }
  t.deepEqual(failures, []);
});

test('copyBytes defaults to all of src, and views with offsets into their buffers copy the right bytes', (t) => {
  const backing = Buffer.from(new SharedArrayBuffer(3 * 8192));
  backing.set(randomBytes(backing.length));
  const src = backing.subarray(8192, 2 * 8192);
  const dstBacking = Buffer.alloc(4 * 8192);
  const dst = dstBacking.subarray(100, 100 + 3 * 8192);
  copyBytes(dst, 4096, src);
  t.true(dstBacking.subarray(100 + 4096, 100 + 4096 + 8192).equals(src));
  t.true(dstBacking.subarray(0, 100 + 4096).every((x) => x === 0), 'nothing written before the range');
  t.true(dstBacking.subarray(100 + 4096 + 8192).every((x) => x === 0), 'nothing written after the range');
});

test('copyBytes within one shared buffer handles overlap like memmove', (t) => {
  const buf = Buffer.from(new SharedArrayBuffer(16384));
  buf.set(randomBytes(buf.length));
  const want = Buffer.from(buf);
  want.copyWithin(1000, 0, 8192);
  copyBytes(buf, 1000, buf, 0, 8192);
  t.true(Buffer.from(buf).equals(want));
});

test('copyBytes refuses ranges outside either array and writes nothing', (t) => {
  const src = Buffer.from(new SharedArrayBuffer(8192)).fill(1);
  const dst = Buffer.from(new SharedArrayBuffer(8192));
  const bad: Array<[number, number, number]> = [
    [1, 0, 8192],
    [0, 1, 8192],
    [-1, 0, 4096],
    [0, -1, 4096],
    [0, 0, 8193],
    [0.5, 0, 4096],
    [0, 0, Number.NaN],
    [2 ** 53, 0, 4096],
    [0, 0, -1],
  ];
  for (const [dstAt, srcAt, n] of bad) t.throws(() => copyBytes(dst, dstAt, src, srcAt, n), { instanceOf: RangeError }, `${dstAt} ${srcAt} ${n}`);
  t.true(dst.every((x) => x === 0));
});

test('the raw addon copy throws an Error for garbage arguments and keeps working', (t) => {
  if (disabled) {
    t.pass('addon disabled');
    return;
  }
  const addon = createRequire(import.meta.url)('../../build/Release/stripvault_seal.node') as {
    copy(...args: unknown[]): void;
  };
  const dst = Buffer.alloc(4096);
  const src = Buffer.alloc(4096, 7);
  const garbage: unknown[][] = [
    [],
    [dst, 0, src, 0],
    [dst, 0, src, 0, 4096, 1],
    [null, 0, src, 0, 10],
    [dst, 0, 'src', 0, 10],
    [{ length: 10 }, 0, src, 0, 10],
    [new Float64Array(4), 0, src, 0, 10],
    [dst, -1, src, 0, 10],
    [dst, 0, src, -1, 10],
    [dst, 0, src, 0, -1],
    [dst, 0.5, src, 0, 10],
    [dst, Number.NaN, src, 0, 10],
    [dst, 4090, src, 0, 10],
    [dst, 0, src, 4090, 10],
    [dst, 0, src, 0, 4097],
    [dst, 2 ** 63, src, 0, 10],
    [dst, '0', src, 0, 10],
  ];
  for (const args of garbage) t.throws(() => addon.copy(...args), { instanceOf: Error }, JSON.stringify(args.map((a) => typeof a)));
  t.true(dst.every((x) => x === 0), 'no garbage call wrote anything');
  addon.copy(dst, 96, src, 100, 3990);
  const copied = dst.subarray(96, 96 + 3990);
  t.true(copied.every((x) => x === 7) && dst.subarray(0, 96).every((x) => x === 0) && dst.subarray(96 + 3990).every((x) => x === 0), 'a valid call still copies');
});
