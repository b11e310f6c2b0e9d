/**
 * The portable text form of one security officer's share of the master key: what an officer
 * prints, stores in a safe, and pastes back at unseal time.
 *
 *   svshare1.<base64url(payload)>
 *
 * Payload, version 1 (fixed size; integers unsigned, one byte each):
 *
 * | offset | bytes | field                                                        |
 * |--------|-------|--------------------------------------------------------------|
 * | 0      | 1     | format version (1; repeats the prefix's digit under the CRC) |
 * | 1      | 16    | key set id (UUID, binary)                                    |
 * | 17     | 1     | officer index, 1..K                                          |
 * | 18     | 1     | threshold T, 1..K                                            |
 * | 19     | 1     | officer count K, 1..officersMax                              |
 * | 20     | 33    | Shamir share: 32 y bytes, then the x coordinate (never 0)    |
 * | 53     | 4     | CRC-32 (big-endian) of bytes [0, 53)                         |
 *
 * The CRC is against typos, not attackers: it catches every single-character slip and every
 * swap of neighbouring characters (any change confined to 32 consecutive bits), so a mistyped
 * share is told apart from a genuinely wrong one. Authenticity is checked later, against the key
 * set's share digests (master-key.ts); this module knows nothing about key sets.
 *
 * Error messages and details never quote the text: it is key material.
 */
import { crc32 } from 'node:zlib';
import { ErrorCode, assert, fail } from '../appliance/errors.ts';

export const officerShareFormatVersion = 1;
export const officerShareTextPrefix = `svshare${officerShareFormatVersion}.`;
/** 16 officers keep Shamir's x coordinates and every count in one byte, with room to spare. */
export const officersMax = 16;
/** A 32-byte master key's Shamir share: 32 y bytes plus the x coordinate. */
export const officerShareBytes = 33;

const versionOffset = 0;
const keySetIdOffset = 1;
const keySetIdBytes = 16;
const officerIndexOffset = keySetIdOffset + keySetIdBytes;
const thresholdOffset = officerIndexOffset + 1;
const officerCountOffset = thresholdOffset + 1;
const shareOffset = officerCountOffset + 1;
const crcOffset = shareOffset + officerShareBytes;
const crcBytes = 4;
export const officerSharePayloadBytes = crcOffset + crcBytes;
/** 57 bytes is a multiple of 3, so the base64url body has no padding and no spare bits. */
const bodyChars = (officerSharePayloadBytes / 3) * 4;
assert(officerSharePayloadBytes % 3 === 0, 'officer share payload has no base64 padding');
export const officerShareTextChars = officerShareTextPrefix.length + bodyChars;
/** Pasted text may carry line breaks and indentation; anything longer than this is not a share. */
export const officerShareInputCharsMax = 1024;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const base64urlPattern = /^[A-Za-z0-9_-]*$/;
const prefixFamilyPattern = /^svshare(\d+)\./;

/** One officer share, decoded. `shareBytes` is secret: wipe it (fill(0)) when done. */
export interface OfficerShareFields {
  readonly keySetId: string;
  readonly officerIndex: number;
  readonly threshold: number;
  readonly officerCount: number;
  readonly shareBytes: Uint8Array;
}

/** Why a text is not an officer share; carried as `detail.reason` of SV_OFFICER_SHARE_MALFORMED. */
export type OfficerShareMalformedReason =
  | 'not-text'
  | 'empty'
  | 'too-long'
  | 'prefix'
  | 'version'
  | 'base64'
  | 'length'
  | 'checksum'
  | 'field';

function malformed(reason: OfficerShareMalformedReason, message: string, detail: Record<string, unknown> = {}): never {
  fail(ErrorCode.OfficerShareMalformed, `not a valid officer share: ${message}`, { reason, ...detail });
}

export function isKeySetId(value: unknown): value is string {
  return typeof value === 'string' && uuidPattern.test(value);
}

export function keySetIdToBytes(keySetId: string): Uint8Array {
  if (!isKeySetId(keySetId)) fail(ErrorCode.InvalidArgument, 'key set id must be a lowercase UUID');
  return new Uint8Array(Buffer.from(keySetId.replaceAll('-', ''), 'hex'));
}

