/**
 * The outstanding write list's file format, version 1: the one place that knows its byte offsets.
 * docs/owl.md explains the design; keep the two in step.
 *
 * | region        | offset              | bytes               | contents                                      |
 * |---------------|---------------------|---------------------|-----------------------------------------------|
 * | superblock A  | 0                   | owlSuperBytes (4 K) | where the oldest outstanding record is        |
 * | superblock B  | 4096                | owlSuperBytes       | second copy, written alternately; newer valid wins |
 * | ring          | owlRingOffset (8 K) | ringBytes           | records, each owlRecordAlign-aligned          |
 *
 * Superblock (checksummed; the copy with the larger counter wins):
 *
 * | offset | bytes | field                                                          |
 * |--------|-------|----------------------------------------------------------------|
 * | 0      | 8     | magic "SVOWLSB\0"                                               |
 * | 8      | 2     | format version (u16) = 1                                        |
 * | 10     | 6     | reserved, 0                                                     |
 * | 16     | 16    | volume id                                                       |
 * | 32     | 8     | ring bytes (u64)                                                |
 * | 40     | 8     | counter (u64): bumped on every superblock write                 |
 * | 48     | 8     | retired (u64): every record with seq <= this is retired         |
 * | 56     | 8     | tail (u64): ring offset where record retired+1 starts (if any)  |
 * | 64     | 32    | SHA-256 of bytes [0, 64)                                        |
 *
 * Record (header checksummed; the payload is the sealed shares themselves — every share is
 * AES-GCM authenticated for its strip, address and generation, so a torn or stale payload is
 * caught at replay without a second checksum on the write path):
 *
 * | offset | bytes | field                                                          |
 * |--------|-------|----------------------------------------------------------------|
 * | 0      | 8     | magic "SVOWLRC\0"                                               |
 * | 8      | 8     | seq (u64): consecutive, one per record                          |
 * | 16     | 16    | volume id                                                       |
 * | 32     | 8     | first block address (u64)                                       |
 * | 40     | 4     | block count (u32)                                               |
 * | 44     | 4     | epoch (u32)                                                     |
 * | 48     | 8     | generation of the first block (u64)                             |
 * | 56     | 4     | target strips bitmap (u32): whose shares follow, by strip index |
 * | 60     | 4     | slot bytes (u32)                                                |
 * | 64     | 4     | payload bytes (u32) = targets × count × slot bytes              |
 * | 68     | 28    | reserved, 0                                                     |
 * | 96     | 32    | SHA-256 of bytes [0, 96)                                        |
 * | 128    | payload | for each target strip in index order: count × slotBytes of slots |
 *
 * No plaintext and no key is ever in this file: only what the strips themselves will hold.
 */
import { hash } from 'node:crypto';
import { ErrorCode, assert, fail } from '../errors.ts';
import { sha256Into } from '../split/native-seal.ts';

export const owlFormatVersion = 1;
export const owlSuperBytes = 4096;
export const owlRingOffset = 2 * owlSuperBytes;
export const owlRecordHeaderBytes = 128;
/** Records start on these boundaries: recovery finds the next record from a record's length alone. */
export const owlRecordAlign = 512;
/** Default ring size; a volume's ring is at least owlRingRecordsMin records of the largest size. */
export const owlRingBytesDefault = 64 * 1024 * 1024;
export const owlRingBytesMax = 4 * 1024 * 1024 * 1024;
/** One record's payload at most; a write larger than this is journalled as several records. */
export const owlRecordPayloadBytesMax = 24 * 1024 * 1024;
/** The ring holds at least this many maximal records, so a full ring still admits a write. */
export const owlRingRecordsMin = 2;

const superMagic = Buffer.from('SVOWLSB\0', 'latin1');
const recordMagic = Buffer.from('SVOWLRC\0', 'latin1');
const superChecksumOffset = 64;
const recordChecksumOffset = 96;

export interface OwlSuperblock {
  readonly volumeId: Buffer;
  readonly ringBytes: number;
  readonly counter: number;
  readonly retired: number;
  readonly tail: number;
}

export interface OwlRecordHeader {
  readonly seq: number;
  readonly volumeId: Buffer;
  readonly first: number;
  readonly count: number;
  readonly epoch: number;
  readonly generation: number;
  /** Strip indices whose shares the payload holds, ascending. */
  readonly targets: readonly number[];
  readonly slotBytes: number;
  readonly payloadBytes: number;
}

function sha256(b: Buffer): Buffer {
  // One-shot: a Hash object per record header cost more than hashing its 68 bytes.
  return hash('sha256', b, 'buffer');
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.NaN : Number(v);
}

/** Bytes a record with this payload occupies in the ring, alignment included. */
export function owlRecordBytes(payloadBytes: number): number {
  return Math.ceil((owlRecordHeaderBytes + payloadBytes) / owlRecordAlign) * owlRecordAlign;
}

