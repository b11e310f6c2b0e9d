/**
 * The crypto-split engine: seal one primary block into N authenticated shares, open any M back.
 * Pure functions, no I/O. See DESIGN.md §4 for the guarantees and aont.ts / share-binding.ts for
 * the construction:
 *
 *   block ──AONT──▶ package (C ‖ K⊕H(C)) ──Reed-Solomon M-of-N──▶ fragments
 *         ──AES-256-GCM per strip (session key, nonce from address/generation/strip)──▶ shares
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { ErrorCode, StripvaultError, fail } from '../errors.ts';
import { aontDecode, aontEncode, packageBytes } from './aont.ts';
import { validateBlockBytes, validateGeometry } from './geometry.ts';
import { erasureCodec } from './reed-solomon.ts';
import {
  ShareKind,
  shareAad,
  shareNonce,
  tagBytes,
  validateBinding,
  type ShareBinding,
} from './share-binding.ts';

export const sessionKeyBytes = 32;

/** Bytes of one dispersed fragment for a block of `blockBytes` split M ways. */
export function fragmentBytes(blockBytes: number, m: number): number {
  return Math.ceil(packageBytes(blockBytes) / m);
}

/** Bytes of a sealed share body: the encrypted fragment plus its tag (a zero marker is a tag alone). */
export function shareBodyBytes(blockBytes: number, m: number, kind: ShareKind): number {
  return (kind === ShareKind.Data ? fragmentBytes(blockBytes, m) : 0) + tagBytes;
}

export interface SessionKeyRef {
  readonly key: Uint8Array;
  readonly keySlot: number;
}

export interface SealRequest {
  readonly volumeId: Uint8Array;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly address: number;
  readonly generation: number;
  readonly epoch: number;
  /** The primary block, or null for an all-zero block (write-zeroes, trim): shares carry only a tag. */
  readonly block: Uint8Array | null;
  /** The session key that seals strip `stripIndex`'s share of this block; null skips that strip
   *  (it is unreachable and its share would never be stored). */
  readonly sessionKey: (stripIndex: number) => SessionKeyRef | null;
}

export interface SealedShare {
  readonly stripIndex: number;
  readonly kind: ShareKind;
  readonly generation: number;
  readonly epoch: number;
  readonly keySlot: number;
  /** ciphertext ‖ GCM tag */
  readonly body: Buffer;
}

function checkKey(key: Uint8Array, stripIndex: number): void {
  if (!(key instanceof Uint8Array) || key.length !== sessionKeyBytes) {
    fail(ErrorCode.InvalidArgument, `session key for strip ${stripIndex} must be ${sessionKeyBytes} bytes`);
  }
}

function gcmSeal(key: Uint8Array, binding: ShareBinding, fragment: Uint8Array | null): Buffer {
  const cipher = createCipheriv('aes-256-gcm', key, shareNonce(binding), { authTagLength: tagBytes });
  cipher.setAAD(shareAad(binding));
  const parts = fragment === null ? [] : [cipher.update(fragment)];
  parts.push(cipher.final(), cipher.getAuthTag());
  return Buffer.concat(parts);
}

/** Returns the fragment (empty for a zero marker), or null if the share does not authenticate. */
function gcmOpen(key: Uint8Array, binding: ShareBinding, body: Uint8Array): Buffer | null {
  const split = body.length - tagBytes;
  const decipher = createDecipheriv('aes-256-gcm', key, shareNonce(binding), { authTagLength: tagBytes });
  decipher.setAAD(shareAad(binding));
  decipher.setAuthTag(body.subarray(split));
  const fragment = decipher.update(body.subarray(0, split));
  try {
    decipher.final();
  } catch {
    return null;
  }
  return fragment;
}

/** Seals the block into one share per strip (fewer if `sessionKey` skips some), in strip order. */
export function sealBlock(req: SealRequest): SealedShare[] {
  const { m, n } = validateGeometry(req.m, req.n);
  const blockBytes = validateBlockBytes(req.blockBytes);
  const kind = req.block === null ? ShareKind.Zero : ShareKind.Data;
  if (req.block !== null && req.block.length !== blockBytes) {
    fail(ErrorCode.InvalidArgument, `block is ${req.block.length} bytes, volume block size is ${blockBytes}`);
  }
  let fragments: Uint8Array[] | null = null;
  if (req.block !== null) {
    const fragLen = fragmentBytes(blockBytes, m);
    const pkg = Buffer.allocUnsafe(fragLen * m);
    aontEncode(req.block, pkg);
    const data: Uint8Array[] = [];
    for (let i = 0; i < m; i++) data.push(pkg.subarray(i * fragLen, (i + 1) * fragLen));
    fragments = erasureCodec(m, n).encode(data);
  }
  const shares: SealedShare[] = [];
  for (let stripIndex = 0; stripIndex < n; stripIndex++) {
    const ref = req.sessionKey(stripIndex);
    if (ref === null) continue;
    const { key, keySlot } = ref;
    checkKey(key, stripIndex);
    const binding: ShareBinding = {
      volumeId: req.volumeId,
      m,
      n,
      blockBytes,
      stripIndex,
      address: req.address,
      generation: req.generation,
      epoch: req.epoch,
      keySlot,
      kind,
    };
    validateBinding(binding);
    const body = gcmSeal(key, binding, fragments === null ? null : fragments[stripIndex]!);
    shares.push({ stripIndex, kind, generation: req.generation, epoch: req.epoch, keySlot, body });
  }
  return shares;
}

