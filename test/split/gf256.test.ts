/**
 * GF(2^8) under 0x11d: the field axioms checked exhaustively against a bit-by-bit reference
 * multiplication, known table values, matrix inversion, and the region kernels against scalar
 * arithmetic over every length/alignment combination that takes a different code path.
 */
import test from 'ava';
import { isStripvaultError, ErrorCode } from '../../appliance/errors.ts';
import {
  expTable,
  fieldGroupOrder,
  fieldPolynomial,
  gfDiv,
  gfInv,
  gfInvertMatrix,
  gfMul,
  gfMultiplyMatrices,
  logTable,
  mulAddRegion,
  mulRegion,
  mulTable,
  xorRegion,
} from '../../appliance/split/gf256.ts';

/** Carry-less multiply and reduce mod 0x11d, one bit at a time: shares no tables with the code under test. */
function referenceMul(a: number, b: number): number {
  let product = 0;
  for (let bit = 0; bit < 8; bit++) if (b & (1 << bit)) product ^= a << bit;
  for (let bit = 15; bit >= 8; bit--) if (product & (1 << bit)) product ^= fieldPolynomial << (bit - 8);
  return product;
}

/** xorshift32: reproducible test data. */
function prng(seed: number): (n: number) => Uint8Array {
  let s = seed >>> 0 || 1;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      out[i] = s & 0xff;
    }
    return out;
  };
}

test('exp/log tables hold the known values of GF(2^8) mod 0x11d', (t) => {
  t.is(fieldPolynomial, 0x11d);
  // 2^8 = x^8 = x^4 + x^3 + x^2 + 1 = 0x1d; then doubling with reduction.
  const knownPowers: Array<[number, number]> = [
    [0, 0x01], [1, 0x02], [7, 0x80], [8, 0x1d], [9, 0x3a], [10, 0x74], [11, 0xe8], [12, 0xcd],
    [13, 0x87], [25, 0x03], [254, 0x8e],
  ];
  for (const [power, value] of knownPowers) {
    t.is(expTable[power], value, `2^${power}`);
    t.is(logTable[value], power, `log ${value}`);
  }
  t.is(expTable.length, 2 * fieldGroupOrder);
  for (let i = 0; i < fieldGroupOrder; i++) t.is(expTable[i + fieldGroupOrder], expTable[i]);
  // 2 generates the whole multiplicative group: the first 255 powers are 1..255, each once.
  const seen = new Set(expTable.subarray(0, fieldGroupOrder));
  t.is(seen.size, 255);
  t.false(seen.has(0));
  t.is(gfInv(2), 0x8e);
});

test('multiplication matches the bitwise reference for all 256 x 256 pairs, commutes, has identity 1 and zero', (t) => {
  let mismatches = 0;
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) {
      const p = gfMul(a, b);
      if (p !== referenceMul(a, b) || p !== gfMul(b, a)) mismatches++;
    }
    if (gfMul(a, 1) !== a || gfMul(a, 0) !== 0) mismatches++;
  }
  t.is(mismatches, 0);
});

test('multiplication is associative and distributes over addition (all triples)', (t) => {
  let failures = 0;
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) {
      const ab = gfMul(a, b);
      for (let c = 0; c < 256; c++) {
        if (gfMul(ab, c) !== gfMul(a, gfMul(b, c))) failures++;
        if (gfMul(a, b ^ c) !== (ab ^ gfMul(a, c))) failures++;
      }
    }
  }
  t.is(failures, 0);
});

test('every non-zero element has an inverse and division undoes multiplication (all pairs)', (t) => {
  let failures = 0;
  for (let a = 1; a < 256; a++) {
    if (gfMul(a, gfInv(a)) !== 1) failures++;
    if (gfInv(gfInv(a)) !== a) failures++;
  }
  for (let a = 0; a < 256; a++) {
    for (let b = 1; b < 256; b++) {
      const q = gfDiv(a, b);
      if (gfMul(q, b) !== a || q !== gfMul(a, gfInv(b))) failures++;
    }
  }
  t.is(failures, 0);
  t.true(isStripvaultError(t.throws(() => gfInv(0)), ErrorCode.InvalidArgument));
  t.true(isStripvaultError(t.throws(() => gfDiv(7, 0)), ErrorCode.InvalidArgument));
});

test('multiplication tables agree with gfMul for every coefficient', (t) => {
  let failures = 0;
  for (let c = 0; c < 256; c++) {
    const table = mulTable(c);
    if (table.length !== 256) failures++;
    for (let x = 0; x < 256; x++) if (table[x] !== referenceMul(c, x)) failures++;
  }
  t.is(failures, 0);
});

