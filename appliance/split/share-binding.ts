/**
 * What a share is bound to, and how that binding becomes a GCM nonce and associated data.
 *
 * Nonce (96 bits) = block address (40 bits) ‖ generation (48 bits) ‖ strip index (8 bits).
 * Session keys are per strip, and the volume never hands out a generation twice (it reserves them
 * durably before use), so a (key, nonce) pair can never repeat — not across overwrites, crashes or
 * restarts. The associated data repeats every field so a share replayed at another address, strip,
 * generation, epoch, geometry or volume fails authentication.
 */
import { ErrorCode, fail } from '../errors.ts';
import { sharesMax } from './geometry.ts';

export const volumeIdBytes = 16;
export const addressMax = 2 ** 40 - 1;
export const generationMax = 2 ** 48 - 1;
export const epochMax = 2 ** 32 - 1;
export const keySlotMax = 255;
export const nonceBytes = 12;
export const tagBytes = 16;

/** What a share holds: a dispersed fragment of a block, or the marker of an all-zero block. */
export const ShareKind = { Data: 1, Zero: 2 } as const;
export type ShareKind = (typeof ShareKind)[keyof typeof ShareKind];

export interface ShareBinding {
  readonly volumeId: Uint8Array;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly stripIndex: number;
  readonly address: number;
  readonly generation: number;
  readonly epoch: number;
  readonly keySlot: number;
  readonly kind: ShareKind;
}

const aadMagic = Buffer.from('SVSHARE1', 'latin1');
export const aadBytes = 8 + volumeIdBytes + 4 + 4 + 8 + 8 + 4 + 4;

function checkInt(name: string, value: number, max: number, min = 0): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    fail(ErrorCode.OutOfRange, `${name} ${value} out of range [${min}, ${max}]`, { [name]: value });
  }
}

export function validateBinding(b: ShareBinding): void {
  if (!(b.volumeId instanceof Uint8Array) || b.volumeId.length !== volumeIdBytes) {
    fail(ErrorCode.InvalidArgument, `volume id must be ${volumeIdBytes} bytes`);
  }
  checkInt('stripIndex', b.stripIndex, sharesMax - 1);
  checkInt('address', b.address, addressMax);
  checkInt('generation', b.generation, generationMax, 1);
  checkInt('epoch', b.epoch, epochMax);
  checkInt('keySlot', b.keySlot, keySlotMax);
  if (b.kind !== ShareKind.Data && b.kind !== ShareKind.Zero) fail(ErrorCode.InvalidArgument, `unknown share kind ${b.kind}`);
}

export function shareNonce(b: ShareBinding): Buffer {
  const nonce = Buffer.allocUnsafe(nonceBytes);
  nonce.writeUIntBE(b.address, 0, 5);
  nonce.writeUIntBE(b.generation, 5, 6);
  nonce.writeUInt8(b.stripIndex, 11);
  return nonce;
}

export function shareAad(b: ShareBinding): Buffer {
  const aad = Buffer.alloc(aadBytes);
  let o = aadMagic.copy(aad, 0);
  aad.set(b.volumeId, o);
  o += volumeIdBytes;
  aad.writeUInt8(b.stripIndex, o);
  aad.writeUInt8(b.m, o + 1);
  aad.writeUInt8(b.n, o + 2);
  aad.writeUInt8(b.kind, o + 3);
  o += 4;
  aad.writeUInt32BE(b.blockBytes, o);
  o += 4;
  aad.writeUIntBE(b.address, o + 2, 6);
  o += 8;
  aad.writeUIntBE(b.generation, o + 2, 6);
  o += 8;
  aad.writeUInt32BE(b.epoch, o);
  o += 4;
  aad.writeUInt32BE(b.keySlot, o);
  return aad;
}
