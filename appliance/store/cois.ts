/**
 * Communities of interest and their local members. A COI is `local` (members listed here) or
 * `ldap` (members are a directory group's; only the group reference is kept). A COI is created
 * together with its first workgroup key, so no COI exists without one.
 */
import { ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowOneOf, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkText, checkName, checkOneOf, checkUuid } from './validate.ts';
import { checkDate } from './key-set.ts';
import { checkNewWorkgroupKey, insertWorkgroupKey, type NewWorkgroupKey } from './workgroup-keys.ts';

export const coiSources = ['local', 'ldap'] as const;
export type CoiSource = (typeof coiSources)[number];
export const memberKinds = ['user', 'client'] as const;
export type MemberKind = (typeof memberKinds)[number];
/** An LDAP group DN; RFC 4514 sets no limit, real ones stay far below this. */
export const ldapGroupBytesMax = 1024;
/** A user login or client name. */
export const memberNameBytesMax = 256;

export interface CoiRecord {
  readonly id: string;
  readonly name: string;
  readonly source: CoiSource;
  readonly ldapGroup: string | null;
  readonly createdAt: Date;
  /** Hex id of the active workgroup key; null when none is active (destroyed). */
  readonly activeKeyId: string | null;
}

export interface NewCoi {
  readonly id: string;
  readonly name: string;
  readonly ldapGroup: string | null;
  readonly createdAt: Date;
  readonly firstKey: NewWorkgroupKey;
}

export interface CoiMember {
  readonly kind: MemberKind;
  readonly name: string;
}

export function checkMember(value: unknown, field = 'member'): CoiMember {
  if (typeof value !== 'object' || value === null) fail(ErrorCode.InvalidArgument, `${field}: must be an object`, { field });
  const { kind, name } = value as Record<string, unknown>;
  return { kind: checkOneOf(kind, memberKinds, `${field}.kind`), name: checkText(name, `${field}.name`, memberNameBytesMax) };
}

const coiColumns = `c.id::text AS id, c.name, c.source, c.ldap_group, c.created_at,
  (SELECT k.id FROM workgroup_keys k WHERE k.coi_id = c.id AND k.state = 'active') AS active_key_id`;

function coiFromRow(row: Row): CoiRecord {
  const ldapGroup = row['ldap_group'];
  const activeKeyId = row['active_key_id'];
  return {
    id: rowString(row, 'id'),
    name: rowString(row, 'name'),
    source: rowOneOf(row, 'source', coiSources),
    ldapGroup: ldapGroup === null ? null : rowString(row, 'ldap_group'),
    createdAt: rowDate(row, 'created_at'),
    activeKeyId: activeKeyId === null ? null : rowString(row, 'active_key_id'),
  };
}

function noCoi(name: string): never {
  fail(ErrorCode.StoreNotFound, `no COI "${name}"`, { coi: name });
}

export async function createCoi(sql: Sql, input: NewCoi): Promise<CoiRecord> {
  const id = checkUuid(input?.id, 'coi.id');
  const name = checkName(input.name, 'coi.name');
  const ldapGroup = input.ldapGroup === null ? null : checkText(input.ldapGroup, 'coi.ldapGroup', ldapGroupBytesMax);
  const createdAt = checkDate(input.createdAt, 'coi.createdAt');
  const firstKey = checkNewWorkgroupKey(input.firstKey);
  try {
    return await sql.transaction(async (tx) => {
      await tx.query('INSERT INTO cois (id, name, source, ldap_group, created_at) VALUES ($1, $2, $3, $4, $5)', [
        id,
        name,
        ldapGroup === null ? 'local' : 'ldap',
        ldapGroup,
        createdAt,
      ]);
      await insertWorkgroupKey(tx, id, firstKey);
      return await getCoi(tx, name);
    });
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.['constraint'] === 'cois_name_key') {
      fail(ErrorCode.StoreConflict, `a COI named "${name}" already exists`, { coi: name }, e);
    }
    throw e;
  }
}

/** SV_STORE_NOT_FOUND if absent. */
export async function getCoi(sql: Sql, name: string): Promise<CoiRecord> {
  const coi = checkName(name, 'coi.name');
  const rows = await sql.query<Row>(`SELECT ${coiColumns} FROM cois c WHERE c.name = $1`, [coi]);
  const row = rows[0];
  if (row === undefined) noCoi(coi);
  return coiFromRow(row);
}

export async function listCois(sql: Sql): Promise<CoiRecord[]> {
  return (await sql.query<Row>(`SELECT ${coiColumns} FROM cois c ORDER BY c.name`)).map(coiFromRow);
}

/**
 * Removes a COI with its members and its workgroup keys, wrapped bytes and all. Refused
 * (SV_STORE_CONFLICT, detail.virtualDisks) while it presents virtual disks. Returns the ids of
 * the keys that still had wrapped bytes, so the caller can wipe its cached copies.
 */
