/**
 * The audit log's table and its appenders' lock. The hash chain itself is computed and checked
 * in keymgr/audit*.ts; this module stores rows, serialises appenders and records how far each
 * file sink has been written. The schema (migration 2) makes the chain structural: every row
 * after the first must name its predecessor's (seq, hash), and triggers refuse UPDATE, DELETE
 * and TRUNCATE — so only someone who can bypass the database's own rules can rewrite history,
 * and the chain's hashes and the file sink catch that.
 *
 * Rows hold identifiers and facts about operations, never keys or secrets.
 */
import { assert, ErrorCode, fail } from '../errors.ts';
import { rowDate, rowInteger, rowObject, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkInteger, checkObject, checkText, nameBytesMax, pathBytesMax } from './validate.ts';

/** pg_advisory_xact_lock key: "svaudt" in ASCII. Held by every appender, cluster-wide. */
export const auditLockKey = 0x737661756474;
/** prevHash of entry 1: there is no entry 0. */
export const auditGenesisHash = '0'.repeat(64);
/** Most rows one listAudit call returns; page further with `afterSeq`. */
export const auditListMax = 1000;
export const auditActorBytesMax = 256;
export const auditActionBytesMax = 64;
export const auditSubjectBytesMax = 256;
/** The store's own bound; the key manager keeps details far smaller. */
export const auditDetailBytesMax = 16 * 1024;
/** A sink is named by appliance host and file path. */
export const auditSinkNameBytesMax = nameBytesMax + pathBytesMax;

export interface AuditRow {
  /** 1, 2, 3... without gaps, across every appliance sharing the store. */
  readonly seq: number;
  /** ISO 8601 in UTC with milliseconds, exactly as hashed. */
  readonly at: string;
  readonly actor: string;
  readonly action: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, unknown>>;
  /** Lower-case hex SHA-256. */
  readonly prevHash: string;
  readonly hash: string;
}

/** The newest row's position in the chain; seq 0 with the genesis hash when the log is empty. */
export interface AuditHead {
  readonly seq: number;
  readonly hash: string;
}

const hashPattern = /^[0-9a-f]{64}$/;
// jsonb cannot hold U+0000; JSON.stringify writes it as an unescaped `\u0000`.
const jsonNul = /(?<!\\)(?:\\\\)*\\u0000/;

function checkHash(value: unknown, field: string): string {
  if (typeof value !== 'string' || !hashPattern.test(value)) {
    fail(ErrorCode.InvalidArgument, `${field}: must be 64 lower-case hex digits`, { field });
  }
  return value;
}

/** Only instants that come back from timestamptz as the same string: the hash covers the text. */
function checkAt(value: unknown): string {
  if (typeof value !== 'string' || Number.isNaN(Date.parse(value)) || new Date(value).toISOString() !== value) {
    fail(ErrorCode.InvalidArgument, 'audit.at: must be an ISO 8601 UTC timestamp as Date.toISOString() writes it', { field: 'audit.at' });
  }
  return value;
}

function checkDetailJson(value: unknown): string {
  const detail = checkObject(value, 'audit.detail');
  let json: string | undefined;
  try {
    json = JSON.stringify(detail);
  } catch (e) {
    fail(ErrorCode.InvalidArgument, `audit.detail: not serialisable as JSON (${(e as Error).message})`, { field: 'audit.detail' });
  }
  if (typeof json !== 'string') fail(ErrorCode.InvalidArgument, 'audit.detail: not serialisable as JSON', { field: 'audit.detail' });
  if (Buffer.byteLength(json, 'utf8') > auditDetailBytesMax) {
    fail(ErrorCode.InvalidArgument, `audit.detail: more than ${auditDetailBytesMax} bytes of JSON`, { field: 'audit.detail' });
  }
  if (jsonNul.test(json)) fail(ErrorCode.InvalidArgument, 'audit.detail: must not contain U+0000', { field: 'audit.detail' });
  return json;
}

function checkSinkName(value: unknown): string {
  return checkText(value, 'audit.sink', auditSinkNameBytesMax);
}

const columns = 'seq, at, actor, action, subject, detail, prev_hash, hash';

