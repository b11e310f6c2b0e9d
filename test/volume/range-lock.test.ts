import test from 'ava';
import { RangeLock, rangeLockBucketBlocks, rangeLockWideBuckets } from '../../appliance/volume/range-lock.ts';

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

/**
 * The lock against a plain model (one queue in arrival order, every request checked against every
 * earlier one), over random requests that stay in one bucket of the index, cross bucket
 * boundaries, are wide (kept apart from the buckets) or cover everything, in both modes.
 */
test('grants exactly what a plain arrival-order queue grants, for narrow, bucket-crossing and wide ranges', async (t) => {
  interface Model {
    readonly id: number;
    readonly first: number;
    readonly last: number;
    readonly mode: 'shared' | 'exclusive';
    granted: boolean;
  }
  let seed = 0x5eed;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const blocks = 12 * rangeLockBucketBlocks;
  const lengths = [1, 1, 1, 8, rangeLockBucketBlocks, 3 * rangeLockBucketBlocks, (rangeLockWideBuckets + 1) * rangeLockBucketBlocks, blocks];
  const lock = new RangeLock();
  const model: Model[] = [];
  const granted = new Set<number>();
  const releases = new Map<number, () => void>();
  const modelGrant = (): void => {
    model.forEach((r, k) => {
      if (r.granted) return;
      const blocked = model.slice(0, k).some((o) => o.first <= r.last && r.first <= o.last && (o.mode === 'exclusive' || r.mode === 'exclusive'));
      if (!blocked) r.granted = true;
    });
  };
  let wideSeen = 0;
  let waitsSeen = 0;
  for (let id = 0, step = 0; step < 3000; step++) {
    const held = model.filter((r) => r.granted);
    if (held.length > 0 && (random(3) === 0 || model.length > 60)) {
      const r = held[random(held.length)]!;
      releases.get(r.id)!();
      model.splice(model.indexOf(r), 1);
    } else {
      const length = lengths[random(lengths.length)]!;
      const first = random(blocks - length + 1);
      const r: Model = { id: id++, first, last: first + length - 1, mode: random(3) === 0 ? 'shared' : 'exclusive', granted: false };
      if (length > rangeLockWideBuckets * rangeLockBucketBlocks) wideSeen++;
      model.push(r);
      void lock.acquire(r.first, r.last, r.mode).then((release) => {
        granted.add(r.id);
        releases.set(r.id, () => {
          granted.delete(r.id);
          release();
        });
      });
    }
    modelGrant();
    await tick();
    waitsSeen += model.filter((r) => !r.granted).length;
    const expected = model.filter((r) => r.granted).map((r) => r.id);
    if (JSON.stringify([...granted].sort((a, b) => a - b)) !== JSON.stringify(expected)) {
      t.fail(`step ${step}: the lock granted ${[...granted].sort((a, b) => a - b).join(',')}, the model ${expected.join(',')}`);
      return;
    }
    t.is(lock.size, model.length);
  }
  t.log(`wide ${wideSeen}, waits ${waitsSeen}`);
  t.true(wideSeen > 100 && waitsSeen > 1000, `the run exercised wide requests (${wideSeen}) and waits (${waitsSeen})`);
});
