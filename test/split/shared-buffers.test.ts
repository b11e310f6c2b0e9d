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
