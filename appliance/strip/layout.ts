/**
 * The on-disk strip format, version 1: the one place that knows byte offsets.
 * docs/strip-format.md repeats these tables for people; keep the two in step.
 *
 * A strip is a region [base, base + stripBytes) of one storage device:
 *
 * | region        | offset                    | bytes                 | contents                                  |
 * |---------------|---------------------------|-----------------------|-------------------------------------------|
 * | label         | 0                         | labelBytes (4096)     | plaintext share label + SHA-256 checksum  |
 * | header A      | 4096                      | headerBytes (64 KiB)  | wrap slots + AES-GCM encrypted header     |
 * | header B      | 4096 + 64 KiB             | headerBytes           | second copy; the newer valid one wins     |
 * | status log    | 4096 + 128 KiB            | statusLogBytes (64 K) | ring of fixed-size, checksummed records   |
 * | data slots    | dataOffset (4 KiB aligned)| slotCount × slotBytes | one sealed share per primary block        |
 *
 * Label (plaintext; identifies the strip without any key — the patent's "share label"):
 *
 * | offset | bytes | field                                                  |
 * |--------|-------|--------------------------------------------------------|
 * | 0      | 8     | magic "SVSTRIP\0"                                      |
 * | 8      | 2     | format version (u16 BE) = 1                            |
 * | 10     | 2     | label bytes covered by the checksum (u16) = 160        |
 * | 12     | 4     | flags (u32), 0                                         |
 * | 16     | 16    | volume id (UUID bytes)                                 |
 * | 32     | 1     | strip index                                            |
 * | 33     | 1     | M                                                      |
 * | 34     | 1     | N                                                      |
 * | 35     | 1     | reserved, 0                                            |
 * | 36     | 4     | primary block size (u32)                               |
 * | 40     | 4     | slot bytes (u32)                                       |
 * | 44     | 4     | reserved, 0                                            |
 * | 48     | 8     | slot count = primary blocks in the volume (u64)        |
 * | 56     | 8     | strip bytes (u64)                                      |
 * | 64     | 8     | header A offset (u64)                                  |
 * | 72     | 8     | header bytes (u64), per copy                           |
 * | 80     | 8     | status log offset (u64)                                |
 * | 88     | 8     | status log bytes (u64)                                 |
 * | 96     | 8     | data offset (u64)                                      |
 * | 104    | 16    | origin: id of the appliance that created the strip     |
 * | 120    | 8     | created at, ms since the epoch (u64)                   |
 * | 128    | 32    | SHA-256 of bytes [0, 128)                              |
 *
 * Header copy (the patent's signature + encrypted header + key slots):
 *
 * | offset | bytes         | field                                                              |
 * |--------|---------------|--------------------------------------------------------------------|
 * | 0      | 8             | magic "SVHEADR\0"                                                  |
 * | 8      | 2             | format version (u16) = 1                                           |
 * | 10     | 2             | wrap slot count (u16) = wrapSlotsMax                               |
 * | 12     | 4             | body ciphertext bytes (u32)                                        |
 * | 16     | 8             | sequence (u64): bumped on every rewrite; the newer valid copy wins |
 * | 24     | 12            | body nonce (random per rewrite)                                    |
 * | 36     | 4             | reserved, 0                                                        |
 * | 40     | 16 × 64       | wrap slots: wrapper id (16) ‖ RFC 3394 wrap of header key (40) ‖ 8 reserved; all-zero = free |
 * | 1064   | body + 16     | AES-256-GCM(header key) of the header body, tag last               |
 *
 * The GCM associated data is the label's 160 bytes followed by header bytes [0, 1064), so the
 * tag is the strip's signature: it authenticates the label, the wrap slots and the body together.
 *
 * Header body (encrypted):
 *
 * | offset | bytes       | field                                                                |
 * |--------|-------------|----------------------------------------------------------------------|
 * | 0      | 8           | volume bytes (u64)                                                   |
 * | 8      | 8           | epoch (u64)                                                          |
 * | 16     | 8           | generation reserved (u64): no share on this strip has a generation ≥ |
 * | 24     | 2           | section count (u16)                                                  |
 * | 26     | 2           | key slots per section (u16) = keySlotsPerSection                     |
 * | 28     | 4           | virtual-disk info bytes (u32)                                        |
 * | 32     | 2           | stale strips (u16 bitmap): strips that missed writes and owe repair  |
 * | 34     | 6           | reserved, 0                                                          |
 * | 40     | sections × slots × 40 | session key slots: state (1) ‖ 3 reserved ‖ key serial (u32) ‖ key (32) |
 * | …      | info bytes  | virtual-disk info, UTF-8 JSON (name, created, presented-to)          |
 *
 * Data slot (slotBytes each, slot i holds this strip's share of primary block i):
 *
 * | offset      | bytes    | field                                              |
 * |-------------|----------|----------------------------------------------------|
 * | 0           | 8        | generation (u64); 0 = never written                |
 * | 8           | 4        | epoch (u32)                                        |
 * | 12          | 1        | key slot index                                     |
 * | 13          | 1        | share kind: 1 data, 2 zero                         |
 * | 14          | 2        | reserved, 0                                        |
 * | 16          | 4        | body bytes (u32): fragment + 16, or 16 for zero    |
 * | 20          | 12       | reserved, 0                                        |
 * | 32          | body     | encrypted fragment ‖ GCM tag                       |
 */
