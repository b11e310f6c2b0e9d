const zeroes = Buffer.alloc(64 * 1024);

/** Whether every byte is zero; compares against a static zero page, which is far faster than a byte loop. */
export function isZero(b: Buffer): boolean {
  for (let at = 0; at < b.length; at += zeroes.length) {
    const n = Math.min(zeroes.length, b.length - at);
    if (!b.subarray(at, at + n).equals(zeroes.subarray(0, n))) return false;
  }
  return true;
}
