/**
 * Workgroup keys at rest: 32 random bytes, RFC 3394-wrapped under a key-encryption key derived
 * from the master key *for one key of one COI*:
 *
 *   KEK = HKDF-SHA-256(masterKey, salt = "", info = wrapInfo ‖ COI id (16 bytes) ‖ key id (16 bytes))
 *
 * A wrapped key copied or moved to another COI's row or another id unwraps under a different KEK,
 * so RFC 3394's integrity check refuses it (SV_KEY_UNWRAP): whoever can write the store cannot hand
 * one COI's key to another. The info string also keeps this KEK apart from every other key derived
 * from the master key (the master-key wrap, the CA key encryption).
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import { ErrorCode, assert, fail, isStripvaultError } from '../appliance/errors.ts';
import { keyBytes, unwrapKey, wrapKey } from '../appliance/split/keywrap.ts';
import type { MasterKeyHolder } from './master-key.ts';

export const workgroupKeyBytes = keyBytes;
/** The strip header's wrapper id: 16 bytes, shown as 32 hex digits. */
export const workgroupKeyIdBytes = 16;
const wrapInfo = Buffer.from('stripvault/workgroup-key/wrap/v1\0', 'ascii');
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const keyIdPattern = /^[0-9a-f]{32}$/;

/** Which key of which COI a wrapped key belongs to: both go into its KEK. */
export interface WorkgroupKeyBinding {
  /** The COI's id (lower-case UUID), not its name: a renamed COI keeps its keys. */
  readonly coiId: string;
  /** 32 lower-case hex digits. */
  readonly keyId: string;
}

/** A fresh, non-zero 16-byte id as hex (all-zero ids are refused by the strip header). */
export function newWorkgroupKeyId(): string {
  for (;;) {
    const id = randomBytes(workgroupKeyIdBytes);
    if (id.some((b) => b !== 0)) return id.toString('hex');
  }
}

/** 32 fresh random bytes; the caller owns and must zero them. */
export function newWorkgroupKey(): Buffer {
  return randomBytes(workgroupKeyBytes);
}

export function isWorkgroupKeyId(value: unknown): value is string {
  return typeof value === 'string' && keyIdPattern.test(value);
}

function bindingInfo(binding: WorkgroupKeyBinding): Buffer {
  if (typeof binding?.coiId !== 'string' || !uuidPattern.test(binding.coiId)) fail(ErrorCode.InvalidArgument, 'coiId must be a lower-case UUID');
  if (!isWorkgroupKeyId(binding.keyId)) fail(ErrorCode.InvalidArgument, 'keyId must be 32 lower-case hex digits');
  return Buffer.concat([wrapInfo, Buffer.from(binding.coiId.replaceAll('-', ''), 'hex'), Buffer.from(binding.keyId, 'hex')]);
}

function derivedKek(holder: MasterKeyHolder, binding: WorkgroupKeyBinding): Uint8Array {
  const info = bindingInfo(binding);
  const kek = new Uint8Array(hkdfSync('sha256', holder.masterKey(), new Uint8Array(0), info, keyBytes));
  assert(kek.length === keyBytes, 'HKDF yields a 32-byte KEK');
  return kek;
}

/** Wraps `key` for `binding`. SV_SEALED while sealed. */
export function wrapWorkgroupKey(holder: MasterKeyHolder, binding: WorkgroupKeyBinding, key: Uint8Array): Uint8Array {
  const kek = derivedKek(holder, binding);
  try {
    return wrapKey(kek, key);
  } finally {
    kek.fill(0);
  }
}

/**
 * Unwraps a key wrapped for `binding`; the caller owns (and must zero) the result. SV_SEALED
 * while sealed; SV_KEY_UNWRAP if it was wrapped for another COI or id, or altered.
 */
export function unwrapWorkgroupKey(holder: MasterKeyHolder, binding: WorkgroupKeyBinding, wrapped: Uint8Array): Uint8Array {
  const kek = derivedKek(holder, binding);
  try {
    return unwrapKey(kek, wrapped);
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.KeyUnwrap)) {
      fail(ErrorCode.KeyUnwrap, `workgroup key ${binding.keyId} does not unwrap for its COI and id (altered, moved or copied in the store?)`, { keyId: binding.keyId }, e);
    }
    throw e;
  } finally {
    kek.fill(0);
  }
}
