import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { kekBytes, keyBytes, unwrapKey, wrapKey, wrappedKeyBytes } from '../../appliance/split/keywrap.ts';
import { hex, loadKeyWrap, toHex } from '../vectors/vectors.ts';

// RFC 3394 section 2.2.3.1 default IV, which OpenSSL's id-aes256-wrap takes as its "IV".
const kwDefaultIv = hex('a6a6a6a6a6a6a6a6');
// Enough random pairs to catch a length or ordering slip against OpenSSL, cheap enough to stay fast.
const crossCheckRounds = 64;

const kw = loadKeyWrap();
const rfc46 = kw.vectors.find((v) => v.source.section === '4.6');

function fresh(bytes: number): Uint8Array {
  return new Uint8Array(randomBytes(bytes));
}

function expectCode(t: ExecutionContext, fn: () => unknown, code: ErrorCode, what?: string): StripvaultError {
  const err = t.throws(fn, { instanceOf: StripvaultError }, what);
  t.is(err?.code, code, what);
  return err as StripvaultError;
}

test('sizes: 32-byte KEK, 32-byte key, 40-byte wrapped key', (t) => {
  t.is(kekBytes, 32);
  t.is(keyBytes, 32);
  t.is(wrappedKeyBytes, 40);
});

test('RFC 3394 4.6 (256-bit key data, 256-bit KEK) through wrapKey/unwrapKey', (t) => {
  if (rfc46 === undefined) return t.fail('RFC 3394 4.6 missing from test/vectors/aes-kw.json');
  const kek = hex(rfc46.kek);
  const key = hex(rfc46.keyData);
  t.is(toHex(wrapKey(kek, key)), rfc46.ciphertext);
  t.is(toHex(unwrapKey(kek, hex(rfc46.ciphertext))), rfc46.keyData);
});

test('the other RFC 3394 256-bit-KEK vectors (4.3, 4.5) are outside this API and refused as such', (t) => {
  for (const v of kw.vectors.filter((x) => ['4.3', '4.5'].includes(x.source.section))) {
    t.is(hex(v.kek).length, kekBytes);
    expectCode(t, () => wrapKey(hex(v.kek), hex(v.keyData)), ErrorCode.InvalidArgument, `${v.name}: key length`);
    expectCode(t, () => unwrapKey(hex(v.kek), hex(v.ciphertext)), ErrorCode.InvalidArgument, `${v.name}: wrapped length`);
  }
});

test('agrees with OpenSSL id-aes256-wrap on random keys, both directions', (t) => {
  for (let i = 0; i < crossCheckRounds; i++) {
    const kek = fresh(kekBytes);
    const key = fresh(keyBytes);
    const ours = wrapKey(kek, key);
    const c = createCipheriv('id-aes256-wrap', kek, kwDefaultIv);
    const theirs = Buffer.concat([c.update(key), c.final()]);
    t.is(toHex(ours), theirs.toString('hex'));
    const d = createDecipheriv('id-aes256-wrap', kek, kwDefaultIv);
    t.is(Buffer.concat([d.update(ours), d.final()]).toString('hex'), toHex(key));
    t.is(toHex(unwrapKey(kek, new Uint8Array(theirs))), toHex(key));
  }
});

test('deterministic, fresh output, inputs untouched', (t) => {
  const kek = fresh(kekBytes);
  const key = fresh(keyBytes);
  const kekCopy = toHex(kek);
  const keyCopy = toHex(key);
  const a = wrapKey(kek, key);
  const b = wrapKey(kek, key);
  t.is(a.length, wrappedKeyBytes);
  t.is(toHex(a), toHex(b));
  t.not(a, b);
  const aCopy = toHex(a);
  const back = unwrapKey(kek, a);
  t.is(toHex(back), keyCopy);
  t.is(toHex(kek), kekCopy);
  t.is(toHex(key), keyCopy);
  t.is(toHex(a), aCopy);
  // The unwrapped key is its own 32-byte buffer, not a window onto a larger one holding other bytes.
  t.is(back.byteOffset, 0);
  t.is(back.buffer.byteLength, keyBytes);
});

test('the wrapped key does not contain the key in the clear', (t) => {
  const kek = fresh(kekBytes);
  const key = fresh(keyBytes);
  const wrapped = Buffer.from(wrapKey(kek, key));
  // Any 8-byte semiblock of the key appearing verbatim would mean no encryption happened.
  for (let off = 0; off < keyBytes; off += 8) t.is(wrapped.indexOf(key.subarray(off, off + 8)), -1);
});

