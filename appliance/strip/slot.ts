/** Data slots: one sealed share per primary block (offset table in layout.ts). */
import { ShareKind, tagBytes } from '../split/share-binding.ts';
import type { SealedShare, ShareCandidate } from '../split/split.ts';
import { assert } from '../errors.ts';
import { slotMetaBytes } from './layout.ts';

/** Writes `share` into `out` (exactly one slot); the rest of the slot is zeroed. */
export function encodeSlot(share: SealedShare, out: Buffer): void {
  assert(slotMetaBytes + share.body.length <= out.length, 'share does not fit its slot');
  out.fill(0);
  out.writeBigUInt64BE(BigInt(share.generation), 0);
  out.writeUInt32BE(share.epoch, 8);
  out.writeUInt8(share.keySlot, 12);
  out.writeUInt8(share.kind, 13);
  out.writeUInt32BE(share.body.length, 16);
  share.body.copy(out, slotMetaBytes);
}

/** Not a share kind: makes the split engine report the share as malformed. */
const malformedKind = 0xff as ShareKind;

const emptyBody = Buffer.alloc(0);
/** Compared against with memcmp (Buffer.equals): a byte loop in JS dominated reads of unwritten space. */
const zeros = Buffer.alloc(64 * 1024);

function isZero(buf: Buffer, from: number, to: number): boolean {
  if (to - from <= 32) {
    for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
    return true;
  }
  for (let at = from; at < to; at += zeros.length) {
    const end = Math.min(to, at + zeros.length);
    if (!buf.subarray(at, end).equals(zeros.subarray(0, end - at))) return false;
  }
  return true;
}

/**
 * Reads one slot as a share candidate for `stripIndex`. The metadata is only a claim: the split
 * engine authenticates it. A slot whose fields cannot even be a share comes back with
 * generation 0 and a malformed kind, so the engine names it instead of us throwing.
 */
export function decodeSlot(stripIndex: number, slot: Buffer): ShareCandidate {
  const generation = slot.readBigUInt64BE(0);
  if (generation === 0n && isZero(slot, 0, slot.length)) {
    return { stripIndex, generation: 0, epoch: 0, keySlot: 0, kind: ShareKind.Data, body: emptyBody };
  }
  const bodyBytes = slot.readUInt32BE(16);
  const fits = bodyBytes >= tagBytes && slotMetaBytes + bodyBytes <= slot.length;
  // Reserved bytes and padding are not covered by the share's tag, so they must be exactly zero:
  // a flipped bit there is still corruption, and is reported (as malformed) rather than ignored.
  const clean = fits && isZero(slot, 14, 16) && isZero(slot, 20, slotMetaBytes) && isZero(slot, slotMetaBytes + bodyBytes, slot.length);
  const kind = clean ? slot.readUInt8(13) : malformedKind;
  return {
    stripIndex,
    // A non-empty slot claiming generation 0, or an absurd one, is malformed: give it a generation
    // the engine will try (and fail) to authenticate, so it is reported rather than taken as empty.
    generation: generation === 0n || generation > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(generation),
    epoch: slot.readUInt32BE(8),
    keySlot: slot.readUInt8(12),
    kind: kind as ShareKind,
    body: fits ? slot.subarray(slotMetaBytes, slotMetaBytes + bodyBytes) : Buffer.alloc(0),
  };
}
