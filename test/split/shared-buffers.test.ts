import test from 'ava';
import { SharedBuffers, sharedBuffersKeptBytesMax } from '../../appliance/split/shared-buffers.ts';

test('shared buffers are reused by size class and kept only up to a bound', (t) => {
  const pool = new SharedBuffers();
  const a = pool.take(5000);
  t.is(a.length, 5000);
  t.true(a.buffer instanceof SharedArrayBuffer);
  const memory = a.buffer;
  pool.give(a);
  const b = pool.take(60_000);
  t.is(b.buffer, memory, 'the same size class reuses the memory');
  t.is(b.length, 60_000);
  const c = pool.take(100);
  t.not(c.buffer, memory, 'a buffer in use is not handed out twice');
  pool.give(b);
  pool.give(c);
  // Keep no more than the bound.
  const many = Array.from({ length: sharedBuffersKeptBytesMax / (1 << 20) + 4 }, () => pool.take(1 << 20));
  for (const m of many) pool.give(m);
  t.true(pool.keptBytes <= sharedBuffersKeptBytesMax);
  t.throws(() => pool.give(Buffer.alloc(10)), { message: /not taken/ });
  // Beyond the largest class: a plain shared allocation, not kept.
  const huge = pool.take(17 * 1024 * 1024);
  const kept = pool.keptBytes;
  pool.give(huge);
  t.is(pool.keptBytes, kept);
});

test('a buffer that was out during a wipe comes back zeroed; one taken after it is kept as it is', (t) => {
  const pool = new SharedBuffers();
  const before = pool.take(4096);
  before.fill(0x5a);
  const keptThrough = pool.take(4096);
  pool.give(keptThrough.fill(0x11));
  pool.wipe();
  t.true(new Uint8Array(keptThrough.buffer).every((x) => x === 0), 'what the pool kept is wiped');
  pool.give(before);
  t.true(new Uint8Array(before.buffer).every((x) => x === 0), 'memory in use during the wipe is zeroed when it comes back');
  const after = pool.take(4096);
  after.fill(0x77);
  pool.give(after);
  t.true(new Uint8Array(after.buffer).subarray(0, 4096).every((x) => x === 0x77), 'memory taken after the wipe is not cleared again (callers overwrite it)');
});

test('a pool full of one size class makes room for another, clearing what it drops', (t) => {
  const pool = new SharedBuffers();
  const large = 16 * 1024 * 1024;
  // A sequential write fills the pool with large buffers…
  const big = Array.from({ length: sharedBuffersKeptBytesMax / large }, () => pool.take(large).fill(0x42));
  for (const b of big) pool.give(b);
  t.is(pool.keptBytes, sharedBuffersKeptBytesMax);
  // …and the small buffers of the random writes after it must still be reused, not reallocated.
  const small = pool.take(4096);
  const memory = small.buffer;
  pool.give(small);
  t.true(pool.keptBytes <= sharedBuffersKeptBytesMax);
  const again = pool.take(4096);
  t.is(again.buffer, memory, 'the small buffer was kept');
  pool.give(again);
  const dropped = big.filter((b) => !new Uint8Array(b.buffer).every((x) => x === 0x42));
  t.is(dropped.length, 1, 'exactly one large buffer made room');
  t.is(dropped[0], big[0], 'the one kept longest');
  t.true(new Uint8Array(dropped[0]!.buffer).every((x) => x === 0), 'and it was cleared');
  // A class that alone fills the pool drops its own surplus instead.
  const more = Array.from({ length: sharedBuffersKeptBytesMax / (1 << 20) + 4 }, () => pool.take(1 << 20));
  for (const m of more) pool.give(m);
  t.true(pool.keptBytes <= sharedBuffersKeptBytesMax);
});
