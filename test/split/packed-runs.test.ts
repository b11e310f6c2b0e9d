import test from 'ava';
import type { SealRun } from '../../appliance/split/batch.ts';
import { packRuns, packedRunRowWidth, unpackRuns } from '../../appliance/split/packed-runs.ts';

const runs: SealRun[] = [
  { first: 0, count: 1, generation: 1, epoch: 0, zero: null, targets: [0, 1, 2] },
  { first: 2 ** 40, count: 3, generation: 2 ** 48 - 1, epoch: 7, zero: new Uint8Array([1, 0, 1]), targets: [1, 4] },
  { first: 5, count: 2, generation: 9, epoch: 1, zero: new Uint8Array([0, 0]), targets: [255] },
];

test('seal runs packed into rows and bytes unpack to the same runs, also after a structured clone', (t) => {
  const packed = packRuns(runs);
  t.is(packed.rows.length, runs.length * packedRunRowWidth);
  const back = unpackRuns(structuredClone(packed));
  t.deepEqual(
    back.map((r) => ({ ...r, zero: r.zero && Array.from(r.zero) })),
    runs.map((r) => ({ ...r, zero: r.zero && Array.from(r.zero) })),
  );
  t.deepEqual(unpackRuns(packRuns([])), []);
});

test('runs that cannot be packed are refused', (t) => {
  t.throws(() => packRuns([{ ...runs[0]!, targets: [256] }]), { message: /strip index/ });
  t.throws(() => packRuns([{ ...runs[0]!, targets: [-1] }]), { message: /strip index/ });
  t.throws(() => packRuns([{ ...runs[0]!, count: 2, zero: new Uint8Array(3) }]), { message: /zero mask/ });
});

test('packed runs that do not fit their bytes, or hold no whole numbers, are refused', (t) => {
  const good = packRuns([runs[1]!]);
  const bad = (edit: (rows: Float64Array) => void, bytes = good.bytes) => {
    const rows = good.rows.slice();
    edit(rows);
    return () => unpackRuns({ rows, bytes });
  };
  t.throws(bad(() => undefined, good.bytes.subarray(0, 3)), { message: /lies in its bytes/ }, 'the zero mask is cut off');
  t.throws(bad((r) => (r[5] = good.bytes.length)), { message: /lies in its bytes/ }, 'targets past the end');
  t.throws(bad((r) => (r[6] = 1e6)), { message: /lies in its bytes/ });
  t.throws(bad((r) => (r[4] = 1e6)), { message: /lies in its bytes/ });
  t.throws(bad((r) => (r[4] = -2)), { message: /whole numbers/ });
  t.throws(bad((r) => (r[0] = -1)), { message: /whole numbers/ });
  t.throws(bad((r) => (r[1] = Number.NaN)), { message: /whole numbers/ });
  t.throws(bad((r) => (r[2] = 1.5)), { message: /whole numbers/ });
  t.throws(bad((r) => (r[3] = Infinity)), { message: /whole numbers/ });
  t.throws(() => unpackRuns({ rows: new Float64Array(packedRunRowWidth + 1), bytes: new Uint8Array(0) }), { message: /packed seal runs/ });
  t.throws(() => unpackRuns({ rows: [1, 2, 3] as unknown as Float64Array, bytes: new Uint8Array(0) }), { message: /packed seal runs/ });
});
