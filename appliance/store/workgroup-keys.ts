/**
 * Workgroup keys as the store keeps them: 16-byte ids (hex), wrapped bytes (RFC 3394 under a key
 * derived from the master key, bound to the COI and key id — see keymgr/workgroup-key.ts), and a
 * life cycle active → retired → destroyed. One active key per COI (a partial unique index).
 * Destroying deletes the wrapped bytes and keeps the row, so a crypto-shred can be checked later.
 */
import { ErrorCode, assert, fail } from '../errors.ts';
import { wrappedKeyBytes } from '../split/keywrap.ts';
import { rowDate, rowOneOf, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkName, checkUuid } from './validate.ts';
import { checkBytes, checkDate, hexParam, rowHexBytes } from './key-set.ts';

export const workgroupKeyStates = ['active', 'retired', 'destroyed'] as const;
export type WorkgroupKeyState = (typeof workgroupKeyStates)[number];
/** Most ids one workgroupKeysWithMaterial call checks. */
export const workgroupKeyIdsMax = 10_000;
const keyIdPattern = /^[0-9a-f]{32}$/;

export interface NewWorkgroupKey {
  /** 32 lower-case hex digits (16 bytes). */
  readonly id: string;
  readonly wrapped: Uint8Array;
  readonly createdAt: Date;
}

export interface WorkgroupKeyRecord {
  readonly id: string;
  readonly coiId: string;
  readonly coi: string;
  readonly state: WorkgroupKeyState;
  readonly createdAt: Date;
  readonly retiredAt: Date | null;
  readonly destroyedAt: Date | null;
}

/** A key that can still be unwrapped (active or retired). */
export interface WrappedWorkgroupKey {
  readonly id: string;
  readonly coiId: string;
  readonly coi: string;
  readonly state: 'active' | 'retired';
  readonly wrapped: Buffer;
}

export function checkKeyId(value: unknown, field = 'workgroupKey.id'): string {
  if (typeof value !== 'string' || !keyIdPattern.test(value)) fail(ErrorCode.InvalidArgument, `${field}: must be 32 lower-case hex digits`, { field });
  return value;
}

export function checkNewWorkgroupKey(value: unknown): NewWorkgroupKey {
  if (typeof value !== 'object' || value === null) fail(ErrorCode.InvalidArgument, 'workgroupKey: must be an object', { field: 'workgroupKey' });
  const key = value as Partial<NewWorkgroupKey>;
  return {
    id: checkKeyId(key.id),
    wrapped: checkBytes(key.wrapped, 'workgroupKey.wrapped', wrappedKeyBytes, wrappedKeyBytes),
    createdAt: checkDate(key.createdAt, 'workgroupKey.createdAt'),
  };
}

/** Inside a transaction that already holds the COI. */
export async function insertWorkgroupKey(tx: Sql, coiId: string, key: NewWorkgroupKey): Promise<void> {
  await tx.query("INSERT INTO workgroup_keys (id, coi_id, wrapped, state, created_at) VALUES ($1, $2, decode($3, 'hex'), 'active', $4)", [
    key.id,
    coiId,
    hexParam(Buffer.from(key.wrapped)),
    key.createdAt,
  ]);
}

const keyColumns = `k.id, k.coi_id::text AS coi_id, c.name AS coi, k.state, k.created_at, k.retired_at, k.destroyed_at`;

function nullableDate(row: Row, column: string): Date | null {
  return row[column] === null ? null : rowDate(row, column);
}

function keyFromRow(row: Row): WorkgroupKeyRecord {
  return {
    id: rowString(row, 'id'),
    coiId: rowString(row, 'coi_id'),
    coi: rowString(row, 'coi'),
    state: rowOneOf(row, 'state', workgroupKeyStates),
    createdAt: rowDate(row, 'created_at'),
    retiredAt: nullableDate(row, 'retired_at'),
    destroyedAt: nullableDate(row, 'destroyed_at'),
  };
}

function wrappedFromRow(row: Row): WrappedWorkgroupKey {
  const state = rowOneOf(row, 'state', ['active', 'retired'] as const);
  return { id: rowString(row, 'id'), coiId: rowString(row, 'coi_id'), coi: rowString(row, 'coi'), state, wrapped: rowHexBytes(row, 'wrapped') };
}

/**
 * Adds `next` as the COI's active key and retires the one active now, which must be
 * `expectedActiveId` (null: none active) — otherwise SV_STORE_CONFLICT, so two rotations racing
 * cannot both think they retired the same key.
 */
export async function rotateWorkgroupKey(
  sql: Sql,
  coiName: string,
  expectedActiveId: string | null,
  next: NewWorkgroupKey,
): Promise<{ readonly retiredKeyId: string | null }> {
  const coi = checkName(coiName, 'coi.name');
  const expected = expectedActiveId === null ? null : checkKeyId(expectedActiveId, 'expectedActiveId');
  const key = checkNewWorkgroupKey(next);
  return await sql.transaction(async (tx) => {
    const cois = await tx.query<Row>('SELECT id::text AS id FROM cois WHERE name = $1 FOR UPDATE', [coi]);
    const coiRow = cois[0];
    if (coiRow === undefined) fail(ErrorCode.StoreNotFound, `no COI "${coi}"`, { coi });
    const coiId = rowString(coiRow, 'id');
    const active = await tx.query<Row>("SELECT id FROM workgroup_keys WHERE coi_id = $1 AND state = 'active'", [coiId]);
    const current = active[0] === undefined ? null : rowString(active[0], 'id');
    if (current !== expected) {
      fail(ErrorCode.StoreConflict, `COI "${coi}"'s active workgroup key changed meanwhile; try again`, { coi, activeKeyId: current });
    }
    if (current !== null) {
      await tx.query("UPDATE workgroup_keys SET state = 'retired', retired_at = $2 WHERE id = $1", [current, key.createdAt]);
    }
    await insertWorkgroupKey(tx, coiId, key);
    return { retiredKeyId: current };
  });
}