function auditFromRow(row: Row): AuditRow {
  return {
    seq: rowInteger(row, 'seq'),
    at: rowDate(row, 'at').toISOString(),
    actor: rowString(row, 'actor'),
    action: rowString(row, 'action'),
    subject: rowString(row, 'subject'),
    detail: rowObject(row, 'detail'),
    prevHash: rowString(row, 'prev_hash'),
    hash: rowString(row, 'hash'),
  };
}

async function listAfter(sql: Sql, afterSeq: number, limit: number): Promise<AuditRow[]> {
  const after = checkInteger(afterSeq, 'audit.afterSeq', 0);
  const count = checkInteger(limit, 'audit.limit', 1, auditListMax);
  const rows = await sql.query<Row>(`SELECT ${columns} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2`, [after, count]);
  return rows.map(auditFromRow);
}

/**
 * What an appender may do while it holds the audit lock. Valid only inside the callback of
 * auditTransaction; everything it does commits or rolls back together.
 */
export class AuditTransaction {
  readonly #sql: Sql;

  constructor(sql: Sql) {
    this.#sql = sql;
  }

  async head(): Promise<AuditHead> {
    const rows = await this.#sql.query<Row>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
    const row = rows[0];
    if (row === undefined) return { seq: 0, hash: auditGenesisHash };
    return { seq: rowInteger(row, 'seq'), hash: rowString(row, 'hash') };
  }

  /** The schema refuses a row that does not extend the chain by exactly one (SV_STORE_CONFLICT or a raw error). */
  async insert(row: AuditRow): Promise<void> {
    const seq = checkInteger(row?.seq, 'audit.seq', 1);
    const params = [
      seq,
      checkAt(row.at),
      checkText(row.actor, 'audit.actor', auditActorBytesMax),
      checkText(row.action, 'audit.action', auditActionBytesMax),
      checkText(row.subject, 'audit.subject', auditSubjectBytesMax),
      checkDetailJson(row.detail),
      checkHash(row.prevHash, 'audit.prevHash'),
      checkHash(row.hash, 'audit.hash'),
    ];
    await this.#sql.query(
      `INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)`,
      params,
    );
  }

  /** Rows with seq > afterSeq, oldest first, at most `limit`. */
  listAfter(afterSeq: number, limit: number): Promise<AuditRow[]> {
    return listAfter(this.#sql, afterSeq, limit);
  }

  async get(seq: number): Promise<AuditRow | null> {
    const wanted = checkInteger(seq, 'audit.seq', 1);
    const rows = await this.#sql.query<Row>(`SELECT ${columns} FROM audit_log WHERE seq = $1`, [wanted]);
    const row = rows[0];
    return row === undefined ? null : auditFromRow(row);
  }

  /** The highest seq the named file sink durably held; 0 if it never held any. */
  sinkMark(name: string): Promise<number> {
    return getAuditSinkMark(this.#sql, name);
  }

  /** Records that the named file sink durably holds every entry up to `seq`; never lowers it. */
  async raiseSinkMark(name: string, seq: number): Promise<void> {
    await this.#sql.query(
      `INSERT INTO audit_sinks (name, seq) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET seq = GREATEST(audit_sinks.seq, EXCLUDED.seq), updated_at = now()`,
      [checkSinkName(name), checkInteger(seq, 'audit.sinkSeq', 0)],
    );
  }
}

/**
 * Runs `fn` in a transaction holding the cluster-wide audit lock, so appenders on every
 * appliance see one head and extend it one after another: the chain cannot fork.
 */
export async function auditTransaction<R>(sql: Sql, fn: (audit: AuditTransaction) => Promise<R>): Promise<R> {
  return await sql.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [auditLockKey]);
    return await fn(new AuditTransaction(tx));
  });
}

/** Rows with seq > afterSeq, oldest first, at most `limit` (<= auditListMax). No lock: rows only ever append. */
export function listAudit(sql: Sql, afterSeq: number, limit: number): Promise<AuditRow[]> {
  return listAfter(sql, afterSeq, limit);
}

/** The highest seq the named file sink durably held; 0 if it never held any. */
export async function getAuditSinkMark(sql: Sql, name: string): Promise<number> {
  const rows = await sql.query<Row>('SELECT seq FROM audit_sinks WHERE name = $1', [checkSinkName(name)]);
  const row = rows[0];
  if (row === undefined) return 0;
  const seq = rowInteger(row, 'seq');
  assert(seq >= 0, 'audit sink mark is negative');
  return seq;
}
