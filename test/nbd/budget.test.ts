import test from 'ava';
import { Budget } from '../../appliance/nbd/budget.ts';

test('the budget bounds requests and bytes in flight, always lets one request run, and refuses without side effects', async (t) => {
  const b = new Budget(2, 100);
  t.true(b.hasSlot());
  t.true(b.tryAcquire(60));
  t.false(b.tryAcquire(50), 'over the byte bound');
  t.deepEqual([b.count, b.bytes], [1, 60], 'a refusal takes nothing');
  t.true(b.tryAcquire(40));
  t.false(b.hasSlot(), 'two requests is the count bound');
  t.false(b.tryAcquire(0));
  let woke = false;
  const waiting = b.acquire(10).then(() => (woke = true));
  await new Promise((r) => setImmediate(r));
  t.false(woke);
  b.release(60);
  await waiting;
  t.deepEqual([b.count, b.bytes], [2, 50]);
  b.release(40);
  b.release(10);
  t.true(b.tryAcquire(1000), 'alone, even a request larger than the byte bound runs');
  b.release(1000);
  await b.idle();
  t.throws(() => b.release(1), undefined, 'a release without an acquire is a bug');
});
