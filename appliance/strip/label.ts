/** The plaintext share label at the start of every strip (offset table in layout.ts). */
import { createHash } from 'node:crypto';
import { ErrorCode, fail } from '../errors.ts';
import { blockBytesMax, blockBytesMin, sharesMax } from '../split/geometry.ts';
import { volumeIdBytes } from '../split/share-binding.ts';
import {
  dataOffset,
  formatVersion,
  headerBytes,
  headerOffset,
  labelBytes,
  labelChecksumOffset,
  labelCoveredBytes,
  labelMagic,
  slotBytesFor,
  statusLogBytes,
  statusLogOffset,
} from './layout.ts';

export const originIdBytes = 16;

export interface StripLabel {
  readonly volumeId: Buffer;
  readonly stripIndex: number;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly slotBytes: number;
  readonly slotCount: number;
  readonly stripBytes: number;
  readonly dataOffset: number;
  readonly originId: Buffer;
  readonly createdAtMs: number;
}

export function encodeLabel(label: StripLabel): Buffer {
  const buf = Buffer.alloc(labelBytes);
  labelMagic.copy(buf, 0);
  buf.writeUInt16BE(formatVersion, 8);
  buf.writeUInt16BE(labelCoveredBytes, 10);
  buf.writeUInt32BE(0, 12);
  label.volumeId.copy(buf, 16);
  buf.writeUInt8(label.stripIndex, 32);
  buf.writeUInt8(label.m, 33);
  buf.writeUInt8(label.n, 34);
  buf.writeUInt32BE(label.blockBytes, 36);
  buf.writeUInt32BE(label.slotBytes, 40);
  buf.writeBigUInt64BE(BigInt(label.slotCount), 48);
  buf.writeBigUInt64BE(BigInt(label.stripBytes), 56);
  buf.writeBigUInt64BE(BigInt(headerOffset), 64);
  buf.writeBigUInt64BE(BigInt(headerBytes), 72);
  buf.writeBigUInt64BE(BigInt(statusLogOffset), 80);
  buf.writeBigUInt64BE(BigInt(statusLogBytes), 88);
  buf.writeBigUInt64BE(BigInt(label.dataOffset), 96);
  label.originId.copy(buf, 104);
  buf.writeBigUInt64BE(BigInt(label.createdAtMs), 120);
  createHash('sha256').update(buf.subarray(0, labelChecksumOffset)).digest().copy(buf, labelChecksumOffset);
  // Decoding what we just encoded catches an inconsistent label before it reaches a disk.
  decodeLabel(buf);
  return buf;
}

function u64(buf: Buffer, offset: number, field: string): number {
  const v = buf.readBigUInt64BE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) inconsistent(`${field} too large`, { field });
  return Number(v);
}

function inconsistent(message: string, detail: Record<string, unknown>): never {
  fail(ErrorCode.StripInconsistent, `strip label: ${message}`, detail);
}

/** Parses and checks a label; every way it can be wrong is a typed StripvaultError. */
export function decodeLabel(buf: Uint8Array): StripLabel {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < labelCoveredBytes) {
    fail(ErrorCode.StripTruncated, `strip label truncated: ${b.length} of ${labelCoveredBytes} bytes`, { bytes: b.length });
  }
  if (!b.subarray(0, 8).equals(labelMagic)) fail(ErrorCode.StripBadMagic, 'not a stripvault strip (bad label magic)');
  const version = b.readUInt16BE(8);
  if (version !== formatVersion) {
    fail(ErrorCode.StripUnknownVersion, `strip format version ${version} is not supported (this build reads ${formatVersion})`, {
      version,
    });
  }
  const expected = createHash('sha256').update(b.subarray(0, labelChecksumOffset)).digest();
  if (!expected.equals(b.subarray(labelChecksumOffset, labelChecksumOffset + 32))) {
    fail(ErrorCode.StripChecksum, 'strip label checksum mismatch (corrupted label)');
  }
  if (b.readUInt16BE(10) !== labelCoveredBytes) inconsistent('covered length', { covered: b.readUInt16BE(10) });
  const label: StripLabel = {
    volumeId: Buffer.from(b.subarray(16, 16 + volumeIdBytes)),
    stripIndex: b.readUInt8(32),
    m: b.readUInt8(33),
    n: b.readUInt8(34),
    blockBytes: b.readUInt32BE(36),
    slotBytes: b.readUInt32BE(40),
    slotCount: u64(b, 48, 'slotCount'),
    stripBytes: u64(b, 56, 'stripBytes'),
    dataOffset: u64(b, 96, 'dataOffset'),
    originId: Buffer.from(b.subarray(104, 104 + originIdBytes)),
    createdAtMs: u64(b, 120, 'createdAt'),
  };
  if (label.m < 1 || label.n < label.m || label.n > sharesMax) inconsistent(`geometry ${label.m}-of-${label.n}`, { m: label.m, n: label.n });
  if (label.stripIndex >= label.n) inconsistent(`strip index ${label.stripIndex} >= N ${label.n}`, { stripIndex: label.stripIndex });
  const bb = label.blockBytes;
  if (bb < blockBytesMin || bb > blockBytesMax || (bb & (bb - 1)) !== 0) inconsistent(`block size ${bb}`, { blockBytes: bb });
  if (label.slotBytes !== slotBytesFor(bb, label.m)) inconsistent(`slot size ${label.slotBytes}`, { slotBytes: label.slotBytes });
  if (
    u64(b, 64, 'headerOffset') !== headerOffset ||
    u64(b, 72, 'headerBytes') !== headerBytes ||
    u64(b, 80, 'statusLogOffset') !== statusLogOffset ||
    u64(b, 88, 'statusLogBytes') !== statusLogBytes ||
    label.dataOffset !== dataOffset
  ) {
    inconsistent('region offsets do not match format version 1', {});
  }
  if (label.slotCount < 1) inconsistent('no data slots', {});
  if (label.dataOffset + label.slotCount * label.slotBytes > label.stripBytes) {
    inconsistent('data slots extend past the strip', { slotCount: label.slotCount, stripBytes: label.stripBytes });
  }
  return label;
}
