/**
 * Known-answer tests for every cryptographic primitive stripvault relies on, each run through every
 * library that provides it here: node:crypto (OpenSSL, the data path), @noble/ciphers (key wrap and
 * cross-checks) and node-forge (a second, independent SHA-256/HMAC). The vectors and where each
 * comes from are in test/vectors/*.json; a failure here means a library (or a platform build of
 * it) does not compute the published answer, so nothing above it can be trusted.
 */
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createCipheriv, createDecipheriv, createHash, createHmac } from 'node:crypto';
import { aeskw, aeskwp, ctr, ecb, gcm } from '@noble/ciphers/aes.js';
import forge from 'node-forge';
import {
  hex,
  loadBlock,
  loadCtr,
  loadGcm,
  loadHmacSha256,
  loadKeyWrap,
  loadKeyWrapPadded,
  loadSha256,
  toHex,
} from '../vectors/vectors.ts';
import type { GcmVector, KeyWrapVector } from '../vectors/vectors.ts';

const aesBlockBytes = 16;
const gcmTagBytes = 16;
// The one-million-'a' message is fed in pieces too, so streaming and one-shot paths both get checked.
const shaChunkBytes = 1000;
// RFC 3394 section 2.2.3.1 default IV and RFC 5649 section 3 AIV prefix: OpenSSL takes them as the "IV".
const kwDefaultIv = hex('a6a6a6a6a6a6a6a6');
const kwpAivPrefix = hex('a65959a6');

const blockFile = loadBlock();
const ctrFile = loadCtr();
const gcmFile = loadGcm();
const shaFile = loadSha256();
const hmacFile = loadHmacSha256();
const kwFile = loadKeyWrap();
const kwpFile = loadKeyWrapPadded();

function sameHex(t: ExecutionContext, actual: Uint8Array, expected: string, what: string): void {
  t.is(toHex(actual), expected, what);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function xorBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function nodeEcbEncryptBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  const c = createCipheriv('aes-256-ecb', key, null).setAutoPadding(false);
  return concat(c.update(block), c.final());
}

function nodeEcbDecryptBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  const d = createDecipheriv('aes-256-ecb', key, null).setAutoPadding(false);
  return concat(d.update(block), d.final());
}

function plusOneBigEndian(block: Uint8Array): Uint8Array {
  const out = Uint8Array.from(block);
  for (let i = out.length - 1; i >= 0; i--) {
    out[i] = (out[i]! + 1) & 0xff;
    if (out[i] !== 0) break;
  }
  return out;
}

// ---------------------------------------------------------------- AES-256 block cipher

for (const v of blockFile.vectors) {
  const key = hex(v.key);
  const pt = hex(v.plaintext);

  test(`AES-256 block: ${v.name} — node:crypto aes-256-ecb`, (t) => {
    sameHex(t, nodeEcbEncryptBlock(key, pt), v.ciphertext, 'encrypt');
    sameHex(t, nodeEcbDecryptBlock(key, hex(v.ciphertext)), v.plaintext, 'decrypt');
  });

  test(`AES-256 block: ${v.name} — @noble/ciphers ecb`, (t) => {
    sameHex(t, ecb(key, { disablePadding: true }).encrypt(pt), v.ciphertext, 'encrypt');
    sameHex(t, ecb(key, { disablePadding: true }).decrypt(hex(v.ciphertext)), v.plaintext, 'decrypt');
  });
}

// ---------------------------------------------------------------- AES-256-CTR

