/**
 * Fresh random keys for the data path. Each call to crypto.randomBytes costs a syscall-ish round
 * trip; drawing 32-byte keys from a pooled buffer refilled by randomFillSync keeps seal cheap at
 * 4 KiB blocks. Every pool byte is handed out once and then zeroed, so no key is ever issued twice.
 */
import { randomFillSync } from 'node:crypto';

const poolBytes = 8192;
const pool = Buffer.alloc(poolBytes);
let poolOffset = poolBytes;

export function randomKey(bytes = 32): Buffer {
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > poolBytes) throw new RangeError(`randomKey: bad length ${bytes}`);
  if (poolOffset + bytes > poolBytes) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const key = Buffer.from(pool.subarray(poolOffset, poolOffset + bytes));
  pool.fill(0, poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return key;
}

/**
 * Bytes per refill of the pool that withRandomBytes draws from. randomFillSync costs about 1.5 µs a
 * call whatever its size up to a few KiB (2.1 µs for 32 bytes, 11 µs for 64 KiB, measured), and a
 * native seal drew its per-block keys with a call of its own: about a microsecond per 4 KiB random
 * write. One refill now serves 2048 keys.
 */
export const randomBulkBytes = 64 * 1024;
const bulk = Buffer.alloc(randomBulkBytes);
let bulkOffset = randomBulkBytes;
let bulkInUse = false;

/**
 * Runs `use` with `bytes` fresh random bytes and clears them when it returns. The bytes are valid
 * only while `use` runs (synchronously): they are a view of a pool, and every pool byte is handed
 * out once. A call nested in `use`, or one larger than the pool, gets bytes of its own.
 */
export function withRandomBytes<T>(bytes: number, use: (b: Buffer) => T): T {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`withRandomBytes: bad length ${bytes}`);
  if (bulkInUse || bytes > randomBulkBytes) {
    const own = randomFillSync(Buffer.allocUnsafe(bytes));
    try {
      return use(own);
    } finally {
      own.fill(0);
    }
  }
  if (bulkOffset + bytes > randomBulkBytes) {
    randomFillSync(bulk);
    bulkOffset = 0;
  }
  const view = bulk.subarray(bulkOffset, bulkOffset + bytes);
  bulkOffset += bytes;
  bulkInUse = true;
  try {
    return use(view);
  } finally {
    view.fill(0);
    bulkInUse = false;
  }
}
