/**
 * Typed, validated access to the published known-answer vectors in this folder.
 *
 * The vectors live in JSON so any tool (or a person with the spec open beside them) can read
 * them; this loader checks their shape on load, so a mistyped field or an odd-length hex string
 * fails the test run loudly instead of silently testing less.
 */
import { readFileSync } from 'node:fs';

export interface Source {
  readonly document: string;
  readonly section: string;
  readonly case: string;
}

export interface Named {
  readonly name: string;
  readonly source: Source;
}

export interface VectorFile<V> {
  readonly primitive: string;
  readonly vectors: readonly V[];
}

export interface BlockVector extends Named {
  readonly key: string;
  readonly plaintext: string;
  readonly ciphertext: string;
}

export interface CtrBlock {
  readonly inputBlock: string;
  readonly outputBlock: string;
  readonly plaintext: string;
  readonly ciphertext: string;
}

export interface CtrVector extends Named {
  readonly direction: 'encrypt' | 'decrypt';
  readonly key: string;
  readonly initCounter: string;
  readonly blocks: readonly CtrBlock[];
}

export interface GcmVector extends Named {
  readonly key: string;
  readonly iv: string;
  readonly aad: string;
  readonly plaintext: string;
  readonly h: string;
  readonly ciphertext: string;
  readonly tag: string;
}

export type GcmField = 'key' | 'iv' | 'aad' | 'ciphertext' | 'tag';

/** Not published: a published case with one bit flipped, which must be rejected. */
export interface GcmNegative {
  readonly name: string;
  readonly derivedFrom: string;
  readonly field: GcmField;
  readonly byteIndex: number;
  readonly xorMask: number;
}

export interface GcmFile extends VectorFile<GcmVector> {
  readonly negative: readonly GcmNegative[];
}

export interface ShaVector extends Named {
  readonly messageAscii: string;
  readonly repeat: number;
  readonly digest: string;
}

export interface HmacVector extends Named {
  readonly key: string;
  readonly data: string;
  readonly dataAscii?: string;
  readonly hmacSha256: string;
}

export interface KeyWrapVector extends Named {
  readonly kek: string;
  readonly keyData: string;
  readonly ciphertext: string;
}

const hexPattern = /^(?:[0-9a-f]{2})*$/;

/** Lowercase, even-length hex to bytes; anything else is a broken vector file. */
export function hex(text: string): Uint8Array {
  if (!hexPattern.test(text)) throw new Error(`not lowercase even-length hex: ${JSON.stringify(text)}`);
  return new Uint8Array(Buffer.from(text, 'hex'));
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

type Check = 'hex' | 'string' | 'count' | 'byteIndex' | 'mask';

function expectFields(where: string, value: unknown, fields: Readonly<Record<string, Check>>): void {
  if (typeof value !== 'object' || value === null) throw new Error(`${where}: not an object`);
  const record = value as Record<string, unknown>;
  for (const [field, check] of Object.entries(fields)) {
    const v = record[field];
    const ok =
      check === 'hex'
        ? typeof v === 'string' && hexPattern.test(v)
        : check === 'string'
          ? typeof v === 'string' && v.length > 0
          : check === 'count'
            ? Number.isSafeInteger(v) && (v as number) >= 1
            : check === 'byteIndex'
              ? Number.isSafeInteger(v) && (v as number) >= 0
              : Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 0xff;
    if (!ok) throw new Error(`${where}: field ${field} is not a valid ${check}: ${JSON.stringify(v)}`);
  }
}

function expectNamed(where: string, v: unknown): void {
  expectFields(where, v, { name: 'string' });
  expectFields(`${where}.source`, (v as { source: unknown }).source, {
    document: 'string',
    section: 'string',
    case: 'string',
  });
}

function readFile(fileName: string): { primitive: string; vectors: unknown[]; raw: Record<string, unknown> } {
  const raw: unknown = JSON.parse(readFileSync(new URL(fileName, import.meta.url), 'utf8'));
  expectFields(fileName, raw, { primitive: 'string' });
  const record = raw as Record<string, unknown>;
  const vectors = record.vectors;
  if (!Array.isArray(vectors) || vectors.length === 0) throw new Error(`${fileName}: no vectors`);
  return { primitive: record.primitive as string, vectors, raw: record };
}

function load<V>(fileName: string, fields: Readonly<Record<string, Check>>, extra?: (where: string, v: unknown) => void): VectorFile<V> {
  const { primitive, vectors } = readFile(fileName);
  vectors.forEach((v, i) => {
    const where = `${fileName}[${i}]`;
    expectNamed(where, v);
    expectFields(where, v, fields);
    extra?.(where, v);
  });
  return { primitive, vectors: vectors as V[] };
}

export function loadBlock(): VectorFile<BlockVector> {
  return load('aes256-block.json', { key: 'hex', plaintext: 'hex', ciphertext: 'hex' });
}

export function loadCtr(): VectorFile<CtrVector> {
  return load('aes256-ctr.json', { key: 'hex', initCounter: 'hex' }, (where, v) => {
    const { direction, blocks } = v as { direction: unknown; blocks: unknown };
    if (direction !== 'encrypt' && direction !== 'decrypt') throw new Error(`${where}: bad direction`);
    if (!Array.isArray(blocks) || blocks.length === 0) throw new Error(`${where}: no blocks`);
    blocks.forEach((b, j) =>
      expectFields(`${where}.blocks[${j}]`, b, { inputBlock: 'hex', outputBlock: 'hex', plaintext: 'hex', ciphertext: 'hex' }),
    );
  });
}

export function loadGcm(): GcmFile {
  const file = load<GcmVector>('aes256-gcm.json', {
    key: 'hex',
    iv: 'hex',
    aad: 'hex',
    plaintext: 'hex',
    h: 'hex',
    ciphertext: 'hex',
    tag: 'hex',
  });
  const negative = readFile('aes256-gcm.json').raw.negative;
  if (!Array.isArray(negative) || negative.length === 0) throw new Error('aes256-gcm.json: no negative cases');
  const fields: readonly GcmField[] = ['key', 'iv', 'aad', 'ciphertext', 'tag'];
  negative.forEach((n, i) => {
    const where = `aes256-gcm.json negative[${i}]`;
    expectFields(where, n, { name: 'string', derivedFrom: 'string', field: 'string', byteIndex: 'byteIndex', xorMask: 'mask' });
    if (!fields.includes((n as { field: GcmField }).field)) throw new Error(`${where}: unknown field`);
  });
  return { ...file, negative: negative as GcmNegative[] };
}

export function loadSha256(): VectorFile<ShaVector> {
  return load('sha256.json', { messageAscii: 'string', repeat: 'count', digest: 'hex' });
}

export function loadHmacSha256(): VectorFile<HmacVector> {
  return load('hmac-sha256.json', { key: 'hex', data: 'hex', hmacSha256: 'hex' });
}

export function loadKeyWrap(): VectorFile<KeyWrapVector> {
  return load('aes-kw.json', { kek: 'hex', keyData: 'hex', ciphertext: 'hex' });
}

export function loadKeyWrapPadded(): VectorFile<KeyWrapVector> {
  return load('aes-kwp.json', { kek: 'hex', keyData: 'hex', ciphertext: 'hex' });
}
