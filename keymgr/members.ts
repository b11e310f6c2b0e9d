/**
 * Who can be a COI member: users (people who log in) and clients (application servers holding an
 * appliance certificate). Names are held to a small alphabet because they are compared exactly,
 * shown in the admin UI and written to the audit log.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';
import type { DirectoryMember } from './directory.ts';
import { validateClientName } from './pki-names.ts';

export const userNameCharsMax = 64;
// Login names as directories spell them: `alice`, `a.smith`, `bob@corp.example`, `svc_backup`.
const userNamePattern = /^[A-Za-z0-9](?:[A-Za-z0-9._@-]*[A-Za-z0-9])?$/;

export function validateUserName(value: unknown, what = 'user name'): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > userNameCharsMax || !userNamePattern.test(value)) {
    fail(ErrorCode.InvalidArgument, `${what} must be 1..${userNameCharsMax} of A-Z, a-z, 0-9, '.', '_', '@', '-' (starting and ending alphanumeric)`, {
      what,
    });
  }
  return value;
}

/** A frozen, validated copy. SV_INVALID_ARGUMENT names what is wrong. */
export function validateMember(value: unknown): DirectoryMember {
  if (typeof value !== 'object' || value === null) fail(ErrorCode.InvalidArgument, 'member must be an object { kind, name }');
  const { kind, name } = value as Record<string, unknown>;
  if (kind === 'user') return Object.freeze({ kind, name: validateUserName(name, 'member name') });
  if (kind === 'client') return Object.freeze({ kind, name: validateClientName(name, 'member name') });
  return fail(ErrorCode.InvalidArgument, "member kind must be 'user' or 'client'");
}