/** A share as read back from a strip slot: its plaintext metadata is a claim until authenticated. */
export interface ShareCandidate {
  readonly stripIndex: number;
  /** 0 means the slot was never written. */
  readonly generation: number;
  readonly epoch: number;
  readonly keySlot: number;
  readonly kind: ShareKind;
  readonly body: Uint8Array;
}

export type RejectReason =
  /** failed authentication: corrupted, forged, or moved from another address/strip/volume */
  | 'auth'
  /** authentic but older than the block's current generation (or never written) */
  | 'stale'
  /** authentic, newer, but too few strips have that generation: a write that never completed */
  | 'incomplete'
  /** wrong size or fields for this volume's geometry */
  | 'malformed'
  /** no session key for the key slot the share names */
  | 'no-key';

export interface ShareRejection {
  readonly stripIndex: number;
  readonly reason: RejectReason;
  readonly generation: number;
}

export interface OpenRequest {
  readonly volumeId: Uint8Array;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly address: number;
  /** At most one candidate per strip. */
  readonly shares: readonly ShareCandidate[];
  /** The session key for (strip, key slot), or undefined if that slot holds none. */
  readonly sessionKey: (stripIndex: number, keySlot: number) => Uint8Array | undefined;
  /**
   * True when `shares` holds a share from every strip that has the block's current data (all healthy
   * strips were read). Only then may a torn newer write be rolled back to the previous generation:
   * with a partial read, the missing strips might hold a complete newer write.
   */
  readonly complete: boolean;
  /** Authenticate every candidate, not just the M used (scrub). */
  readonly verifyAll?: boolean;
  /**
   * Strips known to have missed writes. Their shares count for the newest authentic generation,
   * but never toward rolling back past a newer one: an old share on a strip that was away says
   * nothing about whether the newer write completed.
   */
  readonly stale?: readonly number[];
}

export interface OpenResult {
  /** The block (all zeros when never written or zeroed). */
  readonly block: Buffer;
  /** Generation the block was read at (0 when never written). */
  readonly generation: number;
  readonly kind: ShareKind | 'empty';
  /** Strips whose shares were used. */
  readonly used: readonly number[];
  /** Shares that were rejected, and why: each needs repair. */
  readonly rejected: readonly ShareRejection[];
}

export class NotEnoughSharesError extends StripvaultError {
  /** True when reading the strips not yet read could still open the block. */
  readonly needMore: boolean;
  readonly rejected: readonly ShareRejection[];
  constructor(message: string, rejected: readonly ShareRejection[], needMore: boolean, address: number) {
    super(ErrorCode.NotEnoughShares, message, { address, needMore, rejected: rejected.map((r) => ({ ...r })) });
    this.name = 'NotEnoughSharesError';
    this.needMore = needMore;
    this.rejected = rejected;
  }
}

interface Verified {
  readonly candidate: ShareCandidate;
  readonly fragment: Buffer;
}

