/**
 * Systematic Reed-Solomon erasure code over GF(2^8): m data fragments, n - m parity fragments,
 * any m of the n rebuild the data. Pure functions on byte arrays, no I/O.
 *
 * Generator matrix G = [I_m ; P], where P is an (n - m) x m Cauchy matrix
 * P[i][j] = 1 / (x_i + y_j) with x_i = m + i and y_j = j (disjoint sets, so no denominator is 0).
 * Every square submatrix of a Cauchy matrix is invertible, hence every m x m submatrix of G is
 * (expand along its identity rows), hence any m fragments decode: the code is MDS. Scaling rows
 * and columns of P by non-zero constants keeps that property, so P's columns are scaled to make
 * its first row all ones and then its rows to make its first column all ones: parity 0 is the
 * plain XOR of the data (2-of-3 encodes and decodes with XOR only), and data fragment 0 enters
 * every parity with coefficient 1 (a copy instead of a table pass).
 *
 * Wire compatibility: parity bytes depend on this exact matrix. Changing the construction changes
 * every stored parity fragment — it would need a new strip format version.
 */

import { fail, ErrorCode, assert } from '../errors.ts';
import { gfInv, gfMul, gfInvertMatrix, mulAddRegion, mulRegion, xorRegion } from './gf256.ts';

/** N <= 16: fragment index sets fit a 16-bit mask, and 16 + 16 distinct Cauchy points fit GF(2^8). */
export const fragmentsMax = 16;
/**
 * Decoding matrices kept per codec (oldest dropped first). Reads normally see a handful of
 * present-index sets (all present, one device down); 1024 covers any pattern a volume of up to
 * 10 strips can show and bounds memory at ~256 KiB per geometry in the worst case.
 */
export const decodeMatricesMax = 1024;

export interface ErasureCodec {
  readonly m: number; // fragments needed
  readonly n: number; // fragments total
  /** data: exactly m fragments of equal length L. Returns n fragments: indices 0..m-1 ARE the inputs
   *  (same objects, systematic code), m..n-1 freshly allocated parity of length L. */
  encode(data: readonly Uint8Array[]): Uint8Array[];
  /** fragments: array of length n, entry i is fragment i or undefined if missing; at least m present,
   *  all present of equal length. Returns the m data fragments (present ones returned as-is,
   *  missing ones reconstructed). Throws StripvaultError SV_NOT_ENOUGH_SHARES if fewer than m. */
  reconstructData(fragments: readonly (Uint8Array | undefined)[]): Uint8Array[];
}

const codecs = new Map<number, ErasureCodec>();

/** The codec for m-of-n, built once per geometry (validated 1 <= m <= n <= 16). */
export function erasureCodec(m: number, n: number): ErasureCodec {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || m > n || n > fragmentsMax) {
    fail(ErrorCode.InvalidGeometry, `erasure geometry must satisfy 1 <= m <= n <= ${fragmentsMax}`, { m, n });
  }
  const key = m * (fragmentsMax + 1) + n;
  let codec = codecs.get(key);
  if (codec === undefined) {
    codec = new ReedSolomonCodec(m, n);
    codecs.set(key, codec);
  }
  return codec;
}

/**
 * The (n - m) x m parity matrix P, row-major. Exported for tests and documentation; the
 * coefficients are part of the on-disk format.
 */
export function parityMatrix(m: number, n: number): Uint8Array {
  assert(1 <= m && m <= n && n <= fragmentsMax, 'geometry validated by caller');
  const rows = n - m;
  const p = new Uint8Array(rows * m);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < m; j++) p[i * m + j] = gfInv((m + i) ^ j);
  }
  if (rows === 0) return p;
  for (let j = 0; j < m; j++) {
    const scale = gfInv(p[j]!);
    for (let i = 0; i < rows; i++) p[i * m + j] = gfMul(p[i * m + j]!, scale);
  }
  for (let i = 1; i < rows; i++) {
    const scale = gfInv(p[i * m]!);
    for (let j = 0; j < m; j++) p[i * m + j] = gfMul(p[i * m + j]!, scale);
  }
  return p;
}

class ReedSolomonCodec implements ErasureCodec {
  readonly m: number;
  readonly n: number;
  readonly #parity: Uint8Array;
  /** Key: bitmask of the m fragment indices decoded from. Value: inverse of G restricted to them. */
  readonly #decodeMatrices = new Map<number, Uint8Array>();

  constructor(m: number, n: number) {
    this.m = m;
    this.n = n;
    this.#parity = parityMatrix(m, n);
    Object.freeze(this);
  }

