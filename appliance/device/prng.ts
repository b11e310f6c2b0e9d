import { ErrorCode, assert, fail } from '../errors.ts';

const two32 = 2 ** 32;
const two53 = 2 ** 53;
const uint64Mask = (1n << 64n) - 1n;

/**
 * A small seeded pseudo-random generator for reproducible tests and fault injection:
 * xoshiro128** 1.0 (Blackman & Vigna, https://prng.di.unimi.it/xoshiro128starstar.c), seeded
 * through SplitMix64 as its authors recommend. Not for keys, nonces or anything secret.
 */
export class Prng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /** `seed`: any safe integer or bigint; equal seeds give equal sequences on every platform. */
  constructor(seed: number | bigint) {
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
      fail(ErrorCode.InvalidArgument, `prng seed ${seed} must be a safe integer`, { seed });
    }
    let x = BigInt.asUintN(64, BigInt(seed));
    const splitmix64 = (): bigint => {
      x = (x + 0x9e3779b97f4a7c15n) & uint64Mask;
      let z = x;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & uint64Mask;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & uint64Mask;
      return z ^ (z >> 31n);
    };
    const a = splitmix64();
    const b = splitmix64();
    this.#s0 = Number(a & 0xffffffffn);
    this.#s1 = Number(a >> 32n);
    this.#s2 = Number(b & 0xffffffffn);
    this.#s3 = Number(b >> 32n);
    assert(this.#s0 | this.#s1 | this.#s2 | this.#s3, 'xoshiro state is not all zero');
  }

  /** A generator with this exact internal state (for reference test vectors). */
  static fromState(state: readonly [number, number, number, number]): Prng {
    if (state.some((w) => !Number.isInteger(w) || w < 0 || w >= two32) || state.every((w) => w === 0)) {
      fail(ErrorCode.InvalidArgument, 'prng state must be four uint32 words, not all zero', { state });
    }
    const prng = new Prng(0);
    [prng.#s0, prng.#s1, prng.#s2, prng.#s3] = state;
    return prng;
  }

  /** The next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9) >>> 0;
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform in [0, 1), 53 bits of precision. */
  nextFloat(): number {
    return this.#next53() / two53;
  }

  /** Uniform integer in [0, bound), without modulo bias; bound in [1, 2^53]. */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > two53) {
      fail(ErrorCode.InvalidArgument, `prng bound ${bound} must be an integer in [1, 2^53]`, { bound });
    }
    if (bound <= two32) {
      const limit = two32 - (two32 % bound);
      for (;;) {
        const r = this.nextUint32();
        if (r < limit) return r % bound;
      }
    }
    const limit = two53 - (two53 % bound);
    for (;;) {
      const r = this.#next53();
      if (r < limit) return r % bound;
    }
  }

  /** Uniform integer in [min, max], both inclusive. */
  nextIntBetween(min: number, max: number): number {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max < min) {
      fail(ErrorCode.InvalidArgument, `prng range [${min}, ${max}] is not a range of integers`, { min, max });
    }
    return min + this.nextInt(max - min + 1);
  }

  /** True with probability `p` (in [0, 1]). Always consumes one draw, so streams stay aligned. */
  chance(p: number): boolean {
    if (!(p >= 0 && p <= 1)) fail(ErrorCode.InvalidArgument, `probability ${p} outside [0, 1]`, { p });
    return this.nextFloat() < p;
  }

  /** Fills `bytes` with random bytes and returns it. */
  fill<T extends Uint8Array>(bytes: T): T {
    for (let i = 0; i < bytes.length; i += 4) {
      let r = this.nextUint32();
      for (let j = i; j < Math.min(i + 4, bytes.length); j++) {
        bytes[j] = r & 0xff;
        r >>>= 8;
      }
    }
    return bytes;
  }

  /** `length` fresh random bytes. */
  bytes(length: number): Buffer {
    return this.fill(Buffer.alloc(length));
  }

  #next53(): number {
    return (this.nextUint32() >>> 11) * two32 + this.nextUint32();
  }

  /** An independent generator seeded from this one, for sub-streams that must not shift each other. */
  fork(): Prng {
    return new Prng((BigInt(this.nextUint32()) << 32n) | BigInt(this.nextUint32()));
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
