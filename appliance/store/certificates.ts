/**
 * The CA's registry of issued certificates (keymgr/pki-registry.ts describes the contract):
 * serial, kind, subject, COI names, validity, revocation. Never a private key.
 */
import { assert, ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowOneOf, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkOneOf, checkText } from './validate.ts';
import { checkDate } from './key-set.ts';

export const certificateKinds = ['client', 'server'] as const;
export type CertificateKindRow = (typeof certificateKinds)[number];
/** A subject CN (X.520 ub-common-name is 64 characters; UTF-8 may need 4 bytes each). */
export const certificateSubjectBytesMax = 256;
export const certificateCoiNamesMax = 64;
const serialPattern = /^(?:[0-9a-f]{2}){1,20}$/;

export interface CertificateRow {
  /** Lower-case hex. */
  readonly serial: string;
  readonly kind: CertificateKindRow;
  readonly subject: string;
  readonly coiNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly revokedAt: Date | null;
}

export function checkSerial(value: unknown): string {
  if (typeof value !== 'string' || !serialPattern.test(value.toLowerCase())) {
    fail(ErrorCode.InvalidArgument, 'certificate.serial: must be 1..20 octets of hex', { field: 'certificate.serial' });
  }
  return value.toLowerCase();
}

const columns = 'serial, kind, subject, coi_names, not_before, not_after, revoked_at';

function certificateFromRow(row: Row): CertificateRow {
  const coiNames = row['coi_names'];
  assert(Array.isArray(coiNames) && coiNames.every((n) => typeof n === 'string'), 'store column coi_names is a list of names');
  return {
    serial: rowString(row, 'serial'),
    kind: rowOneOf(row, 'kind', certificateKinds),
    subject: rowString(row, 'subject'),
    coiNames: coiNames as string[],
    notBefore: rowDate(row, 'not_before'),
    notAfter: rowDate(row, 'not_after'),
    revokedAt: row['revoked_at'] === null ? null : rowDate(row, 'revoked_at'),
  };
}

/** SV_STORE_CONFLICT for a serial already recorded. */
export async function recordCertificate(sql: Sql, input: Omit<CertificateRow, 'revokedAt'>): Promise<void> {
  const serial = checkSerial(input?.serial);
  const kind = checkOneOf(input.kind, certificateKinds, 'certificate.kind');
  const subject = checkText(input.subject, 'certificate.subject', certificateSubjectBytesMax);
  if (!Array.isArray(input.coiNames) || input.coiNames.length > certificateCoiNamesMax) {
    fail(ErrorCode.InvalidArgument, `certificate.coiNames: must be an array of at most ${certificateCoiNamesMax}`, { field: 'certificate.coiNames' });
  }
  const coiNames = input.coiNames.map((n) => checkText(n, 'certificate.coiNames[]', certificateSubjectBytesMax));
  const notBefore = checkDate(input.notBefore, 'certificate.notBefore');
  const notAfter = checkDate(input.notAfter, 'certificate.notAfter');
  if (notAfter <= notBefore) fail(ErrorCode.InvalidArgument, 'certificate.notAfter: must be after notBefore', { field: 'certificate.notAfter' });
  try {
    await sql.query(
      `INSERT INTO certificates (serial, kind, subject, coi_names, not_before, not_after) VALUES ($1, $2, $3, $4::jsonb, $5, $6)`,
      [serial, kind, subject, JSON.stringify(coiNames), notBefore, notAfter],
    );
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict)) fail(ErrorCode.StoreConflict, `certificate serial ${serial} is already recorded`, { serial }, e);
    throw e;
  }
}

export async function findCertificate(sql: Sql, serial: string): Promise<CertificateRow | null> {
  const rows = await sql.query<Row>(`SELECT ${columns} FROM certificates WHERE serial = $1`, [checkSerial(serial)]);
  return rows[0] === undefined ? null : certificateFromRow(rows[0]);
}

/** Marks it revoked at `at` unless it already is (the first time stays); null if never recorded. */
export async function revokeCertificate(sql: Sql, serial: string, at: Date): Promise<CertificateRow | null> {
  const rows = await sql.query<Row>(`UPDATE certificates SET revoked_at = COALESCE(revoked_at, $2) WHERE serial = $1 RETURNING ${columns}`, [
    checkSerial(serial),
    checkDate(at, 'certificate.revokedAt'),
  ]);
  return rows[0] === undefined ? null : certificateFromRow(rows[0]);
}

/** Oldest issue first. */
export async function listCertificates(sql: Sql): Promise<CertificateRow[]> {
  return (await sql.query<Row>(`SELECT ${columns} FROM certificates ORDER BY issue_order`)).map(certificateFromRow);
}
