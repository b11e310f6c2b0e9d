import test from 'ava';
import { TickBatcher } from '../../appliance/split/tick-batcher.ts';

function recorder(parallelism = 2, weightMax = 8) {
  const groups: number[][] = [];
  const b = new TickBatcher<number, string>({
    run: async (items) => {
      groups.push([...items]);
      if (items.includes(-1)) throw new Error('bad batch');
      return items.map((i) => `r${i}`);
    },
    weight: (i) => Math.max(1, Math.abs(i)),
    weightMax,
    parallelism: () => parallelism,
    key: (i) => (i >= 100 ? 'big' : 'small'),
  });
  return { b, groups };
}

test("requests made in one turn go out together, cut into about `parallelism` groups, answers in order", async (t) => {
  const { b, groups } = recorder(2);
  const results = await Promise.all([1, 1, 1, 1].map((i, k) => b.add(i + k * 0).then((r) => `${k}:${r}`)));
  t.deepEqual(results, ['0:r1', '1:r1', '2:r1', '3:r1']);
  t.deepEqual(groups, [
    [1, 1],
    [1, 1],
  ]);
});

test('a later turn is a new batch; items with different keys never share one; weight is bounded', async (t) => {
  const { b, groups } = recorder(1, 8);
  await Promise.all([b.add(3), b.add(100), b.add(4), b.add(5)]);
  await b.add(2);
  // 3 + 4 fit the limit of 8, 5 does not; 100 is alone (its own key, heavier than the limit on its own).
  t.deepEqual(groups, [[3, 4], [5], [100], [2]]);
});

test('a failed batch fails only its own requests', async (t) => {
  const { b } = recorder(2);
  const [bad, good] = await Promise.allSettled([b.add(-1), b.add(100)]);
  t.is(bad.status, 'rejected');
  t.deepEqual(good, { status: 'fulfilled', value: 'r100' });
});

test('a runner that answers for the wrong number of items is a loud failure, not a hang', async (t) => {
  const b = new TickBatcher<number, number>({ run: async () => [1], weight: () => 1, weightMax: 10, parallelism: () => 1 });
  const r = await Promise.allSettled([b.add(1), b.add(2)]);
  t.true(r.every((x) => x.status === 'rejected'));
});

test('a turn lighter than weightMin per worker is not split', async (t) => {
  const groups: number[][] = [];
  const b = new TickBatcher<number, number>({
    run: async (items) => {
      groups.push([...items]);
      return [...items];
    },
    weight: () => 1,
    weightMax: 64,
    weightMin: 4,
    parallelism: () => 2,
  });
  await Promise.all([1, 2, 3, 4].map((i) => b.add(i)));
  t.deepEqual(groups, [[1, 2, 3, 4]], 'four light items: one message');
  groups.length = 0;
  await Promise.all([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((i) => b.add(i)));
  t.deepEqual(groups, [
    [1, 2, 3, 4, 5],
    [6, 7, 8, 9, 10],
  ], 'heavy enough: shared between the workers');
});
