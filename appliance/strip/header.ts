/**
 * The strip header: session keys and volume state, encrypted under a per-strip header key that is
 * wrapped (RFC 3394 AES key wrap) under each wrapping key allowed to open the strip — today the caller's key,
 * with the key manager each COI's workgroup key (the patent's many-to-one). Two copies with a
 * sequence number: a torn header write leaves the older copy intact. Offsets in layout.ts.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ErrorCode, StripvaultError, fail } from '../errors.ts';
import { unwrapKey, wrapKey } from '../split/keywrap.ts';
import { nonceBytes, tagBytes } from '../split/share-binding.ts';
import { sessionKeyBytes } from '../split/split.ts';
import {
  formatVersion,
  headerFixedBytes,
  headerBodyFixedBytes,
  headerBodyOffset,
  headerBytes,
  headerMagic,
  keySlotEntryBytes,
  keySlotsPerSection,
  labelCoveredBytes,
  sectionsMax,
  virtualDiskInfoBytesMax,
  wrapSlotBytes,
  wrapSlotsMax,
  wrappedKeyBytes,
  wrapperIdBytes,
} from './layout.ts';

export const headerKeyBytes = 32;

/** A key allowed to open strips: a workgroup key (or, before the key manager, the caller's key). */
export interface Wrapper {
  readonly id: Buffer;
  readonly key: Uint8Array;
}

export const KeySlotState = { Empty: 0, Active: 1, Spare: 2, Retiring: 3 } as const;
export type KeySlotState = (typeof KeySlotState)[keyof typeof KeySlotState];

export interface SessionKeySlot {
  state: KeySlotState;
  serial: number;
  key: Buffer;
}

export interface VirtualDiskInfo {
  readonly name: string;
  readonly createdAt: string;
  readonly [k: string]: unknown;
}

export interface HeaderBody {
  volumeBytes: number;
  epoch: number;
  generationReserved: number;
  /** Bit i set: strip i missed writes while absent and must not be trusted alone until repaired. */
  staleStrips: number;
  /** sections × keySlotsPerSection */
  sections: SessionKeySlot[][];
  info: VirtualDiskInfo;
}

export interface WrapEntry {
  readonly wrapperId: Buffer;
  readonly wrapped: Buffer;
}

export interface StripHeader {
  sequence: number;
  headerKey: Buffer;
  wraps: WrapEntry[];
  body: HeaderBody;
}

export function newHeader(body: HeaderBody, wrappers: readonly Wrapper[]): StripHeader {
  const header: StripHeader = { sequence: 0, headerKey: randomBytes(headerKeyBytes), wraps: [], body };
  for (const w of wrappers) addWrapper(header, w);
  return header;
}

export function addWrapper(header: StripHeader, wrapper: Wrapper): void {
  checkWrapper(wrapper);
  if (header.wraps.some((w) => w.wrapperId.equals(wrapper.id))) return;
  if (header.wraps.length >= wrapSlotsMax) {
    fail(ErrorCode.StripInconsistent, `strip header already has ${wrapSlotsMax} wrapping keys`);
  }
  header.wraps.push({ wrapperId: Buffer.from(wrapper.id), wrapped: Buffer.from(wrapKey(wrapper.key, header.headerKey)) });
}

export function removeWrapper(header: StripHeader, wrapperId: Buffer): void {
  header.wraps = header.wraps.filter((w) => !w.wrapperId.equals(wrapperId));
}

function checkWrapper(w: Wrapper): void {
  if (!Buffer.isBuffer(w.id) || w.id.length !== wrapperIdBytes || w.id.every((x) => x === 0)) {
    fail(ErrorCode.InvalidArgument, `wrapper id must be ${wrapperIdBytes} non-zero bytes`);
  }
  if (!(w.key instanceof Uint8Array) || w.key.length !== 32) fail(ErrorCode.InvalidArgument, 'wrapping key must be 32 bytes');
}

function u64(buf: Buffer, offset: number, field: string): number {
  const v = buf.readBigUInt64BE(offset);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(ErrorCode.StripInconsistent, `strip header: ${field} too large`);
  return Number(v);
}