for (const v of ctrFile.vectors) {
  const key = hex(v.key);
  const iv = hex(v.initCounter);
  const plaintext = concat(...v.blocks.map((b) => hex(b.plaintext)));
  const ciphertext = concat(...v.blocks.map((b) => hex(b.ciphertext)));
  const [input, expected] = v.direction === 'encrypt' ? [plaintext, ciphertext] : [ciphertext, plaintext];

  test(`AES-256-CTR: ${v.name} — vector is self-consistent (counter blocks, keystream XOR)`, (t) => {
    let counter = iv;
    for (const [i, b] of v.blocks.entries()) {
      t.is(b.inputBlock, toHex(counter), `block ${i + 1} input block is the incremented counter`);
      sameHex(t, xorBytes(hex(b.plaintext), hex(b.outputBlock)), b.ciphertext, `block ${i + 1} C = P xor O`);
      counter = plusOneBigEndian(counter);
    }
  });

  test(`AES-256-CTR: ${v.name} — node:crypto aes-256-ctr`, (t) => {
    const make = v.direction === 'encrypt' ? createCipheriv : createDecipheriv;
    const whole = make('aes-256-ctr', key, iv);
    sameHex(t, concat(whole.update(input), whole.final()), toHex(expected), 'one shot');

    // The data path streams; the counter must carry across update() calls, block by block.
    const stream = make('aes-256-ctr', key, iv);
    const pieces: Uint8Array[] = [];
    for (let off = 0; off < input.length; off += aesBlockBytes) {
      pieces.push(stream.update(input.subarray(off, off + aesBlockBytes)));
    }
    pieces.push(stream.final());
    sameHex(t, concat(...pieces), toHex(expected), 'block by block');

    for (const [i, b] of v.blocks.entries()) {
      sameHex(t, nodeEcbEncryptBlock(key, hex(b.inputBlock)), b.outputBlock, `keystream block ${i + 1}`);
    }
  });

  test(`AES-256-CTR: ${v.name} — @noble/ciphers ctr`, (t) => {
    const cipher = ctr(key, iv);
    const out = v.direction === 'encrypt' ? cipher.encrypt(input) : cipher.decrypt(input);
    sameHex(t, out, toHex(expected), 'one shot');
    t.is(toHex(iv), v.initCounter, 'noble leaves the caller nonce untouched');

    for (const [i, b] of v.blocks.entries()) {
      sameHex(t, ecb(key, { disablePadding: true }).encrypt(hex(b.inputBlock)), b.outputBlock, `keystream block ${i + 1}`);
    }
  });
}

// Not a published vector: both libraries must carry the counter across the 32-, 64- and 128-bit
// boundaries the same way (full 128-bit big-endian increment, as in SP 800-38A Appendix B.1).
test('AES-256-CTR cross-check: node:crypto and @noble/ciphers agree across counter carries', (t) => {
  const key = hex(ctrFile.vectors[0]!.key);
  const input = new Uint8Array(4 * aesBlockBytes).fill(0x5a);
  const counters = [
    '000000000000000000000000fffffffe',
    '0000000000000000fffffffffffffffe',
    'fffffffffffffffffffffffffffffffe',
  ];
  for (const start of counters) {
    const c = createCipheriv('aes-256-ctr', key, hex(start));
    const viaNode = concat(c.update(input), c.final());
    const viaNoble = ctr(key, hex(start)).encrypt(input);
    t.is(toHex(viaNode), toHex(viaNoble), `start ${start}`);
    // Independent of both: the third block's keystream is E(K, start + 2).
    const third = plusOneBigEndian(plusOneBigEndian(hex(start)));
    const keystream = nodeEcbEncryptBlock(key, third);
    sameHex(t, xorBytes(viaNode.subarray(32, 48), keystream), toHex(input.subarray(32, 48)), `start ${start} block 3`);
  }
});

// ---------------------------------------------------------------- AES-256-GCM

function gcmNodeEncrypt(v: { key: Uint8Array; iv: Uint8Array; aad: Uint8Array; plaintext: Uint8Array }) {
  const c = createCipheriv('aes-256-gcm', v.key, v.iv, { authTagLength: gcmTagBytes });
  c.setAAD(v.aad);
  const ciphertext = concat(c.update(v.plaintext), c.final());
  return { ciphertext, tag: new Uint8Array(c.getAuthTag()) };
}

