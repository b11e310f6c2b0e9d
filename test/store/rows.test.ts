import test from 'ava';
import { rowDate, rowInteger, rowObject, rowOneOf, rowString } from '../../appliance/store/rows.ts';

test('integers arrive as number, bigint or string and leave as safe numbers', (t) => {
  for (const value of [42, 42n, '42']) t.is(rowInteger({ c: value }, 'c'), 42);
  t.is(rowInteger({ c: String(Number.MAX_SAFE_INTEGER) }, 'c'), Number.MAX_SAFE_INTEGER);
  t.is(rowInteger({ c: BigInt(Number.MAX_SAFE_INTEGER) }, 'c'), Number.MAX_SAFE_INTEGER);
  for (const value of ['9007199254740992', 2n ** 63n - 1n, 2 ** 53, 1.5, '1.5', '', 'x', null, undefined]) {
    t.throws(() => rowInteger({ c: value }, 'c'), { message: /invariant violated: store column c/ }, String(value));
  }
});

test('other columns are checked for their type', (t) => {
  t.is(rowString({ c: 'a' }, 'c'), 'a');
  t.throws(() => rowString({ c: 1 }, 'c'));
  const now = new Date();
  t.is(rowDate({ c: now }, 'c'), now);
  t.throws(() => rowDate({ c: now.toISOString() }, 'c'));
  t.throws(() => rowDate({ c: new Date(Number.NaN) }, 'c'));
  t.is(rowOneOf({ c: 'b' }, 'c', ['a', 'b']), 'b');
  t.throws(() => rowOneOf({ c: 'z' }, 'c', ['a', 'b']));
  t.deepEqual(rowObject({ c: { k: 1 } }, 'c'), { k: 1 });
  for (const value of [null, [1], 'x']) t.throws(() => rowObject({ c: value }, 'c'));
});
