/**
 * Recognisable block contents for crash tests. Every byte a crash test writes is derived from a
 * (seed, write number) or (pattern, block) pair, so whatever a block reads back after a crash can
 * be named: which write it came from, or that it came from none.
 */
import { createHash } from 'node:crypto';
import { Prng } from '../../appliance/device/prng.ts';

export const crashBlockBytes = 4096;

/** Stamped at the start of every whole block a crash workload writes: magic, seed, write, block. */
export const stampMagic = Buffer.from('SVCRASH1', 'latin1');
const stampBytes = stampMagic.length + 12;

const u32 = 2 ** 32;

/** The bytes of model write `write` under `seed` covering [offset, offset + length). */
export function writeBytes(seed: number, write: number, offset: number, length: number, blockBytes = crashBlockBytes): Buffer {
  const data = new Prng((BigInt(seed % u32) << 32n) | BigInt(write % u32)).bytes(length);
  const firstWhole = Math.ceil(offset / blockBytes);
  for (let b = firstWhole; (b + 1) * blockBytes <= offset + length; b++) stamp(data, b * blockBytes - offset, seed, write, b);
  return data;
}

function stamp(into: Buffer, at: number, seed: number, write: number, block: number): void {
  if (into.length - at < stampBytes) return;
  stampMagic.copy(into, at);
  into.writeUInt32BE(seed % u32, at + 8);
  into.writeUInt32BE(write % u32, at + 12);
  into.writeUInt32BE(block % u32, at + 16);
}

/** What a block's stamp says, if it has one (a hint for reports; equality decides). */
export function readStamp(block: Buffer): { seed: number; write: number; block: number } | null {
  if (block.length < stampBytes || !block.subarray(0, stampMagic.length).equals(stampMagic)) return null;
  return { seed: block.readUInt32BE(8), write: block.readUInt32BE(12), block: block.readUInt32BE(16) };
}

/**
 * A per-block pattern: `tag` (e.g. "A", "B") and the block number in a header, then bytes seeded
 * by both, so a block of pattern A at address x differs from A at y and from B at x.
 */
export function patternBlock(tag: string, block: number, blockBytes = crashBlockBytes): Buffer {
  const seed = createHash('sha256').update(`${tag}:${block}`).digest().readBigUInt64BE(0);
  const out = new Prng(seed).bytes(blockBytes);
  const header = Buffer.from(`SVPAT ${tag} ${block} `, 'latin1');
  header.copy(out, 0, 0, Math.min(header.length, blockBytes));
  return out;
}

/** `blocks` consecutive pattern blocks starting at block `first`. */
export function patternRange(tag: string, first: number, blocks: number, blockBytes = crashBlockBytes): Buffer {
  const out = Buffer.allocUnsafe(blocks * blockBytes);
  for (let i = 0; i < blocks; i++) patternBlock(tag, first + i, blockBytes).copy(out, i * blockBytes);
  return out;
}

/** A 4-byte fio buffer pattern repeated over a block, as fio's --buffer_pattern=0x... writes it. */
export function repeatedPattern(word: number, blockBytes = crashBlockBytes): Buffer {
  const out = Buffer.allocUnsafe(blockBytes);
  for (let i = 0; i < blockBytes; i += 4) out.writeUInt32BE(word >>> 0, i);
  return out;
}

export function digest(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex').slice(0, 32);
}
