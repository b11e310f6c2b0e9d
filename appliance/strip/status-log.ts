/**
 * The strip's status log: a ring of fixed-size records (offset table in layout.ts) saying what
 * happened to this strip — created, opened, header rewritten, found degraded, rebuilt. Records hold
 * codes and counters only, never data or keys; each carries a truncated SHA-256 so a torn or
 * corrupted record is skipped rather than believed.
 *
 * | offset | bytes | field                          |
 * |--------|-------|--------------------------------|
 * | 0      | 8     | sequence (u64), 0 = free       |
 * | 8      | 8     | time, ms since the epoch (u64) |
 * | 16     | 2     | event code (u16)               |
 * | 18     | 2     | reserved                       |
 * | 20     | 28    | argument bytes (code-specific) |
 * | 48     | 16    | SHA-256 of [0, 48), truncated  |
 */
import { createHash } from 'node:crypto';
import { statusRecordBytes, statusRecordsMax } from './layout.ts';

export const StatusCode = {
  Created: 1,
  Opened: 2,
  Closed: 3,
  HeaderRewritten: 4,
  Degraded: 5,
  Rebuilt: 6,
} as const;
export type StatusCode = (typeof StatusCode)[keyof typeof StatusCode];

export const statusArgBytes = 28;

export interface StatusRecord {
  readonly sequence: number;
  readonly atMs: number;
  readonly code: number;
  readonly arg: Buffer;
}

export function encodeStatusRecord(r: StatusRecord): Buffer {
  const buf = Buffer.alloc(statusRecordBytes);
  buf.writeBigUInt64BE(BigInt(r.sequence), 0);
  buf.writeBigUInt64BE(BigInt(r.atMs), 8);
  buf.writeUInt16BE(r.code, 16);
  r.arg.subarray(0, statusArgBytes).copy(buf, 20);
  createHash('sha256').update(buf.subarray(0, 48)).digest().copy(buf, 48, 0, 16);
  return buf;
}

/** All intact records of a status log area, oldest first. */
export function decodeStatusLog(area: Buffer): StatusRecord[] {
  const records: StatusRecord[] = [];
  for (let i = 0; i < statusRecordsMax && (i + 1) * statusRecordBytes <= area.length; i++) {
    const rec = area.subarray(i * statusRecordBytes, (i + 1) * statusRecordBytes);
    const sequence = rec.readBigUInt64BE(0);
    if (sequence === 0n || sequence > BigInt(Number.MAX_SAFE_INTEGER)) continue;
    const sum = createHash('sha256').update(rec.subarray(0, 48)).digest().subarray(0, 16);
    if (!sum.equals(rec.subarray(48, 64))) continue;
    records.push({
      sequence: Number(sequence),
      atMs: Number(rec.readBigUInt64BE(8)),
      code: rec.readUInt16BE(16),
      arg: Buffer.from(rec.subarray(20, 48)),
    });
  }
  return records.sort((a, b) => a.sequence - b.sequence);
}

/** Byte offset, within the status log area, of the record with this sequence number. */
export function statusRecordOffset(sequence: number): number {
  return (sequence % statusRecordsMax) * statusRecordBytes;
}
