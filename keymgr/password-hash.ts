/**
 * Password hashes for the local directory: scrypt (RFC 7914), N = 2^15, r = 8, p = 1 (OWASP's
 * minimum for scrypt), 16-byte random salt, 32-byte output, encoded as
 *
 *   scrypt$<log2 N>$<r>$<p>$<salt base64url>$<hash base64url>
 *
 * so the parameters can be raised later without invalidating stored hashes.
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { ErrorCode, fail } from '../appliance/errors.ts';

export const scryptLogN = 15;
export const scryptR = 8;
export const scryptP = 1;
export const passwordSaltBytes = 16;
export const passwordHashBytes = 32;
/** scrypt's cost is in N and r, not the password length, but keep input bounded anyway. */
export const passwordBytesMax = 1024;
/** For new passwords only; checking an old one just needs it to be non-empty. */
export const passwordCharsMin = 8;
/** Highest cost a stored hash may ask for, so a forged row cannot make a login take minutes. */
const scryptLogNMax = 20;
// 128 * N * r bytes, with headroom; Node's 32 MiB default is exactly one N=2^15, r=8 block.
const scryptMemBytesMax = 256 * 1024 * 1024;
const encodedPattern = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,64})\$([A-Za-z0-9_-]{43})$/;

function derive(password: Buffer, salt: Buffer, logN: number, r: number, p: number): Promise<Buffer> {
  const options: ScryptOptions = { N: 2 ** logN, r, p, maxmem: scryptMemBytesMax };
  return new Promise((resolve, reject) => {
    scrypt(password, salt, passwordHashBytes, options, (err, key) => (err === null ? resolve(key) : reject(err)));
  });
}

/** A new hash of `password` (which must satisfy the new-password rules). */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== 'string' || [...password].length < passwordCharsMin || Buffer.byteLength(password, 'utf8') > passwordBytesMax) {
    fail(ErrorCode.InvalidArgument, `a password must be ${passwordCharsMin} characters to ${passwordBytesMax} bytes`);
  }
  const salt = randomBytes(passwordSaltBytes);
  const input = Buffer.from(password.normalize('NFC'), 'utf8');
  try {
    const hash = await derive(input, salt, scryptLogN, scryptR, scryptP);
    return `scrypt$${scryptLogN}$${scryptR}$${scryptP}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
  } finally {
    input.fill(0);
  }
}

/** A hash of nothing anyone knows, to spend the same time on unknown users as on known ones. */
export const decoyPasswordHash = `scrypt$${scryptLogN}$${scryptR}$${scryptP}$${Buffer.alloc(passwordSaltBytes).toString('base64url')}$${Buffer.alloc(passwordHashBytes).toString('base64url')}`;

/** True only for a non-empty password matching `encoded`; a malformed hash never matches. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const match = encodedPattern.exec(encoded);
  if (match === null) return false;
  const [logN, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  if (logN < 1 || logN > scryptLogNMax || r < 1 || r > 32 || p < 1 || p > 4 || 128 * 2 ** logN * r > scryptMemBytesMax / 2) return false;
  const salt = Buffer.from(match[4]!, 'base64url');
  const expected = Buffer.from(match[5]!, 'base64url');
  const input = Buffer.from(typeof password === 'string' ? password.normalize('NFC') : '', 'utf8');
  try {
    const actual = await derive(input, salt, logN, r, p);
    return input.length > 0 && input.length <= passwordBytesMax && timingSafeEqual(actual, expected);
  } finally {
    input.fill(0);
  }
}
