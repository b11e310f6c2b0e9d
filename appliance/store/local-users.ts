/**
 * Users of the local directory (the embedded default's stand-in for LDAP): a name and a password
 * hash. The hash format belongs to keymgr/local-directory.ts; the store keeps it opaque.
 */
import { ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkText } from './validate.ts';
import { checkDate } from './key-set.ts';
import { memberNameBytesMax } from './cois.ts';

/** scrypt parameters, salt and hash in text; far below this. */
export const passwordHashBytesMax = 512;

export interface LocalUserRecord {
  readonly name: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

const checkUserName = (value: unknown): string => checkText(value, 'user.name', memberNameBytesMax);
const checkHash = (value: unknown): string => checkText(value, 'user.passwordHash', passwordHashBytesMax);

/** SV_STORE_CONFLICT if the name is taken. */
export async function addLocalUser(sql: Sql, input: { readonly name: string; readonly passwordHash: string; readonly at: Date }): Promise<void> {
  const name = checkUserName(input?.name);
  const hash = checkHash(input.passwordHash);
  const at = checkDate(input.at, 'user.createdAt');
  try {
    await sql.query('INSERT INTO local_users (name, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3)', [name, hash, at]);
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict)) fail(ErrorCode.StoreConflict, `a local user named "${name}" already exists`, { user: name }, e);
    throw e;
  }
}

/** SV_STORE_NOT_FOUND for an unknown user. */
export async function setLocalUserPasswordHash(sql: Sql, name: string, passwordHash: string, at: Date): Promise<void> {
  const user = checkUserName(name);
  const rows = await sql.query<Row>('UPDATE local_users SET password_hash = $2, updated_at = $3 WHERE name = $1 RETURNING name', [
    user,
    checkHash(passwordHash),
    checkDate(at, 'user.updatedAt'),
  ]);
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no local user "${user}"`, { user });
}

/** null for an unknown user. */
export async function getLocalUserPasswordHash(sql: Sql, name: string): Promise<string | null> {
  const rows = await sql.query<Row>('SELECT password_hash FROM local_users WHERE name = $1', [checkUserName(name)]);
  return rows[0] === undefined ? null : rowString(rows[0], 'password_hash');
}

/** SV_STORE_NOT_FOUND for an unknown user. */
export async function removeLocalUser(sql: Sql, name: string): Promise<void> {
  const user = checkUserName(name);
  const rows = await sql.query<Row>('DELETE FROM local_users WHERE name = $1 RETURNING name', [user]);
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no local user "${user}"`, { user });
}

export async function listLocalUsers(sql: Sql): Promise<LocalUserRecord[]> {
  const rows = await sql.query<Row>('SELECT name, created_at, updated_at FROM local_users ORDER BY name');
  return rows.map((r) => ({ name: rowString(r, 'name'), createdAt: rowDate(r, 'created_at'), updatedAt: rowDate(r, 'updated_at') }));
}