import { fragmentBytes } from '../split/split.ts';
import { tagBytes } from '../split/share-binding.ts';

export const formatVersion = 1;
export const labelMagic = Buffer.from('SVSTRIP\0', 'latin1');
export const headerMagic = Buffer.from('SVHEADR\0', 'latin1');

export const labelBytes = 4096;
export const labelCoveredBytes = 160;
export const labelChecksumOffset = 128;

export const headerBytes = 64 * 1024;
export const headerCopies = 2;
export const wrapSlotsMax = 16;
export const wrapSlotBytes = 64;
export const wrapperIdBytes = 16;
export const wrappedKeyBytes = 40;
export const headerFixedBytes = 40;
export const headerBodyOffset = headerFixedBytes + wrapSlotsMax * wrapSlotBytes;
export const headerBodyFixedBytes = 40;

/** A session key covers at most this much of a strip's data area (DESIGN: per 64 GiB section). */
export const sectionBytes = 64 * 1024 ** 3;
/** Active key plus spares for background re-keying. */
export const keySlotsPerSection = 4;
export const keySlotEntryBytes = 40;
export const virtualDiskInfoBytesMax = 8 * 1024;
/** Bounded by the header copy's size. */
export const sectionsMax = Math.floor(
  (headerBytes - headerBodyOffset - headerBodyFixedBytes - virtualDiskInfoBytesMax - tagBytes) /
    (keySlotsPerSection * keySlotEntryBytes),
);

export const statusLogBytes = 64 * 1024;
export const statusRecordBytes = 64;
export const statusRecordsMax = statusLogBytes / statusRecordBytes;

export const slotMetaBytes = 32;
export const dataAlignBytes = 4096;

export const headerOffset = labelBytes;
export const statusLogOffset = headerOffset + headerCopies * headerBytes;
export const dataOffset = Math.ceil((statusLogOffset + statusLogBytes) / dataAlignBytes) * dataAlignBytes;

export function slotBytesFor(blockBytes: number, m: number): number {
  // 8-byte alignment keeps the u64 fields of every slot aligned without wasting much.
  return Math.ceil((slotMetaBytes + fragmentBytes(blockBytes, m) + tagBytes) / 8) * 8;
}

/** Bytes a strip needs for a volume of `slotCount` blocks. */
export function stripBytesFor(slotCount: number, blockBytes: number, m: number): number {
  return dataOffset + slotCount * slotBytesFor(blockBytes, m);
}

export function sectionCountFor(slotCount: number, slotBytes: number): number {
  return Math.max(1, Math.ceil((slotCount * slotBytes) / sectionBytes));
}

export function sectionOfSlot(slot: number, slotBytes: number): number {
  return Math.floor((slot * slotBytes) / sectionBytes);
}
