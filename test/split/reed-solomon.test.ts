/**
 * The Reed-Solomon erasure code over the (m, n) matrix: MDS (every m-subset of fragments decodes)
 * exhaustively for n <= 6 by decoding and for n <= 16 on the generator matrix itself, the
 * systematic and XOR-parity properties the split engine relies on, the frozen coefficients (they
 * are on disk), argument validation and non-mutation of inputs.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { isStripvaultError, ErrorCode } from '../../appliance/errors.ts';
import { gfInvertMatrix, gfMul } from '../../appliance/split/gf256.ts';
import { decodeMatricesMax, erasureCodec, fragmentsMax, parityMatrix } from '../../appliance/split/reed-solomon.ts';

/** xorshift32: reproducible data and subset samples. */
function prng(seed: number): { bytes(n: number): Uint8Array; below(n: number): number } {
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  return {
    bytes: (n) => Uint8Array.from({ length: n }, () => next() & 0xff),
    below: (n) => next() % n,
  };
}

function* subsets(n: number, size: number, start = 0): Generator<number[]> {
  if (size === 0) {
    yield [];
    return;
  }
  for (let i = start; i <= n - size; i++) for (const rest of subsets(n, size - 1, i + 1)) yield [i, ...rest];
}

function geometries(nMax: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let n = 1; n <= nMax; n++) for (let m = 1; m <= n; m++) out.push([m, n]);
  return out;
}

/** Data fragments of one length; some cut at odd offsets from one buffer, as a package split would be. */
function dataFragments(random: ReturnType<typeof prng>, m: number, length: number, shared: boolean): Uint8Array[] {
  if (!shared) return Array.from({ length: m }, () => random.bytes(length));
  const whole = random.bytes(1 + m * length);
  return Array.from({ length: m }, (_, i) => whole.subarray(1 + i * length, 1 + (i + 1) * length));
}

function keep(fragments: readonly Uint8Array[], indices: readonly number[]): (Uint8Array | undefined)[] {
  return fragments.map((f, i) => (indices.includes(i) ? f : undefined));
}

function xorAll(data: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(data[0]!.length);
  for (const d of data) for (let i = 0; i < out.length; i++) out[i]! ^= d[i]!;
  return out;
}

function throwsCode(t: ExecutionContext, fn: () => unknown, code: ErrorCode, what: string): void {
  const error = t.throws(fn, undefined, what);
  t.true(isStripvaultError(error, code), `${what}: expected ${code}, got ${String(error)}`);
}

test('every m-subset of fragments reconstructs the data, for every (m, n) with n <= 6', (t) => {
  const random = prng(1);
  let decodes = 0;
  for (const [m, n] of geometries(6)) {
    const codec = erasureCodec(m, n);
    for (const length of [1, 2, 7, 8, 33, 1001]) {
      for (const shared of [false, true]) {
        const data = dataFragments(random, m, length, shared);
        const expected = data.map((d) => Uint8Array.from(d));
        const fragments = codec.encode(data);
        t.is(fragments.length, n);
        for (const indices of subsets(n, m)) {
          const rebuilt = codec.reconstructData(keep(fragments, indices));
          t.deepEqual(rebuilt, expected, `(${m},${n}) length ${length} from [${indices}]`);
          decodes++;
        }
      }
    }
  }
  t.true(decodes > 1000);
});

test('sampled subsets reconstruct the data for every (m, n) with n <= 16', (t) => {
  const random = prng(2);
  for (const [m, n] of geometries(fragmentsMax)) {
    const codec = erasureCodec(m, n);
    const length = 13 + random.below(20);
    const data = dataFragments(random, m, length, random.below(2) === 1);
    const fragments = codec.encode(data);
    const expected = data.map((d) => Uint8Array.from(d));
    // all-parity-first subsets stress the largest inverses; random subsets of m or more the rest
    const parityFirst = Array.from({ length: Math.min(n, m) }, (_, i) => n - 1 - i);
    t.deepEqual(codec.reconstructData(keep(fragments, parityFirst)), expected, `(${m},${n}) parity-first`);
    for (let sample = 0; sample < 12; sample++) {
      const count = m + random.below(n - m + 1);
      const indices = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = random.below(i + 1);
        [indices[i], indices[j]] = [indices[j]!, indices[i]!];
      }
      const chosen = indices.slice(0, count);
      t.deepEqual(codec.reconstructData(keep(fragments, chosen)), expected, `(${m},${n}) from [${chosen}]`);
    }
  }
});