/** SV_STORE_NOT_FOUND if absent. */
export async function getWorkgroupKey(sql: Sql, id: string): Promise<WorkgroupKeyRecord> {
  const keyId = checkKeyId(id);
  const rows = await sql.query<Row>(`SELECT ${keyColumns} FROM workgroup_keys k JOIN cois c ON c.id = k.coi_id WHERE k.id = $1`, [keyId]);
  const row = rows[0];
  if (row === undefined) fail(ErrorCode.StoreNotFound, `no workgroup key ${keyId}`, { keyId });
  return keyFromRow(row);
}

/** Oldest first; every state. */
export async function listWorkgroupKeys(sql: Sql, filter: { readonly coi?: string } = {}): Promise<WorkgroupKeyRecord[]> {
  const coi = filter.coi === undefined ? null : checkName(filter.coi, 'coi.name');
  const rows = await sql.query<Row>(
    `SELECT ${keyColumns} FROM workgroup_keys k JOIN cois c ON c.id = k.coi_id
      WHERE $1::text IS NULL OR c.name = $1 ORDER BY k.created_at, k.id`,
    [coi],
  );
  return rows.map(keyFromRow);
}

/**
 * Deletes the key's wrapped bytes; the row stays, `destroyed`. Destroying a destroyed key
 * changes nothing (its first destroyedAt is kept). SV_STORE_NOT_FOUND for an unknown id.
 */
export async function destroyWorkgroupKey(sql: Sql, id: string, at: Date): Promise<WorkgroupKeyRecord> {
  const keyId = checkKeyId(id);
  const destroyedAt = checkDate(at, 'workgroupKey.destroyedAt');
  await sql.query("UPDATE workgroup_keys SET wrapped = NULL, state = 'destroyed', destroyed_at = $2 WHERE id = $1 AND state <> 'destroyed'", [
    keyId,
    destroyedAt,
  ]);
  const key = await getWorkgroupKey(sql, keyId);
  assert(key.state === 'destroyed', 'a destroyed workgroup key reads back destroyed');
  return key;
}

/** The still-wrapped (active and retired) keys of every COI presenting the volume. */
export async function wrappedKeysForVolume(sql: Sql, volumeId: string): Promise<WrappedWorkgroupKey[]> {
  const id = checkUuid(volumeId, 'volume.id');
  const rows = await sql.query<Row>(
    `SELECT k.id, k.coi_id::text AS coi_id, c.name AS coi, k.state, encode(k.wrapped, 'hex') AS wrapped
       FROM virtual_disks d JOIN cois c ON c.id = d.coi_id JOIN workgroup_keys k ON k.coi_id = c.id
      WHERE d.volume_id = $1 AND k.state IN ('active', 'retired') ORDER BY c.name, k.created_at, k.id`,
    [id],
  );
  return rows.map(wrappedFromRow);
}

/** The COI's active key, or null if it has none. SV_STORE_NOT_FOUND for an unknown COI. */
export async function activeWrappedKey(sql: Sql, coiName: string): Promise<WrappedWorkgroupKey | null> {
  const coi = checkName(coiName, 'coi.name');
  const rows = await sql.query<Row>(
    `SELECT k.id, c.id::text AS coi_id, c.name AS coi, k.state, encode(k.wrapped, 'hex') AS wrapped
       FROM cois c LEFT JOIN workgroup_keys k ON k.coi_id = c.id AND k.state = 'active' WHERE c.name = $1`,
    [coi],
  );
  const row = rows[0];
  if (row === undefined) fail(ErrorCode.StoreNotFound, `no COI "${coi}"`, { coi });
  return row['id'] === null ? null : wrappedFromRow(row);
}

/** Of `ids`, those whose wrapped bytes are still in the store. */
export async function workgroupKeysWithMaterial(sql: Sql, ids: readonly string[]): Promise<string[]> {
  if (!Array.isArray(ids) || ids.length > workgroupKeyIdsMax) {
    fail(ErrorCode.InvalidArgument, `ids: must be an array of at most ${workgroupKeyIdsMax}`, { field: 'ids' });
  }
  const keyIds = ids.map((id) => checkKeyId(id, 'ids[]'));
  if (keyIds.length === 0) return [];
  const rows = await sql.query<Row>(
    `SELECT id FROM workgroup_keys WHERE wrapped IS NOT NULL AND id IN (SELECT jsonb_array_elements_text($1::jsonb)) ORDER BY id`,
    [JSON.stringify(keyIds)],
  );
  return rows.map((r) => rowString(r, 'id'));
}
