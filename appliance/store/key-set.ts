/**
 * The key manager's root records: the one current key set (public: officers, threshold, share
 * digests, verifier) and the appliance CA (certificate, and its private key encrypted under a key
 * derived from the master key). Written together at init, in one transaction, so a store never
 * holds a CA without the key set that can open it. The store never sees an unencrypted key.
 */
import { ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowObject, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkObject, checkUuid } from './validate.ts';

/** Matches migration 3's CHECK: an encrypted RSA-3072 PKCS#8 key is ~1.8 KiB. */
export const caKeyEncryptedBytesMax = 16 * 1024;
/** A PEM certificate; the PKI refuses anything larger than 16 KiB of DER anyway. */
export const caCertPemBytesMax = 32 * 1024;

export interface KeySetRow {
  readonly keySetId: string;
  /** As stored; the key manager validates it (checkKeySetRecord) before trusting it. */
  readonly record: Readonly<Record<string, unknown>>;
  readonly createdAt: Date;
}

export interface ApplianceCaRow {
  readonly certPem: string;
  /** Encrypted; opaque to the store. */
  readonly keyEncrypted: Buffer;
  readonly createdAt: Date;
}

export interface NewKeyManagerRoot {
  readonly keySetId: string;
  readonly keySetRecord: Readonly<Record<string, unknown>>;
  readonly caCertPem: string;
  readonly caKeyEncrypted: Uint8Array;
  readonly createdAt: Date;
}

export function checkBytes(value: unknown, field: string, bytesMin: number, bytesMax: number): Buffer {
  if (!(value instanceof Uint8Array) || value.length < bytesMin || value.length > bytesMax) {
    fail(ErrorCode.InvalidArgument, `${field}: must be ${bytesMin}..${bytesMax} bytes`, { field });
  }
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

export function checkDate(value: unknown, field: string): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) fail(ErrorCode.InvalidArgument, `${field}: must be a valid Date`, { field });
  return value;
}

function checkPem(value: unknown, field: string): string {
  if (typeof value !== 'string' || Buffer.byteLength(value, 'utf8') > caCertPemBytesMax || !value.startsWith('-----BEGIN CERTIFICATE-----')) {
    fail(ErrorCode.InvalidArgument, `${field}: must be a PEM certificate of at most ${caCertPemBytesMax} bytes`, { field });
  }
  return value;
}

/** bytea is bound as hex text: the Sql seam carries no binary parameters. */
export function hexParam(bytes: Buffer): string {
  return bytes.toString('hex');
}

export function rowHexBytes(row: Row, column: string): Buffer {
  return Buffer.from(rowString(row, column), 'hex');
}

/** Records the key set and the CA. SV_STORE_CONFLICT if the key manager was initialized already. */
export async function initKeyManagerRoot(sql: Sql, input: NewKeyManagerRoot): Promise<void> {
  const keySetId = checkUuid(input?.keySetId, 'keySet.keySetId');
  const record = checkObject(input.keySetRecord, 'keySet.record');
  const certPem = checkPem(input.caCertPem, 'ca.certPem');
  const keyEncrypted = checkBytes(input.caKeyEncrypted, 'ca.keyEncrypted', 1, caKeyEncryptedBytesMax);
  const createdAt = checkDate(input.createdAt, 'keySet.createdAt');
  try {
    await sql.transaction(async (tx) => {
      await tx.query('INSERT INTO key_set (key_set_id, record, created_at) VALUES ($1, $2::jsonb, $3)', [keySetId, JSON.stringify(record), createdAt]);
      await tx.query("INSERT INTO appliance_ca (cert_pem, key_encrypted, created_at) VALUES ($1, decode($2, 'hex'), $3)", [
        certPem,
        hexParam(keyEncrypted),
        createdAt,
      ]);
    });
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict)) fail(ErrorCode.StoreConflict, 'the key manager is already initialized', undefined, e);
    throw e;
  }
}

export async function getKeySet(sql: Sql): Promise<KeySetRow | null> {
  const rows = await sql.query<Row>('SELECT key_set_id::text AS key_set_id, record, created_at FROM key_set');
  const row = rows[0];
  if (row === undefined) return null;
  return { keySetId: rowString(row, 'key_set_id'), record: rowObject(row, 'record'), createdAt: rowDate(row, 'created_at') };
}

export async function getApplianceCa(sql: Sql): Promise<ApplianceCaRow | null> {
  const rows = await sql.query<Row>("SELECT cert_pem, encode(key_encrypted, 'hex') AS key_encrypted, created_at FROM appliance_ca");
  const row = rows[0];
  if (row === undefined) return null;
  return { certPem: rowString(row, 'cert_pem'), keyEncrypted: rowHexBytes(row, 'key_encrypted'), createdAt: rowDate(row, 'created_at') };
}
