import test from 'ava';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';

const take = (prng: Prng, n: number) => Array.from({ length: n }, () => prng.nextUint32());

test('xoshiro128** matches the reference implementation', (t) => {
  // Outputs of Blackman & Vigna's xoshiro128starstar.c (prng.di.unimi.it), compiled with gcc.
  t.deepEqual(take(Prng.fromState([1, 2, 3, 4]), 10), [
    11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804,
  ]);
  t.deepEqual(take(Prng.fromState([0x9e3779b9, 0x243f6a88, 0xb7e15162, 0xdeadbeef]), 6), [
    2463954730, 5524658, 74256371, 1905451993, 3123413897, 314453775,
  ]);
});

test('seeding goes through SplitMix64 as in the reference', (t) => {
  // The C reference seeded by splitmix64.c: s = {lo(a), hi(a), lo(b), hi(b)} for its first two outputs.
  t.deepEqual(take(new Prng(42), 6), [1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222]);
  t.deepEqual(take(new Prng(0), 6), [3737715805, 2584255861, 2876756834, 3286328325, 1553311962, 1625202774]);
  t.deepEqual(take(new Prng(42n), 6), take(new Prng(42), 6));
});

test('same seed, same stream; different seed, different stream', (t) => {
  t.deepEqual(new Prng(9).bytes(1000), new Prng(9).bytes(1000));
  t.notDeepEqual(take(new Prng(9), 8), take(new Prng(10), 8));
  const parent = new Prng(9);
  const child = parent.fork();
  t.notDeepEqual(take(child, 8), take(parent, 8));
});

test('bounded draws stay in range and reach both ends', (t) => {
  const prng = new Prng(1);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const v = prng.nextIntBetween(-3, 3);
    t.true(v >= -3 && v <= 3);
    seen.add(v);
  }
  t.is(seen.size, 7);
  for (let i = 0; i < 200; i++) {
    const big = prng.nextInt(2 ** 40 + 3);
    t.true(Number.isSafeInteger(big) && big >= 0 && big < 2 ** 40 + 3);
    const f = prng.nextFloat();
    t.true(f >= 0 && f < 1);
  }
  t.false(prng.chance(0));
  t.true(prng.chance(1));
});

test('bad arguments are refused', (t) => {
  const prng = new Prng(1);
  const invalid = { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument };
  t.throws(() => prng.nextInt(0), invalid);
  t.throws(() => prng.nextInt(2 ** 53 + 2), invalid);
  t.throws(() => prng.nextIntBetween(3, 2), invalid);
  t.throws(() => prng.chance(1.5), invalid);
  t.throws(() => new Prng(0.5), invalid);
  t.throws(() => Prng.fromState([0, 0, 0, 0]), invalid);
});
