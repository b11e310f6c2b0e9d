/**
 * Events for administrators (failovers, path failures, device state changes...). Append-only
 * and read newest first. Details are operational facts, never keys or data.
 */
import { assert, ErrorCode, fail } from '../errors.ts';
import { rowDate, rowInteger, rowObject, rowString, type Row } from './rows.ts';
import type { Sql, SqlParam } from './sql.ts';
import { checkInteger, checkObject, checkText } from './validate.ts';

/** Most events one listEvents call returns; page further with `beforeId`. */
export const eventsListMax = 1000;
export const eventKindBytesMax = 64;
export const eventSubjectBytesMax = 256;
export const eventDetailBytesMax = 16 * 1024;

export interface EventRecord {
  /**
   * Increases with every append: the order of events and the cursor for paging. Assigned at
   * insert, so appends committing concurrently may become visible slightly out of id order.
   */
  readonly id: number;
  readonly at: Date;
  readonly kind: string;
  /** What the event is about, e.g. a volume or device id. */
  readonly subject: string;
  readonly detail: Readonly<Record<string, unknown>>;
}

export interface NewEvent {
  /** Dotted lower-case words, e.g. `volume.degraded`. */
  readonly kind: string;
  readonly subject: string;
  readonly detail: Readonly<Record<string, unknown>>;
}

export interface EventQuery {
  readonly subject?: string;
  readonly limit: number;
  /** Only events older than this id (the smallest id of the previous page). */
  readonly beforeId?: number;
}

const kindPattern = /^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$/;
// jsonb cannot hold U+0000; JSON.stringify writes it as an unescaped `\u0000`.
const jsonNul = /(?<!\\)(?:\\\\)*\\u0000/;

function checkDetail(value: unknown): string {
  const detail = checkObject(value, 'event.detail');
  let json: string | undefined;
  try {
    json = JSON.stringify(detail);
  } catch (e) {
    fail(ErrorCode.InvalidArgument, `event.detail: not serialisable as JSON (${(e as Error).message})`, { field: 'event.detail' });
  }
  if (typeof json !== 'string') fail(ErrorCode.InvalidArgument, 'event.detail: not serialisable as JSON', { field: 'event.detail' });
  if (Buffer.byteLength(json, 'utf8') > eventDetailBytesMax) {
    fail(ErrorCode.InvalidArgument, `event.detail: more than ${eventDetailBytesMax} bytes of JSON`, { field: 'event.detail' });
  }
  if (jsonNul.test(json)) fail(ErrorCode.InvalidArgument, 'event.detail: must not contain U+0000', { field: 'event.detail' });
  return json;
}

const columns = 'id, at, kind, subject, detail';

function eventFromRow(row: Row): EventRecord {
  return {
    id: rowInteger(row, 'id'),
    at: rowDate(row, 'at'),
    kind: rowString(row, 'kind'),
    subject: rowString(row, 'subject'),
    detail: rowObject(row, 'detail'),
  };
}

export async function appendEvent(sql: Sql, input: NewEvent): Promise<EventRecord> {
  const kind = checkText(input?.kind, 'event.kind', eventKindBytesMax);
  if (!kindPattern.test(kind)) fail(ErrorCode.InvalidArgument, 'event.kind: must be dotted lower-case words like volume.degraded', { field: 'event.kind' });
  const subject = checkText(input.subject, 'event.subject', eventSubjectBytesMax);
  const detail = checkDetail(input.detail);
  const rows = await sql.query<Row>(`INSERT INTO events (kind, subject, detail) VALUES ($1, $2, $3::jsonb) RETURNING ${columns}`, [
    kind,
    subject,
    detail,
  ]);
  const row = rows[0];
  assert(row !== undefined, 'INSERT ... RETURNING returned no row');
  return eventFromRow(row);
}

/** Newest first. */
export async function listEvents(sql: Sql, query: EventQuery): Promise<EventRecord[]> {
  const limit = checkInteger(query?.limit, 'events.limit', 1, eventsListMax);
  const conditions: string[] = [];
  const params: SqlParam[] = [];
  if (query.subject !== undefined) {
    params.push(checkText(query.subject, 'events.subject', eventSubjectBytesMax));
    conditions.push(`subject = $${params.length}`);
  }
  if (query.beforeId !== undefined) {
    params.push(checkInteger(query.beforeId, 'events.beforeId', 1));
    conditions.push(`id < $${params.length}`);
  }
  params.push(limit);
  const where = conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`;
  const rows = await sql.query<Row>(`SELECT ${columns} FROM events ${where} ORDER BY id DESC LIMIT $${params.length}`, params);
  return rows.map(eventFromRow);
}