  encode(data: readonly Uint8Array[]): Uint8Array[] {
    const { m, n } = this;
    if (!Array.isArray(data) || data.length !== m) {
      fail(ErrorCode.InvalidArgument, `encode needs exactly ${m} data fragments`, { m, got: Array.isArray(data) ? data.length : typeof data });
    }
    const length = commonLength(data, 'data fragment');
    const out: Uint8Array[] = data.slice();
    for (let i = 0; i < n - m; i++) {
      const parity = new Uint8Array(length);
      combine(parity, data, this.#parity.subarray(i * m, (i + 1) * m));
      out.push(parity);
    }
    return out;
  }

  reconstructData(fragments: readonly (Uint8Array | undefined)[]): Uint8Array[] {
    const { m, n } = this;
    if (!Array.isArray(fragments) || fragments.length !== n) {
      fail(ErrorCode.InvalidArgument, `reconstructData needs an array of ${n} fragment slots`, { n, got: Array.isArray(fragments) ? fragments.length : typeof fragments });
    }
    // Decode from the present data fragments plus the lowest-indexed parity: deterministic, so
    // the decoding-matrix cache sees few distinct keys, and data fragments cost nothing.
    const chosen: number[] = [];
    let present = 0;
    let length = -1;
    for (let i = 0; i < n; i++) {
      const fragment = fragments[i];
      if (fragment === undefined) continue;
      if (!(fragment instanceof Uint8Array)) {
        fail(ErrorCode.InvalidArgument, 'a fragment slot holds neither a Uint8Array nor undefined', { index: i });
      }
      if (length === -1) length = fragment.length;
      else if (fragment.length !== length) {
        fail(ErrorCode.InvalidArgument, 'fragments differ in length', { index: i, length: fragment.length, expected: length });
      }
      present++;
      if (chosen.length < m) chosen.push(i);
    }
    if (present < m) {
      fail(ErrorCode.NotEnoughShares, `need ${m} of ${n} fragments, have ${present}`, { m, n, present });
    }
    const out = new Array<Uint8Array>(m);
    let missing = 0;
    for (let i = 0; i < m; i++) {
      const fragment = fragments[i];
      if (fragment === undefined) missing++;
      else out[i] = fragment;
    }
    if (missing === 0) return out;

    const inverse = this.#decodeMatrix(chosen);
    const sources = chosen.map((i) => fragments[i]!);
    for (let i = 0; i < m; i++) {
      if (out[i] !== undefined) continue;
      const fragment = new Uint8Array(length);
      combine(fragment, sources, inverse.subarray(i * m, (i + 1) * m));
      out[i] = fragment;
    }
    return out;
  }

  /** Inverse of the m rows of G at `chosen` (ascending): row d rebuilds data fragment d from them. */
  #decodeMatrix(chosen: readonly number[]): Uint8Array {
    const { m } = this;
    let key = 0;
    for (const i of chosen) key |= 1 << i;
    const cached = this.#decodeMatrices.get(key);
    if (cached !== undefined) return cached;
    const rows = new Uint8Array(m * m);
    chosen.forEach((fragment, r) => {
      if (fragment < m) rows[r * m + fragment] = 1;
      else rows.set(this.#parity.subarray((fragment - m) * m, (fragment - m + 1) * m), r * m);
    });
    const inverse = gfInvertMatrix(rows, m); // never singular: the code is MDS
    if (this.#decodeMatrices.size >= decodeMatricesMax) {
      this.#decodeMatrices.delete(this.#decodeMatrices.keys().next().value!);
    }
    this.#decodeMatrices.set(key, inverse);
    return inverse;
  }
}

function commonLength(fragments: readonly unknown[], what: string): number {
  let length = -1;
  for (let i = 0; i < fragments.length; i++) {
    const fragment = fragments[i];
    if (!(fragment instanceof Uint8Array)) fail(ErrorCode.InvalidArgument, `${what} ${i} is not a Uint8Array`, { index: i });
    if (length === -1) length = fragment.length;
    else if (fragment.length !== length) {
      fail(ErrorCode.InvalidArgument, `${what}s differ in length`, { index: i, length: fragment.length, expected: length });
    }
  }
  return length;
}

/** out (fresh, zeroed) = sum over j of coefficients[j] * sources[j]. */
function combine(out: Uint8Array, sources: readonly Uint8Array[], coefficients: Uint8Array): void {
  let first = true;
  for (let j = 0; j < sources.length; j++) {
    const c = coefficients[j]!;
    if (c === 0) continue;
    if (first) mulRegion(out, sources[j]!, c);
    else if (c === 1) xorRegion(out, sources[j]!);
    else mulAddRegion(out, sources[j]!, c);
    first = false;
  }
}