function gcmNodeDecrypt(v: { key: Uint8Array; iv: Uint8Array; aad: Uint8Array; ciphertext: Uint8Array; tag: Uint8Array }) {
  // Pinning authTagLength makes node refuse a shortened tag instead of checking only its prefix.
  const d = createDecipheriv('aes-256-gcm', v.key, v.iv, { authTagLength: gcmTagBytes });
  d.setAAD(v.aad);
  d.setAuthTag(v.tag);
  return concat(d.update(v.ciphertext), d.final());
}

function gcmBytes(v: GcmVector) {
  return {
    key: hex(v.key),
    iv: hex(v.iv),
    aad: hex(v.aad),
    plaintext: hex(v.plaintext),
    ciphertext: hex(v.ciphertext),
    tag: hex(v.tag),
  };
}

for (const v of gcmFile.vectors) {
  const b = gcmBytes(v);
  const zeroBlock = new Uint8Array(aesBlockBytes);

  test(`AES-256-GCM: ${v.name} — node:crypto aes-256-gcm`, (t) => {
    const out = gcmNodeEncrypt(b);
    sameHex(t, out.ciphertext, v.ciphertext, 'ciphertext');
    sameHex(t, out.tag, v.tag, 'tag');
    sameHex(t, gcmNodeDecrypt(b), v.plaintext, 'decrypt');
    sameHex(t, nodeEcbEncryptBlock(b.key, zeroBlock), v.h, 'hash subkey H = E(K, 0^128)');
  });

  test(`AES-256-GCM: ${v.name} — @noble/ciphers gcm`, (t) => {
    const sealed = gcm(b.key, b.iv, b.aad).encrypt(b.plaintext);
    sameHex(t, sealed, v.ciphertext + v.tag, 'ciphertext || tag');
    sameHex(t, gcm(b.key, b.iv, b.aad).decrypt(concat(b.ciphertext, b.tag)), v.plaintext, 'decrypt');
    sameHex(t, ecb(b.key, { disablePadding: true }).encrypt(zeroBlock), v.h, 'hash subkey H = E(K, 0^128)');
  });
}

for (const n of gcmFile.negative) {
  const base = gcmFile.vectors.find((v) => v.name === n.derivedFrom);
  const tampered = () => {
    if (base === undefined) throw new Error(`${n.name}: no vector named ${n.derivedFrom}`);
    const b = gcmBytes(base);
    const field = b[n.field];
    if (n.byteIndex >= field.length) throw new Error(`${n.name}: byte ${n.byteIndex} is outside ${n.field}`);
    field[n.byteIndex]! ^= n.xorMask;
    return b;
  };

  test(`AES-256-GCM reject: ${n.name} — node:crypto`, (t) => {
    t.throws(() => gcmNodeDecrypt(tampered()), { message: /unable to authenticate/i });
  });

  test(`AES-256-GCM reject: ${n.name} — @noble/ciphers`, (t) => {
    const b = tampered();
    t.throws(() => gcm(b.key, b.iv, b.aad).decrypt(concat(b.ciphertext, b.tag)), { message: /invalid tag/i });
  });
}

test('AES-256-GCM reject: shortened tag — node:crypto with authTagLength pinned, @noble/ciphers', (t) => {
  const b = gcmBytes(gcmFile.vectors.find((v) => v.name === 'GCM Test Case 16')!);
  const short = b.tag.subarray(0, 12);
  t.throws(() => gcmNodeDecrypt({ ...b, tag: short }), { code: 'ERR_CRYPTO_INVALID_AUTH_TAG' });
  t.throws(() => gcm(b.key, b.iv, b.aad).decrypt(concat(b.ciphertext, short)));
});

// ---------------------------------------------------------------- SHA-256

