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
