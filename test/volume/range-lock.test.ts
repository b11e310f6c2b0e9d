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
 * boundaries, are wide (kept apart from the buckets) or cover everything, in both modes: the same
 * grants in the same order, onWait and its "granted" callback for exactly the requests that waited,
 * the same number waiting, and an index that is empty once everything is released. Run at block 0
 * across 2^31 and near 2^40 (a 4 PiB volume of 4 KiB blocks), where 32-bit arithmetic would go wrong.
 */
// Block 0; across 2^31 (where a 32-bit shift turns negative) and 2^32 (where it wraps); the top
// of the 40-bit address space.
for (const base of [0, 2 ** 31 - 6 * rangeLockBucketBlocks, 2 ** 32 - 6 * rangeLockBucketBlocks, 2 ** 40 - 12 * rangeLockBucketBlocks - 100]) {
  test(`grants exactly what a plain arrival-order queue grants, for narrow, bucket-crossing and wide ranges (base ${base})`, async (t) => {
    interface Model {
      readonly id: number;
      readonly first: number;
      readonly last: number;
      readonly mode: 'shared' | 'exclusive';
      granted: boolean;
      waited: boolean;
    }
    let seed = 0x5eed + base;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const blocks = 12 * rangeLockBucketBlocks;
    const lengths = [1, 1, 1, 8, rangeLockBucketBlocks, 3 * rangeLockBucketBlocks, (rangeLockWideBuckets + 1) * rangeLockBucketBlocks, blocks];
    let onWaits = 0;
    let grantedAfterWait = 0;
    let current = -1;
    const waitedIds = new Set<number>();
    const lock = new RangeLock(() => {
      onWaits++;
      waitedIds.add(current);
      return () => grantedAfterWait++;
    });
    const model: Model[] = [];
    const grantOrder: number[] = [];
    const releases = new Map<number, () => void>();
    let modelWaitsGranted = 0;
    const modelGrant = (): number[] => {
      const now: number[] = [];
      model.forEach((r, k) => {
        if (r.granted) return;
        const blocked = model.slice(0, k).some((o) => o.first <= r.last && r.first <= o.last && (o.mode === 'exclusive' || r.mode === 'exclusive'));
        if (!blocked) {
          r.granted = true;
          now.push(r.id);
          if (r.waited) modelWaitsGranted++;
        }
      });
      return now;
    };
    let wideSeen = 0;
    let waitsSeen = 0;
    let doubleReleases = 0;
    for (let id = 0, step = 0; step < 3000; step++) {
      const held = model.filter((r) => r.granted);
      let expectedOrder: number[];
      if (held.length > 0 && (random(3) === 0 || model.length > 60)) {
        const r = held[random(held.length)]!;
        const release = releases.get(r.id)!;
        release();
        // A second release of the same grant changes nothing (tried on every kind of range).
        if (random(4) === 0) {
          release();
          doubleReleases++;
        }
        model.splice(model.indexOf(r), 1);
        expectedOrder = modelGrant();
      } else {
        const length = lengths[random(lengths.length)]!;
        const first = base + random(blocks - length + 1);
        const r: Model = { id: id++, first, last: first + length - 1, mode: random(3) === 0 ? 'shared' : 'exclusive', granted: false, waited: false };
        if (length > rangeLockWideBuckets * rangeLockBucketBlocks) wideSeen++;
        model.push(r);
        expectedOrder = modelGrant();
        r.waited = !r.granted;
        current = r.id;
        void lock.acquire(r.first, r.last, r.mode).then((release) => {
          grantOrder.push(r.id);
          releases.set(r.id, release);
        });
        // The request was granted, or told onWait, before acquire's first await.
        t.is(waitedIds.has(r.id), r.waited, `step ${step}: onWait for request ${r.id}`);
      }
      await tick();
      waitsSeen += model.filter((r) => !r.granted).length;
      const order = grantOrder.splice(0);
      if (JSON.stringify(order) !== JSON.stringify(expectedOrder)) {
        t.fail(`step ${step}: the lock granted ${order.join(',')} (in that order), the model ${expectedOrder.join(',')}`);
        return;
      }
      t.is(lock.size, model.length);
      t.is(lock.waiting, model.filter((r) => !r.granted).length);
      t.is(grantedAfterWait, modelWaitsGranted, 'onWait\'s callback ran once for every waiting request that was granted');
    }
    t.is(onWaits, waitedIds.size);
    // Drain: release everything in arrival order; nothing is left in the index.
    while (model.length > 0) {
      const r = model.find((x) => x.granted)!;
      releases.get(r.id)!();
      model.splice(model.indexOf(r), 1);
      modelGrant();
      await tick();
    }
    t.is(lock.size, 0);
    t.is(lock.waiting, 0);
    t.is(lock.indexedBuckets, 0, 'no bucket is kept once nothing is held');
    t.log(`wide ${wideSeen}, waits ${waitsSeen}, double releases ${doubleReleases}`);
    t.true(wideSeen > 100 && waitsSeen > 1000 && doubleReleases > 50, `the run exercised wide requests (${wideSeen}), waits (${waitsSeen}) and double releases (${doubleReleases})`);
  });
}

test('an empty or reversed range is refused', async (t) => {
  const lock = new RangeLock();
  await t.throwsAsync(lock.acquire(300, 299, 'exclusive'));
  await t.throwsAsync(lock.acquire(-1, 3, 'shared'));
  await t.throwsAsync(lock.acquire(0, 1.5, 'shared'));
  t.is(lock.size, 0);
});
