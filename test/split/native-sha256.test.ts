/**
 * sha256Into (native-seal.ts): the journal record header's checksum, natively when the addon is
 * loaded. It must write exactly node:crypto's digest at the given offset, also when source and
 * destination are one buffer, touch nothing else, and refuse ranges outside either array — the raw
 * addon as well as the wrapper.
 */
import test from 'ava';
import { createRequire } from 'node:module';
import { hash, randomBytes } from 'node:crypto';
import { nativeSeal, sha256Into } from '../../appliance/split/native-seal.ts';

const disabled = process.env.STRIPVAULT_NATIVE_SEAL === '0';

test('sha256Into writes node:crypto’s SHA-256 of the range at the offset, and nothing else', (t) => {
  if (!disabled) t.true(nativeSeal.available, `addon not loaded: ${nativeSeal.why}`);
  const failures: string[] = [];
  for (const n of [0, 1, 55, 56, 63, 64, 65, 96, 4096, 65536 + 7]) {
    for (const shared of [false, true]) {
      const src = shared ? Buffer.from(new SharedArrayBuffer(n + 50)) : Buffer.alloc(n + 50);
      src.set(randomBytes(src.length));
      const srcAt = n % 2 === 0 ? 0 : 13;
      const dst = Buffer.alloc(100, 0x5c);
      const dstAt = n % 3 === 0 ? 0 : 41;
      const want = Buffer.from(dst);
      want.set(hash('sha256', src.subarray(srcAt, srcAt + n), 'buffer'), dstAt);
      sha256Into(src, srcAt, n, dst, dstAt);
      if (!dst.equals(want)) failures.push(`${n} bytes from ${srcAt} (${shared ? 'shared' : 'plain'}) to ${dstAt}`);
    }
  }
  t.deepEqual(failures, []);
});

test('sha256Into with the digest landing inside the hashed range (as a record header does) digests the original bytes', (t) => {
  const buf = randomBytes(128);
  const want = Buffer.from(buf);
  want.set(hash('sha256', buf.subarray(0, 96), 'buffer'), 64);
  sha256Into(buf, 0, 96, buf, 64);
  t.true(buf.equals(want));
});

test('sha256Into refuses ranges outside either array and writes nothing', (t) => {
  const src = Buffer.alloc(64, 1);
  const dst = Buffer.alloc(64);
  const bad: Array<[number, number, number]> = [
    [1, 64, 0],
    [0, 65, 0],
    [-1, 8, 0],
    [0, -1, 0],
    [0.5, 8, 0],
    [0, 8, 33],
    [0, 8, -1],
    [0, Number.NaN, 0],
  ];
  for (const [srcAt, n, dstAt] of bad) t.throws(() => sha256Into(src, srcAt, n, dst, dstAt), { instanceOf: RangeError }, `${srcAt}/${n}/${dstAt}`);
  t.true(dst.every((x) => x === 0));
});

test('the raw addon’s sha256Into throws an Error for garbage arguments and keeps working', (t) => {
  if (disabled) {
    t.pass('addon disabled: the JavaScript digest is in use');
    return;
  }
  t.true(nativeSeal.available, `addon not loaded: ${nativeSeal.why}`);
  const addon = createRequire(import.meta.url)('../../build/Release/stripvault_seal.node') as {
    sha256Into(...args: unknown[]): void;
  };
  const src = randomBytes(64);
  const dst = Buffer.alloc(40);
  const garbage: unknown[][] = [
    [],
    [src, 0, 64, dst],
    ['x', 0, 64, dst, 0],
    [src, 0, 64, 'x', 0],
    [src, 1, 64, dst, 0],
    [src, 0, 65, dst, 0],
    [src, 0, 64, dst, 9],
    [src, -1, 8, dst, 0],
    [src, 0, 2 ** 53, dst, 0],
    [src, 0, 1.5, dst, 0],
    [src, 0, 64, dst, Number.NaN],
    [src, 0, 64, new Float64Array(3), 0],
  ];
  for (const args of garbage) t.throws(() => addon.sha256Into(...args), { instanceOf: Error }, `${args.length} arguments`);
  t.true(dst.every((x) => x === 0), 'no refused call wrote');
  addon.sha256Into(src, 0, 64, dst, 8);
  t.true(dst.subarray(8).equals(hash('sha256', src, 'buffer')), 'a valid call after the garbage digests');
});
