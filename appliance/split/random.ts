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
