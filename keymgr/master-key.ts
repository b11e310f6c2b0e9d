/**
 * The master key and its split among security officers (Shamir T-of-K, `shamir-secret-sharing`).
 *
 * The master key is 32 random bytes that exist only in memory: at init (long enough to split it)
 * and while the appliance is unsealed. What is stored is the key set record — public, and enough
 * to *verify* officer shares without being able to rebuild anything from it:
 *
 * - `shareDigests[i]` = SHA-256(digestDomain ‖ keySetId ‖ index ‖ shareBytes) for officer i+1.
 *   Shamir combine happily turns a wrong share into a wrong key (the library's README says so), so
 *   each share is checked against its digest before it is combined, and a bad one is named. The
 *   digest leaks nothing useful: each share has 32 uniformly random bytes (even given T-1 other
 *   shares), so finding or confirming one from its digest is a 2^256 search (SHA-256 preimage
 *   resistance); keySetId and index make every digest specific to one slot of one key set.
 * - `verifier` = HMAC-SHA-256(masterKey, verifierDomain ‖ keySetId): a last check that the
 *   combined key is the key, in case the record itself is inconsistent. Computing it needs the
 *   key; checking a guessed key against it is again a 2^256 search.
 *
 * The library needs T ≥ 2. For T = 1 each share is the degree-0 Shamir polynomial — the key
 * itself plus an x coordinate — which is what "any one officer can unseal" means.
 */
import { createHash, createHmac, hkdfSync, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { combine, split } from 'shamir-secret-sharing';
import { ErrorCode, assert, fail } from '../appliance/errors.ts';
import { unwrapKey, wrapKey } from '../appliance/split/keywrap.ts';
import {
  encodeOfficerShare,
  geometryProblem,
  isKeySetId,
  keySetIdToBytes,
  officerShareBytes,
  officersMax,
  parseOfficerShare,
} from './officer-share.ts';
import type { OfficerShareFields } from './officer-share.ts';

export const masterKeyBytes = 32;
assert(officerShareBytes === masterKeyBytes + 1, 'a Shamir share is the secret length plus the x coordinate');
export const keySetRecordVersion = 1;
/** Officer names appear in audit records and on screens; keep them short and printable. */
export const officerNameCharsMax = 64;

const digestDomain = Buffer.from('stripvault/officer-share-digest/v1\0', 'ascii');
const verifierDomain = Buffer.from('stripvault/master-key-verifier/v1\0', 'ascii');
// The master key also serves as HMAC key for the verifier; wrapping uses a key derived for
// wrapping alone so the two uses never share a key.
const wrapKeyInfo = Buffer.from('stripvault/master-key/wrap/v1', 'ascii');
const sha256Hex = /^[0-9a-f]{64}$/;
// Control characters would let a name forge lines in logs and audit records.
const controlChars = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

export interface KeySetOfficer {
  readonly name: string;
  /** 1..K; officers[i].index === i + 1. */
  readonly index: number;
}

/** Public and storable: names, threshold, share digests and the key verifier (hex). */
export interface KeySetRecord {
  readonly version: typeof keySetRecordVersion;
  readonly keySetId: string;
  readonly threshold: number;
  readonly officers: readonly KeySetOfficer[];
  /** shareDigests[i] belongs to officers[i]. */
  readonly shareDigests: readonly string[];
  readonly verifier: string;
  readonly createdAt: string;
}

/** What each officer is handed once at init: their share's text, to keep offline. */
export interface OfficerShare {
  readonly officer: string;
  readonly officerIndex: number;
  readonly text: string;
}

export interface MasterKeySplitOptions {
  readonly officers: readonly string[];
  readonly threshold: number;
  /** For tests; defaults to the wall clock. */
  readonly now?: () => Date;
}

export interface MasterKeySplit {
  readonly keySet: KeySetRecord;
  readonly shares: readonly OfficerShare[];
}

function checkOfficerName(name: unknown, position: number): asserts name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > officerNameCharsMax) {
    fail(ErrorCode.InvalidArgument, `officer ${position}: name must be 1..${officerNameCharsMax} characters`, { position });
  }
  if (name.trim() !== name || controlChars.test(name)) {
    fail(ErrorCode.InvalidArgument, `officer ${position}: name has control characters or surrounding spaces`, { position });
  }
}

