/**
 * Reading columns back. The drivers disagree on types (`pg` returns int8 as a string, PGlite
 * as a number or a bigint), so every column goes through one of these. The schema's CHECK
 * constraints keep stored values in range, so a value that fails here is a broken invariant.
 */
import { assert } from '../errors.ts';

export type Row = Readonly<Record<string, unknown>>;

export function rowString(row: Row, column: string): string {
  const value = row[column];
  assert(typeof value === 'string', `store column ${column} is not text`);
  return value;
}

export function rowInteger(row: Row, column: string): number {
  const value = row[column];
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'bigint') n = Number(value);
  else if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) n = Number(value);
  else n = Number.NaN;
  // Anything past 2^53 - 1 parses to an unsafe number, so this also catches rounding.
  assert(Number.isSafeInteger(n), `store column ${column} is not a safe integer`);
  return n;
}

export function rowDate(row: Row, column: string): Date {
  const value = row[column];
  assert(value instanceof Date && !Number.isNaN(value.getTime()), `store column ${column} is not a timestamp`);
  return value;
}

export function rowOneOf<const T extends string>(row: Row, column: string, allowed: readonly T[]): T {
  const value = row[column];
  assert(typeof value === 'string' && (allowed as readonly string[]).includes(value), `store column ${column} has an unknown value`);
  return value as T;
}

export function rowObject(row: Row, column: string): Record<string, unknown> {
  const value = row[column];
  assert(typeof value === 'object' && value !== null && !Array.isArray(value), `store column ${column} is not a JSON object`);
  return value as Record<string, unknown>;
}