test('wrong KEK fails with SV_KEY_UNWRAP', (t) => {
  const kek = fresh(kekBytes);
  const other = fresh(kekBytes);
  const key = fresh(keyBytes);
  const wrapped = wrapKey(kek, key);
  const err = expectCode(t, () => unwrapKey(other, wrapped), ErrorCode.KeyUnwrap);
  // The error must not carry key material.
  const said = `${err.message} ${JSON.stringify(err.detail)}`;
  for (const secret of [kek, other, key]) t.false(said.includes(toHex(secret)));
  // A KEK differing in one bit is just as wrong.
  const nearly = Uint8Array.from(kek);
  nearly[kekBytes - 1]! ^= 0x01;
  expectCode(t, () => unwrapKey(nearly, wrapped), ErrorCode.KeyUnwrap, 'KEK one bit off');
});

test('every single-bit flip of the wrapped key is rejected with SV_KEY_UNWRAP', (t) => {
  const kek = fresh(kekBytes);
  const wrapped = wrapKey(kek, fresh(keyBytes));
  let rejected = 0;
  for (let bit = 0; bit < wrappedKeyBytes * 8; bit++) {
    const flipped = Uint8Array.from(wrapped);
    flipped[bit >> 3]! ^= 1 << (bit & 7);
    try {
      unwrapKey(kek, flipped);
    } catch (e) {
      if (e instanceof StripvaultError && e.code === ErrorCode.KeyUnwrap) rejected++;
    }
  }
  t.is(rejected, wrappedKeyBytes * 8);
});

test('semiblocks swapped, or spliced from another wrapped key, are rejected', (t) => {
  const kek = fresh(kekBytes);
  const a = wrapKey(kek, fresh(keyBytes));
  const b = wrapKey(kek, fresh(keyBytes));
  const swapped = Uint8Array.from(a);
  swapped.set(a.subarray(8, 16), 16);
  swapped.set(a.subarray(16, 24), 8);
  expectCode(t, () => unwrapKey(kek, swapped), ErrorCode.KeyUnwrap, 'swapped');
  const spliced = Uint8Array.from(a);
  spliced.set(b.subarray(24), 24);
  expectCode(t, () => unwrapKey(kek, spliced), ErrorCode.KeyUnwrap, 'spliced');
});

test('truncated or extended wrapped input is rejected before unwrapping', (t) => {
  const kek = fresh(kekBytes);
  const wrapped = wrapKey(kek, fresh(keyBytes));
  const lengths = [0, 1, 8, 24, 32, 39, 41, 48, 56];
  for (const n of lengths) {
    const input = new Uint8Array(n);
    input.set(wrapped.subarray(0, Math.min(n, wrappedKeyBytes)));
    if (n > wrappedKeyBytes) input.set(wrapped.subarray(0, n - wrappedKeyBytes), wrappedKeyBytes);
    expectCode(t, () => unwrapKey(kek, input), ErrorCode.InvalidArgument, `${n} bytes`);
  }
});

test('argument validation: wrong lengths, wrong types, all-zero keys, self-wrap', (t) => {
  const kek = fresh(kekBytes);
  const key = fresh(keyBytes);
  const wrapped = wrapKey(kek, key);
  for (const n of [0, 16, 24, 31, 33, 64]) {
    expectCode(t, () => wrapKey(fresh(n), key), ErrorCode.InvalidArgument, `wrap: ${n}-byte KEK`);
    expectCode(t, () => unwrapKey(fresh(n), wrapped), ErrorCode.InvalidArgument, `unwrap: ${n}-byte KEK`);
    expectCode(t, () => wrapKey(kek, fresh(n)), ErrorCode.InvalidArgument, `wrap: ${n}-byte key`);
  }
  const notBytes: unknown[] = [undefined, null, toHex(key), Array.from(key), new Uint16Array(16), key.buffer];
  for (const bad of notBytes) {
    expectCode(t, () => wrapKey(bad as Uint8Array, key), ErrorCode.InvalidArgument, `wrap: KEK ${typeof bad}`);
    expectCode(t, () => wrapKey(kek, bad as Uint8Array), ErrorCode.InvalidArgument, `wrap: key ${typeof bad}`);
    expectCode(t, () => unwrapKey(kek, bad as Uint8Array), ErrorCode.InvalidArgument, `unwrap: wrapped ${typeof bad}`);
  }
  const zeros = new Uint8Array(kekBytes);
  expectCode(t, () => wrapKey(zeros, key), ErrorCode.InvalidArgument, 'all-zero KEK');
  expectCode(t, () => wrapKey(kek, zeros), ErrorCode.InvalidArgument, 'all-zero key');
  expectCode(t, () => unwrapKey(zeros, wrapped), ErrorCode.InvalidArgument, 'unwrap with all-zero KEK');
  expectCode(t, () => wrapKey(kek, Uint8Array.from(kek)), ErrorCode.InvalidArgument, 'key equal to KEK');
  // Buffer is a Uint8Array and must be accepted.
  t.is(toHex(unwrapKey(Buffer.from(kek), Buffer.from(wrapKey(Buffer.from(kek), Buffer.from(key))))), toHex(key));
});