test('the generator [I; P] is MDS: every m x m row subset is invertible, for every geometry up to n = 16', (t) => {
  let checked = 0;
  let singular = 0;
  for (const [m, n] of geometries(fragmentsMax)) {
    const p = parityMatrix(m, n);
    for (let mask = 0; mask < 1 << n; mask++) {
      // popcount(mask) === m, without building arrays for the other 2^n masks
      let bits = 0;
      for (let v = mask; v !== 0; v &= v - 1) bits++;
      if (bits !== m) continue;
      // Only parity rows matter: the identity rows of the chosen data fragments reduce the
      // determinant to that of P restricted to the missing data columns and chosen parity rows.
      const parityRows: number[] = [];
      const missingColumns: number[] = [];
      for (let i = 0; i < n; i++) {
        if (i < m && !(mask & (1 << i))) missingColumns.push(i);
        if (i >= m && mask & (1 << i)) parityRows.push(i - m);
      }
      const size = parityRows.length;
      checked++;
      if (size === 0) continue;
      const sub = new Uint8Array(size * size);
      parityRows.forEach((r, a) => missingColumns.forEach((c, b) => (sub[a * size + b] = p[r * m + c]!)));
      try {
        gfInvertMatrix(sub, size);
      } catch {
        singular++;
      }
    }
  }
  t.is(singular, 0);
  t.is(checked, geometries(fragmentsMax).reduce((sum, [m, n]) => sum + binomial(n, m), 0));
});

function binomial(n: number, k: number): number {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return r;
}

test('the parity matrix is the scaled Cauchy matrix with ones in its first row and column (frozen: on disk)', (t) => {
  for (const [m, n] of geometries(fragmentsMax)) {
    const p = parityMatrix(m, n);
    t.is(p.length, (n - m) * m);
    for (let j = 0; j < m && n > m; j++) t.is(p[j], 1, `(${m},${n}) row 0`);
    for (let i = 0; i < n - m; i++) t.is(p[i * m], 1, `(${m},${n}) column 0`);
    t.false(p.includes(0), `(${m},${n}) no zero coefficient`);
  }
  // Golden values: a change here changes every parity fragment ever written.
  t.deepEqual(Array.from(parityMatrix(2, 3)), [1, 1]);
  t.deepEqual(Array.from(parityMatrix(3, 5)), [1, 1, 1, 1, 0xc4, 0x53]);
  t.deepEqual(Array.from(parityMatrix(4, 6)), [1, 1, 1, 1, 1, 0xd9, 0x5c, 0xac]);
  t.deepEqual(Array.from(parityMatrix(1, 3)), [1, 1]);
});

test('parity equals an independent byte-by-byte evaluation of P x data', (t) => {
  const random = prng(3);
  for (const [m, n] of [[2, 3], [3, 5], [4, 6], [5, 16], [10, 16], [15, 16]] as const) {
    const p = parityMatrix(m, n);
    const data = dataFragments(random, m, 29, true);
    const fragments = erasureCodec(m, n).encode(data);
    for (let i = 0; i < n - m; i++) {
      const expected = new Uint8Array(29);
      for (let k = 0; k < 29; k++) for (let j = 0; j < m; j++) expected[k]! ^= gfMul(p[i * m + j]!, data[j]![k]!);
      t.deepEqual(fragments[m + i], expected, `(${m},${n}) parity ${i}`);
    }
  }
});

test('encode is systematic and the first parity fragment is the XOR of the data', (t) => {
  const random = prng(4);
  for (const [m, n] of geometries(fragmentsMax)) {
    const data = dataFragments(random, m, 1 + random.below(70), false);
    const fragments = erasureCodec(m, n).encode(data);
    t.is(fragments.length, n);
    for (let i = 0; i < m; i++) t.is(fragments[i], data[i], `(${m},${n}) fragment ${i} is the input`);
    for (let i = m; i < n; i++) {
      t.is(fragments[i]!.length, data[0]!.length);
      t.false(data.some((d) => d.buffer === fragments[i]!.buffer), 'parity is freshly allocated');
    }
    if (n > m) t.deepEqual(fragments[m], xorAll(data), `(${m},${n}) parity 0`);
  }
});

test('m = 1 replicates; m = n has no parity and needs every fragment', (t) => {
  const data = [Uint8Array.from([9, 8, 7, 6, 5])];
  const replicas = erasureCodec(1, 4).encode(data);
  for (const r of replicas) t.deepEqual(r, data[0]);
  t.deepEqual(erasureCodec(1, 4).reconstructData([undefined, undefined, replicas[2], undefined]), data);

  const codec = erasureCodec(3, 3);
  const plain = [Uint8Array.of(1), Uint8Array.of(2), Uint8Array.of(3)];
  const out = codec.encode(plain);
  t.is(out.length, 3);
  out.forEach((f, i) => t.is(f, plain[i]!));
  const back = codec.reconstructData(out);
  back.forEach((f, i) => t.is(f, plain[i]!));
  throwsCode(t, () => codec.reconstructData([plain[0], undefined, plain[2]]), ErrorCode.NotEnoughShares, '3-of-3 missing one');
});

