/**
 * The all-or-nothing transform (AONT-RS style, Resch & Plank 2011).
 *
 * package = C ‖ (K ⊕ SHA-256(C)), C = AES-256-CTR_K(block), K fresh and random per write.
 * Without every byte of C nobody can compute SHA-256(C), so K stays hidden: any M-1 dispersed
 * fragments reveal nothing even to someone holding every session key. K is used for exactly one
 * encryption, so a zero counter block never repeats a keystream.
 */
import { createCipheriv, hash } from 'node:crypto';
import { assert } from '../errors.ts';
import { randomKey } from './random.ts';

export const aontKeyBytes = 32;
const zeroIv = Buffer.alloc(16);

/** Package length for a block: the ciphertext plus the masked key. */
export function packageBytes(blockBytes: number): number {
  return blockBytes + aontKeyBytes;
}

/**
 * Writes the package of `block` into `out` (which must hold at least packageBytes; any
 * bytes beyond it are zeroed padding for the dispersal).
 */
export function aontEncode(block: Uint8Array, out: Buffer): void {
  assert(out.length >= packageBytes(block.length), 'AONT output too small');
  const key = randomKey();
  const cipher = createCipheriv('aes-256-ctr', key, zeroIv);
  const c1 = cipher.update(block);
  const c2 = cipher.final();
  out.set(c1, 0);
  if (c2.length > 0) out.set(c2, c1.length);
  const ciphertext = out.subarray(0, block.length);
  // One-shot hash: a Hash object per block cost more than hashing the 4 KiB.
  const digest = hash('sha256', ciphertext, 'buffer');
  for (let i = 0; i < aontKeyBytes; i++) out[block.length + i] = key[i]! ^ digest[i]!;
  out.fill(0, block.length + aontKeyBytes);
  key.fill(0);
}

/** Inverts aontEncode given the (reassembled) package; returns the block. */
export function aontDecode(pkg: Uint8Array, blockBytes: number): Buffer {
  assert(pkg.length >= packageBytes(blockBytes), 'AONT package too small');
  const ciphertext = pkg.subarray(0, blockBytes);
  const digest = hash('sha256', ciphertext, 'buffer');
  const key = Buffer.allocUnsafe(aontKeyBytes);
  for (let i = 0; i < aontKeyBytes; i++) key[i] = pkg[blockBytes + i]! ^ digest[i]!;
  const decipher = createCipheriv('aes-256-ctr', key, zeroIv);
  const p1 = decipher.update(ciphertext);
  const p2 = decipher.final();
  key.fill(0);
  return p2.length === 0 ? p1 : Buffer.concat([p1, p2]);
}