function encodeBody(body: HeaderBody): Buffer {
  const sectionCount = body.sections.length;
  if (sectionCount < 1 || sectionCount > sectionsMax) fail(ErrorCode.StripInconsistent, `section count ${sectionCount}`);
  const info = Buffer.from(JSON.stringify(body.info), 'utf8');
  if (info.length > virtualDiskInfoBytesMax) {
    fail(ErrorCode.InvalidArgument, `virtual-disk info is ${info.length} bytes, at most ${virtualDiskInfoBytesMax}`);
  }
  const keysBytes = sectionCount * keySlotsPerSection * keySlotEntryBytes;
  const buf = Buffer.alloc(headerBodyFixedBytes + keysBytes + info.length);
  buf.writeBigUInt64BE(BigInt(body.volumeBytes), 0);
  buf.writeBigUInt64BE(BigInt(body.epoch), 8);
  buf.writeBigUInt64BE(BigInt(body.generationReserved), 16);
  buf.writeUInt16BE(sectionCount, 24);
  buf.writeUInt16BE(keySlotsPerSection, 26);
  buf.writeUInt32BE(info.length, 28);
  buf.writeUInt16BE(body.staleStrips, 32);
  let o = headerBodyFixedBytes;
  for (const slots of body.sections) {
    if (slots.length !== keySlotsPerSection) fail(ErrorCode.StripInconsistent, 'key slots per section');
    for (const s of slots) {
      buf.writeUInt8(s.state, o);
      buf.writeUInt32BE(s.serial, o + 4);
      if (s.state !== KeySlotState.Empty) {
        if (s.key.length !== sessionKeyBytes) fail(ErrorCode.StripInconsistent, 'session key length');
        s.key.copy(buf, o + 8);
      }
      o += keySlotEntryBytes;
    }
  }
  info.copy(buf, o);
  return buf;
}

function decodeBody(buf: Buffer): HeaderBody {
  if (buf.length < headerBodyFixedBytes) fail(ErrorCode.StripTruncated, 'strip header body truncated');
  const sectionCount = buf.readUInt16BE(24);
  const perSection = buf.readUInt16BE(26);
  const infoBytes = buf.readUInt32BE(28);
  if (sectionCount < 1 || sectionCount > sectionsMax || perSection !== keySlotsPerSection || infoBytes > virtualDiskInfoBytesMax) {
    fail(ErrorCode.StripInconsistent, 'strip header body: bad section or info sizes', { sectionCount, perSection, infoBytes });
  }
  const keysBytes = sectionCount * perSection * keySlotEntryBytes;
  if (buf.length !== headerBodyFixedBytes + keysBytes + infoBytes) fail(ErrorCode.StripInconsistent, 'strip header body length');
  const sections: SessionKeySlot[][] = [];
  let o = headerBodyFixedBytes;
  for (let s = 0; s < sectionCount; s++) {
    const slots: SessionKeySlot[] = [];
    for (let k = 0; k < perSection; k++) {
      const state = buf.readUInt8(o);
      if (state > KeySlotState.Retiring) fail(ErrorCode.StripInconsistent, `key slot state ${state}`);
      slots.push({ state: state as KeySlotState, serial: buf.readUInt32BE(o + 4), key: Buffer.from(buf.subarray(o + 8, o + 8 + sessionKeyBytes)) });
      o += keySlotEntryBytes;
    }
    sections.push(slots);
  }
  let info: VirtualDiskInfo;
  try {
    info = JSON.parse(buf.subarray(o, o + infoBytes).toString('utf8')) as VirtualDiskInfo;
  } catch {
    fail(ErrorCode.StripInconsistent, 'strip header: virtual-disk info is not valid JSON');
  }
  if (info === null || typeof info !== 'object' || typeof info.name !== 'string') {
    fail(ErrorCode.StripInconsistent, 'strip header: virtual-disk info lacks a name');
  }
  return {
    volumeBytes: u64(buf, 0, 'volumeBytes'),
    epoch: u64(buf, 8, 'epoch'),
    generationReserved: u64(buf, 16, 'generationReserved'),
    staleStrips: buf.readUInt16BE(32),
    sections,
    info,
  };
}

/** Serialises one header copy; `label` is the strip's label bytes (bound in as associated data). */
export function encodeHeader(label: Buffer, header: StripHeader): Buffer {
  const body = encodeBody(header.body);
  const out = Buffer.alloc(headerBytes);
  if (headerBodyOffset + body.length + tagBytes > headerBytes) fail(ErrorCode.StripInconsistent, 'strip header too large');
  headerMagic.copy(out, 0);
  out.writeUInt16BE(formatVersion, 8);
  out.writeUInt16BE(wrapSlotsMax, 10);
  out.writeUInt32BE(body.length, 12);
  out.writeBigUInt64BE(BigInt(header.sequence), 16);
  const nonce = randomBytes(nonceBytes);
  nonce.copy(out, 24);
  header.wraps.forEach((w, i) => {
    const o = 40 + i * wrapSlotBytes;
    w.wrapperId.copy(out, o);
    w.wrapped.copy(out, o + wrapperIdBytes);
  });
  const cipher = createCipheriv('aes-256-gcm', header.headerKey, nonce, { authTagLength: tagBytes });
  cipher.setAAD(Buffer.concat([label.subarray(0, labelCoveredBytes), out.subarray(0, headerBodyOffset)]));
  const ct = Buffer.concat([cipher.update(body), cipher.final(), cipher.getAuthTag()]);
  ct.copy(out, headerBodyOffset);
  body.fill(0);
  return out;
}