test('matrix inversion: A * inverse(A) = I, and singular matrices are rejected', (t) => {
  const random = prng(7);
  for (let size = 1; size <= 16; size++) {
    // Vandermonde on distinct points: always invertible.
    const a = new Uint8Array(size * size);
    for (let r = 0; r < size; r++) for (let c = 0; c < size; c++) a[r * size + c] = expTable[(r * c) % fieldGroupOrder]!;
    const identity = new Uint8Array(size * size);
    for (let i = 0; i < size; i++) identity[i * size + i] = 1;
    const inverse = gfInvertMatrix(a, size);
    t.deepEqual(gfMultiplyMatrices(a, inverse, size, size, size), identity, `vandermonde ${size}`);
    t.deepEqual(gfMultiplyMatrices(inverse, a, size, size, size), identity);

    // A random matrix is usually invertible; either answer must be consistent.
    const r = random(size * size);
    let rInverse: Uint8Array | undefined;
    try {
      rInverse = gfInvertMatrix(r, size);
    } catch (e) {
      t.true(isStripvaultError(e, ErrorCode.InvalidArgument));
    }
    if (rInverse !== undefined) t.deepEqual(gfMultiplyMatrices(r, rInverse, size, size, size), identity);
  }
  // Two equal rows.
  const singular = Uint8Array.from([1, 2, 3, 4, 5, 6, 1, 2, 3]);
  t.true(isStripvaultError(t.throws(() => gfInvertMatrix(singular, 3)), ErrorCode.InvalidArgument));
  t.deepEqual(singular, Uint8Array.from([1, 2, 3, 4, 5, 6, 1, 2, 3]), 'input not modified');
  // Third row = row 0 + 2 * row 1 (a dependency only elimination finds).
  const dependent = Uint8Array.from([1, 2, 3, 4, 5, 6, 1 ^ gfMul(2, 4), 2 ^ gfMul(2, 5), 3 ^ gfMul(2, 6)]);
  t.throws(() => gfInvertMatrix(dependent, 3));
});

test('region kernels equal scalar arithmetic at every length and alignment', (t) => {
  const random = prng(99);
  const coefficients = [0, 1, 2, 0x53, 0x8e, 0xff];
  let failures = 0;
  let cases = 0;
  for (let length = 0; length <= 41; length++) {
    for (let dstOffset = 0; dstOffset < 8; dstOffset++) {
      for (let srcOffset = 0; srcOffset < 8; srcOffset++) {
        const srcBuffer = random(length + 16);
        const src = srcBuffer.subarray(srcOffset, srcOffset + length);
        const srcBefore = Uint8Array.from(srcBuffer);
        const dstInitial = random(length);
        const makeDst = (): Uint8Array => {
          const buffer = new Uint8Array(length + 16).fill(0xa5);
          const dst = buffer.subarray(dstOffset, dstOffset + length);
          dst.set(dstInitial);
          return dst;
        };
        const guardsIntact = (dst: Uint8Array): boolean => {
          const whole = new Uint8Array(dst.buffer);
          for (let i = 0; i < whole.length; i++) {
            if ((i < dstOffset || i >= dstOffset + length) && whole[i] !== 0xa5) return false;
          }
          return true;
        };

        const x = makeDst();
        xorRegion(x, src);
        for (let i = 0; i < length; i++) if (x[i] !== (dstInitial[i]! ^ src[i]!)) failures++;
        if (!guardsIntact(x)) failures++;

        for (const c of coefficients) {
          const p = makeDst();
          mulRegion(p, src, c);
          const q = makeDst();
          mulAddRegion(q, src, c);
          for (let i = 0; i < length; i++) {
            if (p[i] !== referenceMul(c, src[i]!)) failures++;
            if (q[i] !== (dstInitial[i]! ^ referenceMul(c, src[i]!))) failures++;
          }
          if (!guardsIntact(p) || !guardsIntact(q)) failures++;
        }
        for (let i = 0; i < srcBuffer.length; i++) if (srcBuffer[i] !== srcBefore[i]) failures++;
        cases++;
      }
    }
  }
  t.is(cases, 42 * 64);
  t.is(failures, 0);
});

test('region kernels on large regions (word loops) equal scalar arithmetic', (t) => {
  const random = prng(3);
  for (const [dstOffset, srcOffset] of [[0, 0], [0, 4], [0, 3], [5, 1], [6, 6]] as const) {
    const length = 4099;
    const src = random(length + 8).subarray(srcOffset, srcOffset + length);
    const initial = random(length);
    const dst = new Uint8Array(length + 8).subarray(dstOffset, dstOffset + length);
    dst.set(initial);
    mulAddRegion(dst, src, 0x1d);
    const expected = initial.map((v, i) => v ^ referenceMul(0x1d, src[i]!));
    t.deepEqual(dst, expected, `offsets ${dstOffset}/${srcOffset}`);
    xorRegion(dst, src);
    t.deepEqual(dst, expected.map((v, i) => v ^ src[i]!));
  }
});