function checkOfficerNames(names: unknown): asserts names is readonly string[] {
  if (!Array.isArray(names) || names.length < 1 || names.length > officersMax) {
    fail(ErrorCode.InvalidArgument, `officers must list 1..${officersMax} names`, { officersMax });
  }
  // Case-insensitive: "Alice" and "alice" in one audit trail would be two people nobody can tell apart.
  const seen = new Set<string>();
  names.forEach((name: unknown, i: number) => {
    checkOfficerName(name, i + 1);
    const folded = name.normalize('NFC').toLowerCase();
    if (seen.has(folded)) fail(ErrorCode.InvalidArgument, `officer name "${name}" is listed twice`, { officer: name });
    seen.add(folded);
  });
}

export function shareDigest(keySetId: string, officerIndex: number, shareBytes: Uint8Array): Buffer {
  return createHash('sha256')
    .update(digestDomain)
    .update(keySetIdToBytes(keySetId))
    .update(Uint8Array.of(officerIndex))
    .update(shareBytes)
    .digest();
}

export function masterKeyVerifier(masterKey: Uint8Array, keySetId: string): Buffer {
  return createHmac('sha256', masterKey).update(verifierDomain).update(keySetIdToBytes(keySetId)).digest();
}

function checkMasterKey(masterKey: unknown): asserts masterKey is Uint8Array {
  if (!(masterKey instanceof Uint8Array) || masterKey.length !== masterKeyBytes) {
    fail(ErrorCode.InvalidArgument, `master key must be ${masterKeyBytes} bytes`);
  }
  let any = 0;
  for (const b of masterKey) any |= b;
  if (any === 0) fail(ErrorCode.InvalidArgument, 'master key is all zero bytes (wiped or never filled?)');
}

async function shamirSplit(masterKey: Uint8Array, officerCount: number, threshold: number): Promise<Uint8Array[]> {
  if (threshold === 1) {
    return Array.from({ length: officerCount }, (_, i) => {
      const share = new Uint8Array(officerShareBytes);
      share.set(masterKey);
      share[masterKeyBytes] = i + 1;
      return share;
    });
  }
  // The library insists on a plain Uint8Array (a Buffer is refused).
  const secret = new Uint8Array(masterKey);
  try {
    return await split(secret, officerCount, threshold);
  } finally {
    secret.fill(0);
  }
}

/**
 * Splits an existing master key for a (new) set of officers: a new key set id, new shares, new
 * digests; keys wrapped under the master key stay valid. The caller keeps ownership of `masterKey`.
 */
export async function splitMasterKey(masterKey: Uint8Array, options: MasterKeySplitOptions): Promise<MasterKeySplit> {
  checkMasterKey(masterKey);
  checkOfficerNames(options.officers);
  const officerCount = options.officers.length;
  const { threshold } = options;
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > officerCount) {
    fail(ErrorCode.InvalidArgument, `threshold must be 1..${officerCount} (the number of officers)`, { threshold, officerCount });
  }
  const keySetId = randomUUID();
  const raw = await shamirSplit(masterKey, officerCount, threshold);
  try {
    assert(raw.length === officerCount, 'one Shamir share per officer');
    const officers = options.officers.map((name, i) => Object.freeze({ name, index: i + 1 }));
    const shareDigests = raw.map((bytes, i) => shareDigest(keySetId, i + 1, bytes).toString('hex'));
    const shares = raw.map((shareBytes, i) =>
      Object.freeze({
        officer: options.officers[i] as string,
        officerIndex: i + 1,
        text: encodeOfficerShare({ keySetId, officerIndex: i + 1, threshold, officerCount, shareBytes }),
      }),
    );
    const keySet: KeySetRecord = Object.freeze({
      version: keySetRecordVersion,
      keySetId,
      threshold,
      officers: Object.freeze(officers),
      shareDigests: Object.freeze(shareDigests),
      verifier: masterKeyVerifier(masterKey, keySetId).toString('hex'),
      createdAt: (options.now ?? (() => new Date()))().toISOString(),
    });
    return Object.freeze({ keySet, shares: Object.freeze(shares) });
  } finally {
    for (const r of raw) r.fill(0);
  }
}

