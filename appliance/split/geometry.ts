import { ErrorCode, fail } from '../errors.ts';

/** N is bounded by the one-byte strip index in share nonces and labels, and by the codec. */
export const sharesMax = 16;
/** Primary block sizes are powers of two in this range: below 512 nothing real writes, above 1 MiB a
 *  single read-modify-write would hold too much memory per request. */
export const blockBytesMin = 512;
export const blockBytesMax = 1 << 20;
export const blockBytesDefault = 4096;

export interface Geometry {
  readonly m: number;
  readonly n: number;
}

export function validateGeometry(m: number, n: number): Geometry {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || n < m || n > sharesMax) {
    fail(ErrorCode.InvalidGeometry, `impossible geometry ${m}-of-${n}: need 1 <= M <= N <= ${sharesMax}`, { m, n });
  }
  return Object.freeze({ m, n });
}

export function validateBlockBytes(blockBytes: number): number {
  if (
    !Number.isInteger(blockBytes) ||
    blockBytes < blockBytesMin ||
    blockBytes > blockBytesMax ||
    (blockBytes & (blockBytes - 1)) !== 0
  ) {
    fail(ErrorCode.InvalidGeometry, `block size ${blockBytes} must be a power of two in [${blockBytesMin}, ${blockBytesMax}]`, {
      blockBytes,
    });
  }
  return blockBytes;
}
