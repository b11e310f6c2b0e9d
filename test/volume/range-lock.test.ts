import test from 'ava';
import { RangeLock } from '../../appliance/volume/range-lock.ts';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('overlapping writers wait in arrival order; readers share; a range that overlaps nothing is not held up', async (t) => {
  const lock = new RangeLock();
  const a = await lock.acquire(0, 9, 'exclusive');
  const order: string[] = [];
  const b = lock.acquire(5, 5, 'exclusive').then((release) => (order.push('b'), release));
  const c = lock.acquire(5, 6, 'shared').then((release) => (order.push('c'), release));
  const d = await lock.acquire(10, 20, 'exclusive');
  await tick();
  t.deepEqual(order, [], 'both wait for the writer that holds block 5');
  a();
  const releaseB = await b;
  await tick();
  t.deepEqual(order, ['b'], 'the reader arrived after writer b and overlaps it: it waits for b');
  releaseB();
  releaseB(); // a second release changes nothing
  const releaseC = await c;
  t.deepEqual(order, ['b', 'c']);
  const e = await lock.acquire(6, 6, 'shared'); // shared with c, which still holds 5-6
  releaseC();
  e();
  d();
  t.is(lock.size, 0);
});

test('a reader queued behind a waiting writer is not let past it (no writer starvation)', async (t) => {
  const lock = new RangeLock();
  const r1 = await lock.acquire(0, 0, 'shared');
  const order: string[] = [];
  const w = lock.acquire(0, 0, 'exclusive').then((release) => (order.push('w'), release));
  const r2 = lock.acquire(0, 0, 'shared').then((release) => (order.push('r2'), release));
  await tick();
  t.deepEqual(order, []);
  r1();
  (await w)();
  (await r2)();
  t.deepEqual(order, ['w', 'r2']);
  t.is(lock.size, 0);
});