/** Creates a fresh master key, splits it, and forgets it: from here on only T officers can rebuild it. */
export async function initMasterKey(options: MasterKeySplitOptions): Promise<MasterKeySplit> {
  const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
  try {
    return await splitMasterKey(masterKey, options);
  } finally {
    masterKey.fill(0);
  }
}

function keySetProblem(field: string, message: string): never {
  fail(ErrorCode.KeySetInvalid, `key set record: ${field} ${message}`, { field });
}

/**
 * Validates a key set record read back from the metadata store (or anywhere else) and returns a
 * frozen copy; everything downstream trusts its shape.
 */
export function checkKeySetRecord(value: unknown): KeySetRecord {
  if (value === null || typeof value !== 'object') keySetProblem('record', 'is not an object');
  const r = value as Record<string, unknown>;
  if (r.version !== keySetRecordVersion) keySetProblem('version', `must be ${keySetRecordVersion}`);
  if (!isKeySetId(r.keySetId)) keySetProblem('keySetId', 'must be a lowercase UUID');
  if (!Array.isArray(r.officers)) keySetProblem('officers', 'must be an array');
  const officerCount = r.officers.length;
  const threshold = r.threshold as number;
  const problem = geometryProblem(1, threshold, officerCount);
  if (problem !== null) keySetProblem('threshold/officers', problem);
  const names: string[] = [];
  const officers = r.officers.map((o: unknown, i: number) => {
    if (o === null || typeof o !== 'object') keySetProblem(`officers[${i}]`, 'is not an object');
    const { name, index } = o as Record<string, unknown>;
    if (index !== i + 1) keySetProblem(`officers[${i}].index`, `must be ${i + 1}`);
    names.push(name as string);
    return Object.freeze({ name: name as string, index: i + 1 });
  });
  try {
    checkOfficerNames(names);
  } catch (e) {
    keySetProblem('officers', `names are not valid (${(e as Error).message})`);
  }
  const digests = r.shareDigests;
  if (!Array.isArray(digests) || digests.length !== officerCount || !digests.every((d) => typeof d === 'string' && sha256Hex.test(d))) {
    keySetProblem('shareDigests', 'must hold one lowercase hex SHA-256 per officer');
  }
  if (typeof r.verifier !== 'string' || !sha256Hex.test(r.verifier)) keySetProblem('verifier', 'must be a lowercase hex SHA-256');
  if (typeof r.createdAt !== 'string' || Number.isNaN(Date.parse(r.createdAt))) keySetProblem('createdAt', 'must be an ISO date');
  return Object.freeze({
    version: keySetRecordVersion,
    keySetId: r.keySetId,
    threshold,
    officers: Object.freeze(officers),
    shareDigests: Object.freeze([...(digests as string[])]),
    verifier: r.verifier,
    createdAt: r.createdAt,
  });
}

/**
 * Checks one decoded share against the key set: same key set (else SV_OFFICER_SHARE_FOREIGN),
 * same geometry and a matching digest (else SV_OFFICER_SHARE_INVALID, naming the officer the share
 * claims to be). Returns that officer.
 */
export function verifyOfficerShare(keySet: KeySetRecord, share: OfficerShareFields): KeySetOfficer {
  if (share.keySetId !== keySet.keySetId) {
    fail(
      ErrorCode.OfficerShareForeign,
      `share for officer #${share.officerIndex} belongs to key set ${share.keySetId}, not to this appliance's key set ${keySet.keySetId}`,
      { shareKeySetId: share.keySetId, keySetId: keySet.keySetId, officerIndex: share.officerIndex },
    );
  }
  const officer = keySet.officers[share.officerIndex - 1];
  if (officer === undefined || share.officerCount !== keySet.officers.length || share.threshold !== keySet.threshold) {
    fail(
      ErrorCode.OfficerShareInvalid,
      `share for officer #${share.officerIndex} claims ${share.threshold}-of-${share.officerCount}, but key set ${keySet.keySetId} is ${keySet.threshold}-of-${keySet.officers.length}`,
      { keySetId: keySet.keySetId, officerIndex: share.officerIndex },
    );
  }
  const expected = Buffer.from(keySet.shareDigests[officer.index - 1] as string, 'hex');
  const actual = shareDigest(keySet.keySetId, officer.index, share.shareBytes);
  if (!timingSafeEqual(expected, actual)) {
    fail(
      ErrorCode.OfficerShareInvalid,
      `share for officer "${officer.name}" (#${officer.index}) does not match key set ${keySet.keySetId}: damaged, altered, or not this officer's share`,
      { keySetId: keySet.keySetId, officer: officer.name, officerIndex: officer.index },
    );
  }
  return officer;
}