for (const v of shaFile.vectors) {
  const piece = Buffer.from(v.messageAscii, 'latin1');

  test(`SHA-256: ${v.name} — node:crypto sha256`, (t) => {
    const message = Buffer.alloc(piece.length * v.repeat, piece);
    t.is(createHash('sha256').update(message).digest('hex'), v.digest, 'one shot');
    const h = createHash('sha256');
    for (let off = 0; off < message.length; off += shaChunkBytes) h.update(message.subarray(off, off + shaChunkBytes));
    t.is(h.digest('hex'), v.digest, 'streamed');
  });

  test(`SHA-256: ${v.name} — node-forge sha256`, (t) => {
    const md = forge.md.sha256.create();
    md.update(v.messageAscii.repeat(v.repeat), 'raw');
    t.is(md.digest().toHex(), v.digest);
  });
}

// ---------------------------------------------------------------- HMAC-SHA-256

for (const v of hmacFile.vectors) {
  const key = hex(v.key);
  const data = hex(v.data);

  test(`HMAC-SHA-256: ${v.name} — node:crypto`, (t) => {
    if (v.dataAscii !== undefined) t.is(Buffer.from(v.dataAscii, 'latin1').toString('hex'), v.data, 'hex matches quoted text');
    t.is(createHmac('sha256', key).update(data).digest('hex'), v.hmacSha256);
  });

  test(`HMAC-SHA-256: ${v.name} — node-forge`, (t) => {
    const mac = forge.hmac.create();
    mac.start('sha256', Buffer.from(key).toString('binary'));
    mac.update(Buffer.from(data).toString('binary'));
    t.is(mac.digest().toHex(), v.hmacSha256);
  });
}

// ---------------------------------------------------------------- AES Key Wrap (RFC 3394) and with padding (RFC 5649)

function opensslWrapName(kek: Uint8Array, padded: boolean): string {
  return `id-aes${kek.length * 8}-wrap${padded ? '-pad' : ''}`;
}

function opensslWrap(kek: Uint8Array, data: Uint8Array, padded: boolean): Uint8Array {
  const c = createCipheriv(opensslWrapName(kek, padded), kek, padded ? kwpAivPrefix : kwDefaultIv);
  return concat(c.update(data), c.final());
}

function opensslUnwrap(kek: Uint8Array, wrapped: Uint8Array, padded: boolean): Uint8Array {
  const d = createDecipheriv(opensslWrapName(kek, padded), kek, padded ? kwpAivPrefix : kwDefaultIv);
  return concat(d.update(wrapped), d.final());
}

function keyWrapTests(label: string, vectors: readonly KeyWrapVector[], padded: boolean): void {
  const noble = padded ? aeskwp : aeskw;
  const nobleName = padded ? 'aeskwp' : 'aeskw';
  for (const v of vectors) {
    const kek = hex(v.kek);
    const keyData = hex(v.keyData);
    const wrapped = hex(v.ciphertext);
    const flipped = Uint8Array.from(wrapped);
    flipped[flipped.length - 1]! ^= 0x01;

    test(`${label}: ${v.name} — @noble/ciphers ${nobleName}`, (t) => {
      sameHex(t, noble(kek).encrypt(keyData), v.ciphertext, 'wrap');
      sameHex(t, noble(kek).decrypt(wrapped), v.keyData, 'unwrap');
      t.throws(() => noble(kek).decrypt(flipped), undefined, 'a flipped bit fails the integrity check');
    });

    test(`${label}: ${v.name} — node:crypto ${opensslWrapName(kek, padded)}`, (t) => {
      sameHex(t, opensslWrap(kek, keyData, padded), v.ciphertext, 'wrap');
      sameHex(t, opensslUnwrap(kek, wrapped, padded), v.keyData, 'unwrap');
      t.throws(() => opensslUnwrap(kek, flipped, padded), undefined, 'a flipped bit fails the integrity check');
    });
  }
}

keyWrapTests('AES-KW', kwFile.vectors, false);
keyWrapTests('AES-KWP', kwpFile.vectors, true);