export function encodeOwlSuperblock(s: OwlSuperblock): Buffer {
  const buf = Buffer.alloc(owlSuperBytes);
  superMagic.copy(buf, 0);
  buf.writeUInt16BE(owlFormatVersion, 8);
  s.volumeId.copy(buf, 16);
  buf.writeBigUInt64BE(BigInt(s.ringBytes), 32);
  buf.writeBigUInt64BE(BigInt(s.counter), 40);
  buf.writeBigUInt64BE(BigInt(s.retired), 48);
  buf.writeBigUInt64BE(BigInt(s.tail), 56);
  sha256(buf.subarray(0, superChecksumOffset)).copy(buf, superChecksumOffset);
  return buf;
}

/** Null for a copy that is not a valid superblock (never written, torn, another format). */
export function decodeOwlSuperblock(buf: Buffer): OwlSuperblock | null {
  if (buf.length < owlSuperBytes || !buf.subarray(0, 8).equals(superMagic)) return null;
  if (!sha256(buf.subarray(0, superChecksumOffset)).equals(buf.subarray(superChecksumOffset, superChecksumOffset + 32))) return null;
  if (buf.readUInt16BE(8) !== owlFormatVersion) {
    fail(ErrorCode.OwlCorrupt, `outstanding write list format ${buf.readUInt16BE(8)} is not supported`);
  }
  const s = {
    volumeId: Buffer.from(buf.subarray(16, 32)),
    ringBytes: u64(buf, 32),
    counter: u64(buf, 40),
    retired: u64(buf, 48),
    tail: u64(buf, 56),
  };
  if (![s.ringBytes, s.counter, s.retired, s.tail].every(Number.isSafeInteger)) return null;
  return s;
}

/**
 * A safe integer as 8 big-endian bytes, without a BigInt: one header is encoded per journal record,
 * and the BigInts, the zero-filled buffer of its own and the closure it used to make were a
 * measurable share of a 4 KiB random write's allocation.
 */
function writeU64(buf: Buffer, v: number, at: number): void {
  assert(Number.isSafeInteger(v) && v >= 0, 'OWL header field is a non-negative safe integer');
  buf.writeUInt32BE(Math.floor(v / 4294967296), at);
  buf.writeUInt32BE(v >>> 0, at + 4);
}

export function encodeOwlRecordHeader(h: OwlRecordHeader): Buffer {
  // From Node's shared pool, so every byte is written or cleared below.
  assert(h.volumeId.length === 16, 'OWL header volume id');
  const buf = Buffer.allocUnsafe(owlRecordHeaderBytes);
  recordMagic.copy(buf, 0);
  writeU64(buf, h.seq, 8);
  h.volumeId.copy(buf, 16);
  writeU64(buf, h.first, 32);
  buf.writeUInt32BE(h.count, 40);
  buf.writeUInt32BE(h.epoch, 44);
  writeU64(buf, h.generation, 48);
  let mask = 0;
  for (const t of h.targets) mask = (mask | (1 << t)) >>> 0;
  buf.writeUInt32BE(mask, 56);
  buf.writeUInt32BE(h.slotBytes, 60);
  buf.writeUInt32BE(h.payloadBytes, 64);
  buf.fill(0, 68, recordChecksumOffset);
  sha256Into(buf, 0, recordChecksumOffset, buf, recordChecksumOffset);
  return buf;
}

/** Null for bytes that are not an intact record header (free space, a torn write, old payload). */
export function decodeOwlRecordHeader(buf: Buffer): OwlRecordHeader | null {
  if (buf.length < owlRecordHeaderBytes || !buf.subarray(0, 8).equals(recordMagic)) return null;
  if (!sha256(buf.subarray(0, recordChecksumOffset)).equals(buf.subarray(recordChecksumOffset, recordChecksumOffset + 32))) return null;
  const mask = buf.readUInt32BE(56);
  const targets: number[] = [];
  for (let i = 0; i < 32; i++) if (mask & (1 << i)) targets.push(i);
  const h: OwlRecordHeader = {
    seq: u64(buf, 8),
    volumeId: Buffer.from(buf.subarray(16, 32)),
    first: u64(buf, 32),
    count: buf.readUInt32BE(40),
    epoch: buf.readUInt32BE(44),
    generation: u64(buf, 48),
    targets,
    slotBytes: buf.readUInt32BE(60),
    payloadBytes: buf.readUInt32BE(64),
  };
  // The checksum makes these a writer's bug, not noise: refuse to replay what we cannot trust.
  if (
    !Number.isSafeInteger(h.seq) ||
    !Number.isSafeInteger(h.first) ||
    !Number.isSafeInteger(h.generation) ||
    h.count < 1 ||
    h.slotBytes < 1 ||
    targets.length < 1 ||
    h.payloadBytes !== targets.length * h.count * h.slotBytes ||
    h.payloadBytes > owlRecordPayloadBytesMax
  ) {
    fail(ErrorCode.OwlCorrupt, 'outstanding write list record header is inconsistent', { seq: h.seq });
  }
  return h;
}