export function openBlock(req: OpenRequest): OpenResult {
  const { m, n } = validateGeometry(req.m, req.n);
  const blockBytes = validateBlockBytes(req.blockBytes);
  const rejected: ShareRejection[] = [];
  const reject = (c: ShareCandidate, reason: RejectReason): void => {
    rejected.push({ stripIndex: c.stripIndex, reason, generation: c.generation });
  };

  const seen = new Set<number>();
  const byGeneration = new Map<number, ShareCandidate[]>();
  for (const c of req.shares) {
    if (!Number.isInteger(c.stripIndex) || c.stripIndex < 0 || c.stripIndex >= n || seen.has(c.stripIndex)) {
      fail(ErrorCode.InvalidArgument, `bad or duplicate strip index ${c.stripIndex} among shares`);
    }
    seen.add(c.stripIndex);
    if (c.generation === 0) {
      // never written: a claim of generation 0 that needs no key
      push(byGeneration, 0, c);
      continue;
    }
    const okKind = c.kind === ShareKind.Data || c.kind === ShareKind.Zero;
    if (!okKind || c.body.length !== shareBodyBytes(blockBytes, m, c.kind)) {
      reject(c, 'malformed');
      continue;
    }
    push(byGeneration, c.generation, c);
  }

  const verify = (c: ShareCandidate): Buffer | null => {
    const key = req.sessionKey(c.stripIndex, c.keySlot);
    if (key === undefined) {
      reject(c, 'no-key');
      return null;
    }
    const binding: ShareBinding = {
      volumeId: req.volumeId,
      m,
      n,
      blockBytes,
      stripIndex: c.stripIndex,
      address: req.address,
      generation: c.generation,
      epoch: c.epoch,
      keySlot: c.keySlot,
      kind: c.kind,
    };
    try {
      validateBinding(binding);
    } catch {
      reject(c, 'malformed');
      return null;
    }
    const fragment = gcmOpen(key, binding, c.body);
    if (fragment === null) reject(c, 'auth');
    return fragment;
  };

  // Newest claimed generation first; data fragments (index < M) first within one, since the
  // systematic code then needs no decoding.
  const generations = [...byGeneration.keys()].sort((a, b) => b - a);
  const incomplete: Verified[] = [];
  let winner: { generation: number; verified: Verified[] } | null = null;
  const stale = new Set(req.stale ?? []);
  for (const generation of generations) {
    let group = byGeneration.get(generation)!.sort((a, b) => a.stripIndex - b.stripIndex);
    if (incomplete.length > 0) group = group.filter((c) => !stale.has(c.stripIndex));
    if (generation === 0) {
      winner = { generation, verified: group.map((candidate) => ({ candidate, fragment: Buffer.alloc(0) })) };
      if (winner.verified.length >= m) break;
      winner = null;
      continue;
    }
    const verified: Verified[] = [];
    for (const candidate of group) {
      if (verified.length >= m && !req.verifyAll) break;
      const fragment = verify(candidate);
      if (fragment !== null) verified.push({ candidate, fragment });
    }
    const kinds = new Set(verified.map((v) => v.candidate.kind));
    if (verified.length >= m && kinds.size === 1) {
      winner = { generation, verified };
      break;
    }
    // Authentic but too few: a newer write that did not reach M strips (or whose other shares are
    // unreadable). Remember it; whether we may look past it is decided below.
    incomplete.push(...verified);
    if (verified.length > 0 && !req.complete) break;
  }

  if (winner !== null && incomplete.length > 0) {
    // Rolling back past an authentic newer share is safe only if every healthy strip answered and
    // none failed authentication; otherwise the newer write may be complete on shares we cannot see.
    const anyAuthFailure = rejected.some((r) => r.reason === 'auth' || r.reason === 'no-key' || r.reason === 'malformed');
    if (!req.complete || anyAuthFailure || !everyCandidateVerified(req, winner.generation, verify)) winner = null;
  }
  if (winner === null) {
    const needMore = !req.complete;
    throw new NotEnoughSharesError(
      `block ${req.address}: fewer than ${m} consistent authentic shares` +
        (rejected.length ? ` (rejected: ${rejected.map((r) => `strip ${r.stripIndex} ${r.reason}`).join(', ')})` : ''),
      rejected,
      needMore,
      req.address,
    );
  }

  // Rolled back past these: authentic, but part of a write that never completed.
  for (const v of incomplete) rejected.push({ stripIndex: v.candidate.stripIndex, reason: 'incomplete', generation: v.candidate.generation });
  const used = winner.verified.slice(0, m);
  const usedSet = new Set(used.map((v) => v.candidate.stripIndex));
  for (const c of req.shares) {
    if (c.generation < winner.generation && !rejected.some((r) => r.stripIndex === c.stripIndex)) {
      rejected.push({ stripIndex: c.stripIndex, reason: 'stale', generation: c.generation });
    }
  }
  const generation = winner.generation;
  const first = used[0]!.candidate;
  if (generation === 0 || first.kind === ShareKind.Zero) {
    return {
      block: Buffer.alloc(blockBytes),
      generation,
      kind: generation === 0 ? 'empty' : ShareKind.Zero,
      used: [...usedSet],
      rejected,
    };
  }
  const fragments: (Uint8Array | undefined)[] = new Array(n).fill(undefined);
  for (const v of used) fragments[v.candidate.stripIndex] = v.fragment;
  const data = erasureCodec(m, n).reconstructData(fragments);
  const pkg = data.length === 1 ? data[0]! : Buffer.concat(data);
  return { block: aontDecode(pkg, blockBytes), generation, kind: ShareKind.Data, used: [...usedSet], rejected };
}

/** Authenticates the remaining candidates at or below `generation`; false if any fails. */
function everyCandidateVerified(
  req: OpenRequest,
  generation: number,
  verify: (c: ShareCandidate) => Buffer | null,
): boolean {
  // Shares of the winning generation not yet checked, and older ones, must all be authentic too.
  let ok = true;
  for (const c of req.shares) {
    if (c.generation === 0 || c.generation > generation) continue;
    if (verify(c) === null) ok = false;
  }
  return ok;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
