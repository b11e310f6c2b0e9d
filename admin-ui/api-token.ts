/**
 * The admin API's bearer token: 32 random bytes, hex, in DATA/api-token. Whoever can read that file
 * administers the appliance, so it is created 0600 with O_EXCL (never over an existing file, never
 * readable by others even for a moment) and refused when its mode lets anyone else read it.
 * `readApiTokenFile` failures carry `detail.errno` (ENOENT: there is no token file).
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail, isStripvaultError, type StripvaultError } from '../appliance/errors.ts';

export const apiTokenFileName = 'api-token';
export const apiTokenBytes = 32;
const apiTokenFileMode = 0o600;
const dataDirMode = 0o700;
/** Group and other permission bits: any of them set means someone else may read the token. */
const foreignAccessBits = 0o077;
/** The file holds one line; anything much longer is not a token file. */
const apiTokenFileBytesMax = 1024;

const tokenPattern = new RegExp(`^[0-9a-f]{${apiTokenBytes * 2}}$`);

export function apiTokenPath(dataDir: string): string {
  return join(dataDir, apiTokenFileName);
}

export function isApiToken(value: string): boolean {
  return tokenPattern.test(value);
}

/** Reads a token file (DATA/api-token or one given with --api-token-file). */
export async function readApiTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    // fstat of the handle we read: the file checked is the file read.
    const fh = await open(path, 'r');
    try {
      const info = await fh.stat();
      if (!info.isFile() || info.size > apiTokenFileBytesMax) fail(ErrorCode.InvalidArgument, `${path} is not an API token file`);
      if ((info.mode & foreignAccessBits) !== 0) {
        fail(ErrorCode.InvalidArgument, `${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it`);
      }
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (isStripvaultError(e) || (e as NodeJS.ErrnoException).code === undefined) throw e;
    fail(ErrorCode.InvalidArgument, `cannot read API token file ${path}: ${(e as NodeJS.ErrnoException).code}`, { errno: (e as NodeJS.ErrnoException).code });
  }
  const token = text.trim();
  if (!isApiToken(token)) fail(ErrorCode.InvalidArgument, `${path} does not hold an API token (${apiTokenBytes * 2} hex digits)`);
  return token;
}

/**
 * The appliance's token: loaded from DATA/api-token, or created there on first start. Written to a
 * private temporary file (O_EXCL, 0600) and linked into place, because link() refuses an existing
 * name atomically: two processes starting together agree on one token, and nobody ever reads a
 * half-written file.
 */
export async function loadOrCreateApiToken(dataDir: string): Promise<{ token: string; created: boolean }> {
  const path = apiTokenPath(dataDir);
  await mkdir(dataDir, { recursive: true, mode: dataDirMode });
  try {
    return { token: await readApiTokenFile(path), created: false };
  } catch (e) {
    if ((e as StripvaultError).detail?.errno !== 'ENOENT') throw e;
  }
  const token = randomBytes(apiTokenBytes).toString('hex');
  const temporary = `${path}.${randomBytes(8).toString('hex')}.tmp`;
  const fh = await open(temporary, 'wx', apiTokenFileMode).catch((e: NodeJS.ErrnoException) =>
    fail(ErrorCode.InvalidArgument, `cannot create API token file in ${dataDir}: ${e.code ?? 'error'}`),
  );
  try {
    try {
      await fh.writeFile(token + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(temporary, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') fail(ErrorCode.InvalidArgument, `cannot create API token file ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
      return { token: await readApiTokenFile(path), created: false };
    }
  } finally {
    await unlink(temporary).catch(() => undefined);
  }
  return { token, created: true };
}