export async function removeCoi(sql: Sql, name: string): Promise<{ readonly removedKeyIds: readonly string[] }> {
  const coi = checkName(name, 'coi.name');
  return await sql.transaction(async (tx) => {
    const found = await tx.query<Row>('SELECT id::text AS id FROM cois WHERE name = $1 FOR UPDATE', [coi]);
    const row = found[0];
    if (row === undefined) noCoi(coi);
    const id = rowString(row, 'id');
    const disks = await tx.query<Row>('SELECT name FROM virtual_disks WHERE coi_id = $1 ORDER BY name', [id]);
    if (disks.length > 0) {
      const virtualDisks = disks.map((d) => rowString(d, 'name'));
      fail(ErrorCode.StoreConflict, `COI "${coi}" still presents virtual disks: ${virtualDisks.join(', ')}`, { coi, virtualDisks });
    }
    const keys = await tx.query<Row>('SELECT id FROM workgroup_keys WHERE coi_id = $1 AND wrapped IS NOT NULL ORDER BY id', [id]);
    await tx.query('DELETE FROM cois WHERE id = $1', [id]);
    return { removedKeyIds: keys.map((k) => rowString(k, 'id')) };
  });
}

async function coiIdForUpdate(tx: Sql, coi: string): Promise<{ id: string; source: CoiSource }> {
  const rows = await tx.query<Row>('SELECT id::text AS id, source FROM cois WHERE name = $1 FOR UPDATE', [coi]);
  const row = rows[0];
  if (row === undefined) noCoi(coi);
  return { id: rowString(row, 'id'), source: rowOneOf(row, 'source', coiSources) };
}

/** Local COIs only (SV_INVALID_ARGUMENT otherwise); SV_STORE_CONFLICT if already a member. */
export async function addCoiMember(sql: Sql, coiName: string, member: CoiMember, at: Date): Promise<void> {
  const coi = checkName(coiName, 'coi.name');
  const m = checkMember(member);
  const addedAt = checkDate(at, 'member.addedAt');
  try {
    await sql.transaction(async (tx) => {
      const { id, source } = await coiIdForUpdate(tx, coi);
      if (source !== 'local') fail(ErrorCode.InvalidArgument, `COI "${coi}" takes its members from the directory`, { coi });
      await tx.query('INSERT INTO coi_members (coi_id, kind, name, added_at) VALUES ($1, $2, $3, $4)', [id, m.kind, m.name, addedAt]);
    });
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.['constraint'] === 'coi_members_pkey') {
      fail(ErrorCode.StoreConflict, `${m.kind} "${m.name}" is already a member of COI "${coi}"`, { coi, kind: m.kind }, e);
    }
    throw e;
  }
}

/** SV_STORE_NOT_FOUND if the COI or the membership does not exist. */
export async function removeCoiMember(sql: Sql, coiName: string, member: CoiMember): Promise<void> {
  const coi = checkName(coiName, 'coi.name');
  const m = checkMember(member);
  await sql.transaction(async (tx) => {
    const { id } = await coiIdForUpdate(tx, coi);
    const rows = await tx.query<Row>('DELETE FROM coi_members WHERE coi_id = $1 AND kind = $2 AND name = $3 RETURNING name', [id, m.kind, m.name]);
    if (rows.length === 0) fail(ErrorCode.StoreNotFound, `${m.kind} "${m.name}" is not a member of COI "${coi}"`, { coi, kind: m.kind });
  });
}

/** The stored members of a COI (none for an LDAP COI), users first, by name. */
export async function listCoiMembers(sql: Sql, coiName: string): Promise<CoiMember[]> {
  const coi = checkName(coiName, 'coi.name');
  const rows = await sql.query<Row>(
    `SELECT c.id, m.kind, m.name FROM cois c LEFT JOIN coi_members m ON m.coi_id = c.id WHERE c.name = $1 ORDER BY m.kind DESC, m.name`,
    [coi],
  );
  if (rows.length === 0) noCoi(coi);
  return rows.filter((r) => r['kind'] !== null).map((r) => ({ kind: rowOneOf(r, 'kind', memberKinds), name: rowString(r, 'name') }));
}

/** Names of the local COIs listing `member`. */
export async function listLocalCoisOf(sql: Sql, member: CoiMember): Promise<string[]> {
  const m = checkMember(member);
  const rows = await sql.query<Row>(
    `SELECT c.name FROM coi_members m JOIN cois c ON c.id = m.coi_id WHERE m.kind = $1 AND m.name = $2 AND c.source = 'local' ORDER BY c.name`,
    [m.kind, m.name],
  );
  return rows.map((r) => rowString(r, 'name'));
}

/** Whether the local COI `coiName` lists `member`; false for an unknown COI. */
export async function isLocalCoiMember(sql: Sql, coiName: string, member: CoiMember): Promise<boolean> {
  const m = checkMember(member);
  const rows = await sql.query<Row>(
    `SELECT 1 AS hit FROM coi_members m JOIN cois c ON c.id = m.coi_id WHERE c.name = $1 AND c.source = 'local' AND m.kind = $2 AND m.name = $3`,
    [checkName(coiName, 'coi.name'), m.kind, m.name],
  );
  return rows.length > 0;
}
