/**
 * Key wrap for stripvault's 256-bit keys: AES-256 Key Wrap, RFC 3394 (NIST SP 800-38F "KW"),
 * computed by @noble/ciphers' `aeskw`.
 *
 * Why KW and not KWP (RFC 5649): every key stripvault wraps is exactly 32 bytes, a whole number of
 * 64-bit semiblocks, so padding buys nothing, and KW's default IV gives the same 64-bit integrity
 * check. Why a key-wrap mode at all rather than an AEAD with a random nonce: KW is deterministic, so
 * there is no nonce to get wrong, and wrapping the same key twice under the same KEK gives the same
 * bytes (no secret is leaked by that; the wrapped key is a key, not a message).
 *
 * The API only accepts the one shape it is for (32-byte KEK, 32-byte key, 40-byte wrapped key), so
 * misuse fails loudly with SV_INVALID_ARGUMENT before any cryptography runs; an unwrap whose
 * integrity check fails (wrong KEK, or wrapped bytes altered) is SV_KEY_UNWRAP.
 */
import { timingSafeEqual } from 'node:crypto';
import { aeskw } from '@noble/ciphers/aes.js';
import { ErrorCode, assert, fail } from '../errors.ts';

/** AES-256: the key-encryption key. */
export const kekBytes = 32;
/** AES-256 keys (session and workgroup keys) are what gets wrapped. */
export const keyBytes = 32;
/** RFC 3394 adds one 64-bit semiblock (the integrity check value) to the key data. */
export const wrappedKeyBytes = keyBytes + 8;

function checkBytes(name: string, value: unknown, expectedBytes: number): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    fail(ErrorCode.InvalidArgument, `${name} must be a Uint8Array`, { name, type: typeof value });
  }
  if (value.length !== expectedBytes) {
    fail(ErrorCode.InvalidArgument, `${name} must be ${expectedBytes} bytes, got ${value.length}`, {
      name,
      expectedBytes,
      actualBytes: value.length,
    });
  }
}

// An all-zero key is, in practice, a buffer someone allocated and never filled; accepting it would
// turn that bug into silently "protected" data. A real random key is all-zero with probability 2^-256.
function checkNotAllZero(name: string, value: Uint8Array): void {
  let any = 0;
  for (const b of value) any |= b;
  if (any === 0) fail(ErrorCode.InvalidArgument, `${name} is all zero bytes (uninitialised key?)`, { name });
}

function checkKek(kek: unknown): asserts kek is Uint8Array {
  checkBytes('kek', kek, kekBytes);
  checkNotAllZero('kek', kek);
}

/** Wraps a 32-byte key under a 32-byte KEK. Deterministic; returns 40 fresh bytes. */
export function wrapKey(kek: Uint8Array, key: Uint8Array): Uint8Array {
  checkKek(kek);
  checkBytes('key', key, keyBytes);
  checkNotAllZero('key', key);
  // A key wrapped under itself unwraps with itself: it protects nothing.
  if (timingSafeEqual(kek, key)) fail(ErrorCode.InvalidArgument, 'refusing to wrap a key under itself');
  // noble copies `key` into the output buffer and encrypts it in place, and zeroes its expanded
  // KEK schedule, so no plaintext copy of the key is left behind by this call.
  return aeskw(kek).encrypt(key);
}

/**
 * Unwraps a 40-byte wrapped key. Throws SV_KEY_UNWRAP if the integrity check fails: the KEK is
 * not the one it was wrapped under, or the wrapped bytes were altered. The caller owns (and should
 * zero when done) the returned 32-byte key.
 */
export function unwrapKey(kek: Uint8Array, wrapped: Uint8Array): Uint8Array {
  checkKek(kek);
  checkBytes('wrapped', wrapped, wrappedKeyBytes);
  let recovered: Uint8Array;
  try {
    recovered = aeskw(kek).decrypt(wrapped);
  } catch (cause) {
    // Lengths were checked above, so the only failure left is the RFC 3394 section 2.2.3 check.
    fail(ErrorCode.KeyUnwrap, 'wrapped key failed its integrity check (wrong KEK or altered data)', { wrappedBytes: wrapped.length }, cause);
  }
  // noble returns a view past the (zeroed) IV in a larger buffer; hand back a standalone copy
  // and wipe the view, so the only copy of the key is the one the caller owns.
  assert(recovered.length === keyBytes, 'RFC 3394 unwrap of 40 bytes yields 32');
  const key = new Uint8Array(keyBytes);
  key.set(recovered);
  recovered.fill(0);
  return key;
}