/**
 * Parses one header copy, opening it with whichever of `wrappers` has a wrap slot. Typed errors:
 * bad magic/version, truncation, no usable wrapper, or failed authentication.
 */
/**
 * The ids of the keys a header copy is wrapped under, read without any key (the wrap slots'
 * ids are plaintext, like the patent's share label): what a crypto-shred must destroy. Empty for
 * bytes that are not a header copy.
 */
export function headerWrapperIds(buf: Buffer): string[] {
  if (buf.length < headerFixedBytes + wrapSlotsMax * wrapSlotBytes || !buf.subarray(0, 8).equals(headerMagic)) return [];
  const ids: string[] = [];
  for (let i = 0; i < wrapSlotsMax; i++) {
    const id = buf.subarray(headerFixedBytes + i * wrapSlotBytes, headerFixedBytes + i * wrapSlotBytes + wrapperIdBytes);
    if (id.some((b) => b !== 0)) ids.push(id.toString('hex'));
  }
  return ids;
}

export function decodeHeader(label: Buffer, buf: Buffer, wrappers: readonly Wrapper[]): StripHeader {
  if (buf.length < headerBodyOffset + tagBytes) fail(ErrorCode.StripTruncated, 'strip header truncated');
  if (!buf.subarray(0, 8).equals(headerMagic)) fail(ErrorCode.StripBadMagic, 'strip header: bad magic');
  const version = buf.readUInt16BE(8);
  if (version !== formatVersion) fail(ErrorCode.StripUnknownVersion, `strip header version ${version} not supported`, { version });
  if (buf.readUInt16BE(10) !== wrapSlotsMax) fail(ErrorCode.StripInconsistent, 'strip header: wrap slot count');
  const bodyBytes = buf.readUInt32BE(12);
  if (headerBodyOffset + bodyBytes + tagBytes > buf.length) {
    fail(ErrorCode.StripTruncated, 'strip header body extends past the header', { bodyBytes });
  }
  const nonce = buf.subarray(24, 24 + nonceBytes);
  const wraps: WrapEntry[] = [];
  for (let i = 0; i < wrapSlotsMax; i++) {
    const o = 40 + i * wrapSlotBytes;
    const slot = buf.subarray(o, o + wrapSlotBytes);
    if (slot.every((x) => x === 0)) continue;
    wraps.push({
      wrapperId: Buffer.from(slot.subarray(0, wrapperIdBytes)),
      wrapped: Buffer.from(slot.subarray(wrapperIdBytes, wrapperIdBytes + wrappedKeyBytes)),
    });
  }
  let headerKey: Buffer | null = null;
  for (const w of wrappers) {
    const entry = wraps.find((e) => e.wrapperId.equals(w.id));
    if (entry === undefined) continue;
    try {
      const raw = unwrapKey(w.key, entry.wrapped);
      headerKey = Buffer.from(raw);
      raw.fill(0);
      break;
    } catch (e) {
      if (!(e instanceof StripvaultError)) throw e;
    }
  }
  if (headerKey === null) {
    fail(ErrorCode.StripNoKeyForWrapper, 'none of the supplied wrapping keys opens this strip header', {
      wrappers: wraps.map((w) => w.wrapperId.toString('hex')),
    });
  }
  const decipher = createDecipheriv('aes-256-gcm', headerKey, nonce, { authTagLength: tagBytes });
  decipher.setAAD(Buffer.concat([label.subarray(0, labelCoveredBytes), buf.subarray(0, headerBodyOffset)]));
  decipher.setAuthTag(buf.subarray(headerBodyOffset + bodyBytes, headerBodyOffset + bodyBytes + tagBytes));
  const body = decipher.update(buf.subarray(headerBodyOffset, headerBodyOffset + bodyBytes));
  try {
    decipher.final();
  } catch {
    body.fill(0);
    fail(ErrorCode.StripHeaderAuth, 'strip header failed authentication (tampered, corrupted, or label mismatch)');
  }
  try {
    // Fields are believed only once the tag has vouched for them.
    return { sequence: u64(buf, 16, 'sequence'), headerKey, wraps, body: decodeBody(body) };
  } finally {
    body.fill(0);
  }
}