/**
 * Combines verified shares of distinct officers into the master key and checks it against the
 * key set's verifier. Verifies every share first (a bad one is named, never combined). The
 * caller owns (and must wipe) the returned key; the shares are left to the caller too.
 */
export async function combineOfficerShares(keySet: KeySetRecord, shares: readonly OfficerShareFields[]): Promise<Uint8Array> {
  const byIndex = new Map<number, OfficerShareFields>();
  for (const share of shares) {
    const officer = verifyOfficerShare(keySet, share);
    if (byIndex.has(officer.index)) {
      fail(ErrorCode.OfficerShareDuplicate, `officer "${officer.name}" (#${officer.index}) submitted more than one share`, {
        officer: officer.name,
        officerIndex: officer.index,
      });
    }
    byIndex.set(officer.index, share);
  }
  if (byIndex.size < keySet.threshold) {
    fail(ErrorCode.UnsealInsufficient, `${byIndex.size} of the ${keySet.threshold} officer shares needed`, {
      received: byIndex.size,
      threshold: keySet.threshold,
    });
  }
  const chosen = [...byIndex.values()].slice(0, keySet.threshold).map((s) => s.shareBytes);
  let masterKey: Uint8Array;
  if (keySet.threshold === 1) {
    masterKey = (chosen[0] as Uint8Array).slice(0, masterKeyBytes);
  } else {
    masterKey = await combine(chosen);
  }
  assert(masterKey.length === masterKeyBytes, 'Shamir combine of 33-byte shares yields 32 bytes');
  const expected = Buffer.from(keySet.verifier, 'hex');
  if (!timingSafeEqual(expected, masterKeyVerifier(masterKey, keySet.keySetId))) {
    masterKey.fill(0);
    // Every share matched its digest, so the record's digests and verifier disagree: the record
    // was altered or assembled from two key sets. No share is to blame.
    fail(ErrorCode.UnsealVerifyFailed, `the combined key does not match key set ${keySet.keySetId}'s verifier (inconsistent key set record)`, {
      keySetId: keySet.keySetId,
    });
  }
  return masterKey;
}

/** Parses, verifies and combines share texts in one go (e.g. for re-splitting to new officers). */
export async function recoverMasterKey(keySet: KeySetRecord, texts: readonly string[]): Promise<Uint8Array> {
  const parsed: OfficerShareFields[] = [];
  try {
    for (const text of texts) parsed.push(parseOfficerShare(text));
    return await combineOfficerShares(keySet, parsed);
  } finally {
    for (const p of parsed) p.shareBytes.fill(0);
  }
}

/** Anything that can lend the master key for the duration of a call (a SealedState). */
export interface MasterKeyHolder {
  masterKey(): Uint8Array;
}

function derivedWrapKey(holder: MasterKeyHolder): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', holder.masterKey(), new Uint8Array(0), wrapKeyInfo, masterKeyBytes));
}

/** Wraps a 32-byte key (a workgroup key) under the master key. SV_SEALED while sealed. */
export function wrapUnderMaster(holder: MasterKeyHolder, key: Uint8Array): Uint8Array {
  const kek = derivedWrapKey(holder);
  try {
    return wrapKey(kek, key);
  } finally {
    kek.fill(0);
  }
}

/** Unwraps a key wrapped by wrapUnderMaster. SV_SEALED while sealed; SV_KEY_UNWRAP if not ours. */
export function unwrapUnderMaster(holder: MasterKeyHolder, wrapped: Uint8Array): Uint8Array {
  const kek = derivedWrapKey(holder);
  try {
    return unwrapKey(kek, wrapped);
  } finally {
    kek.fill(0);
  }
}