test('reconstructData returns present data fragments as-is and never mutates its inputs', (t) => {
  const random = prng(5);
  const codec = erasureCodec(3, 6);
  const data = dataFragments(random, 3, 57, true);
  const fragments = codec.encode(data);
  const snapshot = fragments.map((f) => Uint8Array.from(f));
  const wholeBefore = Uint8Array.from(new Uint8Array(data[0]!.buffer));

  const all = codec.reconstructData(fragments);
  all.forEach((f, i) => t.is(f, fragments[i]!));

  const slots = [fragments[0], undefined, undefined, fragments[3], undefined, fragments[5]];
  const slotsBefore = slots.slice();
  const rebuilt = codec.reconstructData(slots);
  t.is(rebuilt[0], fragments[0]);
  t.deepEqual(rebuilt[1], snapshot[1]);
  t.deepEqual(rebuilt[2], snapshot[2]);
  t.deepEqual(slots, slotsBefore, 'slot array unchanged');
  fragments.forEach((f, i) => t.deepEqual(f, snapshot[i], `fragment ${i} unchanged`));
  t.deepEqual(new Uint8Array(data[0]!.buffer), wholeBefore, 'shared buffer unchanged');
  // Rebuilt fragments are fresh: writing to them does not reach an input.
  rebuilt[1]!.fill(0);
  fragments.forEach((f, i) => t.deepEqual(f, snapshot[i]));
});

test('zero-length fragments encode and decode', (t) => {
  const codec = erasureCodec(2, 4);
  const fragments = codec.encode([new Uint8Array(0), new Uint8Array(0)]);
  t.deepEqual(fragments.map((f) => f.length), [0, 0, 0, 0]);
  t.deepEqual(codec.reconstructData([undefined, undefined, fragments[2], fragments[3]]), [new Uint8Array(0), new Uint8Array(0)]);
});

test('decoding stays correct past the bound of cached decoding matrices', (t) => {
  const random = prng(6);
  const codec = erasureCodec(8, 16);
  const data = dataFragments(random, 8, 11, false);
  const fragments = codec.encode(data);
  const expected = data.map((d) => Uint8Array.from(d));
  let decodes = 0;
  let failures = 0;
  for (const indices of subsets(16, 8)) {
    const rebuilt = codec.reconstructData(keep(fragments, indices));
    if (!rebuilt.every((f, i) => Buffer.compare(f, expected[i]!) === 0)) failures++;
    if (++decodes > decodeMatricesMax + 300) break;
  }
  t.is(failures, 0);
  t.true(decodes > decodeMatricesMax);
});

test('codecs are cached per geometry', (t) => {
  t.is(erasureCodec(3, 5), erasureCodec(3, 5));
  t.not(erasureCodec(3, 5), erasureCodec(3, 6));
  t.is(erasureCodec(3, 5).m, 3);
  t.is(erasureCodec(3, 5).n, 5);
});

test('invalid geometries are rejected with SV_INVALID_GEOMETRY', (t) => {
  const bad: Array<[number, number]> = [[0, 3], [3, 2], [1, 17], [17, 17], [-1, 3], [1.5, 3], [2, 3.5], [NaN, 3], [2, Infinity]];
  for (const [m, n] of bad) throwsCode(t, () => erasureCodec(m, n), ErrorCode.InvalidGeometry, `(${m},${n})`);
  t.notThrows(() => erasureCodec(1, 1));
  t.notThrows(() => erasureCodec(16, 16));
  t.notThrows(() => erasureCodec(1, 16));
});

test('bad arguments are rejected with the right codes', (t) => {
  const codec = erasureCodec(2, 4);
  const a = new Uint8Array(8);
  const b = new Uint8Array(8);
  const [, , p, q] = codec.encode([a, b]);
  const invalid = ErrorCode.InvalidArgument;
  throwsCode(t, () => codec.encode([a]), invalid, 'too few data fragments');
  throwsCode(t, () => codec.encode([a, b, a]), invalid, 'too many data fragments');
  throwsCode(t, () => codec.encode([a, new Uint8Array(7)]), invalid, 'unequal data lengths');
  throwsCode(t, () => codec.encode([a, 'xy' as unknown as Uint8Array]), invalid, 'not bytes');
  throwsCode(t, () => codec.encode(undefined as unknown as Uint8Array[]), invalid, 'no array');
  throwsCode(t, () => codec.reconstructData([a, b, p]), invalid, 'slot array too short');
  throwsCode(t, () => codec.reconstructData([a, b, p, q, undefined]), invalid, 'slot array too long');
  throwsCode(t, () => codec.reconstructData([a, undefined, new Uint8Array(9), q]), invalid, 'unequal fragment lengths');
  throwsCode(t, () => codec.reconstructData([a, null as unknown as undefined, p, q]), invalid, 'null slot');
  throwsCode(t, () => codec.reconstructData([undefined, undefined, undefined, q]), ErrorCode.NotEnoughShares, 'one of 2');
  throwsCode(t, () => codec.reconstructData([undefined, undefined, undefined, undefined]), ErrorCode.NotEnoughShares, 'none');
  const error = t.throws(() => codec.reconstructData([undefined, b, undefined, undefined]));
  t.like((error as { detail?: unknown }).detail, { m: 2, n: 4, present: 1 });
});
