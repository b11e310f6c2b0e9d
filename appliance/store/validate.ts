/**
 * Input checks run before any SQL: bad input gets SV_INVALID_ARGUMENT with the offending
 * field named, and the database constraints are only a second line of defence.
 */
import { ErrorCode, fail } from '../errors.ts';

/** Names of devices, volumes and later COIs, tapes...: short enough for a UI column and a log line. */
export const nameBytesMax = 128;
/** Device paths and NBD URIs (PATH_MAX on Linux). */
export const pathBytesMax = 4096;

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Letters, marks, digits, punctuation, symbols and inner spaces: what a person can read and
// type back. No controls, no format characters (bidi overrides), no surrogates.
const printableName = /^[\p{L}\p{M}\p{N}\p{P}\p{S}](?:[\p{L}\p{M}\p{N}\p{P}\p{S} ]*[\p{L}\p{M}\p{N}\p{P}\p{S}])?$/u;
const controlCharacter = /[\p{Cc}\p{Cf}\p{Cs}]/u;

function invalid(field: string, message: string): never {
  fail(ErrorCode.InvalidArgument, `${field}: ${message}`, { field });
}

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

/** Lower-case canonical form: PostgreSQL returns uuids that way, so ids compare as strings. */
export function checkUuid(value: unknown, field: string): string {
  if (typeof value !== 'string' || !isUuid(value)) invalid(field, 'must be a UUID');
  return value.toLowerCase();
}

export function checkName(value: unknown, field: string): string {
  if (typeof value !== 'string') invalid(field, 'must be a string');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes === 0 || bytes > nameBytesMax) invalid(field, `must be 1..${nameBytesMax} bytes of UTF-8`);
  if (!printableName.test(value)) {
    invalid(field, 'must be printable, without control characters or leading/trailing spaces');
  }
  // Lookups take an id or a name; a name shaped like a UUID would make that ambiguous.
  if (isUuid(value)) invalid(field, 'must not look like a UUID');
  return value;
}

/** Free text (paths, event subjects): bounded, no control characters (PostgreSQL text has no NUL). */
export function checkText(value: unknown, field: string, bytesMax: number): string {
  if (typeof value !== 'string') invalid(field, 'must be a string');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes === 0 || bytes > bytesMax) invalid(field, `must be 1..${bytesMax} bytes of UTF-8`);
  if (controlCharacter.test(value)) invalid(field, 'must not contain control characters');
  return value;
}

export function checkInteger(value: unknown, field: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    invalid(field, `must be an integer in ${min}..${max}`);
  }
  return value;
}

export function checkOneOf<const T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    invalid(field, `must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export function checkObject(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(field, 'must be an object');
  return value as Record<string, unknown>;
}

/** An id if it looks like one, else a name; names may not look like UUIDs, so this is unambiguous. */
export function checkIdOrName(value: unknown, field: string): { id: string | null; name: string | null } {
  if (typeof value === 'string' && isUuid(value)) return { id: value.toLowerCase(), name: null };
  return { id: null, name: checkName(value, field) };
}