function keySetIdFromBytes(bytes: Uint8Array): string {
  const h = Buffer.from(bytes).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Checks the counts every share and key set must satisfy; returns a reason, or null when sound. */
export function geometryProblem(officerIndex: number, threshold: number, officerCount: number): string | null {
  const int = (n: number) => Number.isInteger(n);
  if (!int(officerCount) || officerCount < 1 || officerCount > officersMax) return `officer count must be 1..${officersMax}`;
  if (!int(threshold) || threshold < 1 || threshold > officerCount) return 'threshold must be 1..officer count';
  if (!int(officerIndex) || officerIndex < 1 || officerIndex > officerCount) return 'officer index must be 1..officer count';
  return null;
}

export function encodeOfficerShare(share: OfficerShareFields): string {
  const problem = geometryProblem(share.officerIndex, share.threshold, share.officerCount);
  if (problem !== null) fail(ErrorCode.InvalidArgument, `cannot encode officer share: ${problem}`);
  if (!(share.shareBytes instanceof Uint8Array) || share.shareBytes.length !== officerShareBytes) {
    fail(ErrorCode.InvalidArgument, `officer share bytes must be a ${officerShareBytes}-byte Uint8Array`);
  }
  if (share.shareBytes[officerShareBytes - 1] === 0) fail(ErrorCode.InvalidArgument, 'Shamir x coordinate 0 is the secret itself');
  // Buffer.alloc (not the shared pool): this buffer is ours to wipe.
  const payload = Buffer.alloc(officerSharePayloadBytes);
  try {
    payload[versionOffset] = officerShareFormatVersion;
    payload.set(keySetIdToBytes(share.keySetId), keySetIdOffset);
    payload[officerIndexOffset] = share.officerIndex;
    payload[thresholdOffset] = share.threshold;
    payload[officerCountOffset] = share.officerCount;
    payload.set(share.shareBytes, shareOffset);
    payload.writeUInt32BE(crc32(payload.subarray(0, crcOffset)), crcOffset);
    return officerShareTextPrefix + payload.toString('base64url');
  } finally {
    payload.fill(0);
  }
}

/**
 * Parses an officer share's text. Whitespace anywhere is ignored (shares get wrapped and
 * indented when printed or mailed). Every failure is SV_OFFICER_SHARE_MALFORMED with a `reason`.
 */
export function parseOfficerShare(text: unknown): OfficerShareFields {
  if (typeof text !== 'string') malformed('not-text', 'expected text');
  if (text.length > officerShareInputCharsMax) malformed('too-long', 'too long', { chars: text.length, charsMax: officerShareInputCharsMax });
  const compact = text.replace(/\s+/g, '');
  if (compact.length === 0) malformed('empty', 'empty');
  if (!compact.startsWith(officerShareTextPrefix)) {
    const family = prefixFamilyPattern.exec(compact);
    if (family !== null) malformed('version', `share format version ${family[1]} is not supported`, { supported: officerShareFormatVersion });
    malformed('prefix', `an officer share starts with "${officerShareTextPrefix}"`);
  }
  const body = compact.slice(officerShareTextPrefix.length);
  // Node's base64 decoder skips characters it does not know; check the alphabet first.
  if (!base64urlPattern.test(body)) malformed('base64', 'the part after the prefix is not base64url');
  if (body.length !== bodyChars) {
    malformed('length', body.length < bodyChars ? 'truncated' : 'too long', { chars: body.length, expectedChars: bodyChars });
  }
  const payload = Buffer.alloc(officerSharePayloadBytes);
  try {
    const written = payload.write(body, 'base64url');
    assert(written === officerSharePayloadBytes, 'a full-length base64url body fills the payload');
    if (crc32(payload.subarray(0, crcOffset)) !== payload.readUInt32BE(crcOffset)) {
      malformed('checksum', 'checksum mismatch (mistyped or damaged)');
    }
    const version = payload[versionOffset];
    if (version !== officerShareFormatVersion) malformed('version', `payload format version ${version} does not match the prefix`);
    const officerIndex = payload[officerIndexOffset] as number;
    const threshold = payload[thresholdOffset] as number;
    const officerCount = payload[officerCountOffset] as number;
    const problem = geometryProblem(officerIndex, threshold, officerCount);
    if (problem !== null) malformed('field', problem);
    if (payload[crcOffset - 1] === 0) malformed('field', 'Shamir x coordinate is 0');
    // A plain Uint8Array (shamir-secret-sharing refuses subclasses such as Buffer).
    const shareBytes = new Uint8Array(officerShareBytes);
    shareBytes.set(payload.subarray(shareOffset, crcOffset));
    return {
      keySetId: keySetIdFromBytes(payload.subarray(keySetIdOffset, keySetIdOffset + keySetIdBytes)),
      officerIndex,
      threshold,
      officerCount,
      shareBytes,
    };
  } finally {
    payload.fill(0);
  }
}
