/**
 * Validity windows. Every time is cut to whole seconds (what X.509 can carry), so the registry records
 * exactly what the certificate says.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';
import { dayMs, wholeSeconds } from './pki-x509.ts';

/** notBefore is set this far before the issue time, so a peer whose clock lags a little still accepts a
 * certificate issued a moment ago. */
export const notBeforeBackdateMs = 5 * 60 * 1000;

export interface ValidityWindow {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export function issueTime(now: Date | undefined): number {
  if (now === undefined) return Date.now();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) fail(ErrorCode.InvalidArgument, 'now must be a valid Date');
  return now.getTime();
}

export function validityWindow(now: Date | undefined, validDays: unknown, validDaysMax: number, what: string): ValidityWindow {
  if (typeof validDays !== 'number' || !Number.isInteger(validDays) || validDays < 1 || validDays > validDaysMax) {
    fail(ErrorCode.InvalidArgument, `${what} must be an integer 1..${validDaysMax}`, { validDays });
  }
  const t = issueTime(now);
  return { notBefore: wholeSeconds(t - notBeforeBackdateMs), notAfter: wholeSeconds(t + validDays * dayMs) };
}
