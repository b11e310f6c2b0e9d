/**
 * withRandomBytes: fresh bytes every time (never a byte of the pool handed out twice, across
 * refills), cleared when `use` returns or throws, and a nested call never disturbs the outer one.
 */
import test from 'ava';
import { randomBulkBytes, withRandomBytes } from '../../appliance/split/random.ts';

test('every draw is fresh across pool refills, and cleared once used', (t) => {
  const seen = new Set<string>();
  let cleared = 0;
  const draws = (3 * randomBulkBytes) / 32 + 7;
  for (let i = 0; i < draws; i++) {
    let view: Buffer | undefined;
    withRandomBytes(32, (b) => {
      t.is(b.length, 32);
      seen.add(b.toString('hex'));
      view = b;
    });
    // Checked before the next draw: a later refill of the pool rewrites the memory anyway.
    if (view!.every((x) => x === 0)) cleared++;
  }
  t.is(seen.size, draws, 'no 32-byte draw repeats (a reused pool byte would repeat one)');
  t.is(cleared, draws, 'what a draw saw is zero once its use returned');
});

test('a nested draw gets bytes of its own and leaves the outer ones as they were', (t) => {
  // Take the pool almost to its end, so the nested call would refill it if it drew from it.
  withRandomBytes(randomBulkBytes - 64, () => undefined);
  withRandomBytes(48, (outer) => {
    const copy = Buffer.from(outer);
    withRandomBytes(128, (inner) => {
      t.is(inner.length, 128);
      t.false(inner.buffer === outer.buffer && inner.byteOffset < outer.byteOffset + outer.length && outer.byteOffset < inner.byteOffset + inner.length, 'no overlap');
    });
    t.true(outer.equals(copy), 'the outer bytes did not change under the nested call');
  });
});

test('a draw larger than the pool, zero bytes, a throwing use, and bad lengths', (t) => {
  let big: Buffer | undefined;
  withRandomBytes(randomBulkBytes + 1, (b) => {
    t.is(b.length, randomBulkBytes + 1);
    t.true(b.some((x) => x !== 0));
    big = b;
  });
  t.true(big!.every((x) => x === 0), 'cleared after use');
  t.is(withRandomBytes(0, (b) => b.length), 0);
  let seen: Buffer | undefined;
  t.throws(() =>
    withRandomBytes(32, (b) => {
      seen = b;
      throw new Error('boom');
    }),
  );
  t.true(seen!.every((x) => x === 0), 'cleared when use throws');
  // The next draw comes from the pool again (not stuck "in use") and is fresh: bytes a throwing
  // use had were spent, not handed out again (they are zero now: an all-zero key).
  withRandomBytes(32, (b) => {
    t.is(b.buffer, seen!.buffer, 'drawn from the pool');
    t.true(b.some((x) => x !== 0), 'fresh bytes, not the cleared ones again');
  });
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 60]) t.throws(() => withRandomBytes(bad, () => undefined), { instanceOf: RangeError });
});
