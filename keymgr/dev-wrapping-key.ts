/**
 * The embedded default's dev unseal: a wrapping key kept in a file in the data directory, so a
 * fresh clone works with no security officers (like a dev-mode server). Anyone who can read that
 * file can open every strip — so it is announced loudly every time it is used. The key manager
 * (sealed start, officer shares, COI workgroup keys) replaces this in production.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail } from '../appliance/errors.ts';
import type { Wrapper } from '../appliance/strip/header.ts';

export const devUnsealFileName = 'dev-unseal.key';
/** The file is tiny; anything larger is not ours. */
const devUnsealFileBytesMax = 4096;

export const devUnsealWarning =
  'WARNING: DEV UNSEAL — the wrapping key for every volume is stored UNPROTECTED in %s. ' +
  'Anyone who can read that file can read every volume. Never use this mode in production.';

interface DevUnsealFile {
  readonly warning: string;
  readonly wrapperId: string;
  readonly key: string;
}

export async function loadOrCreateDevWrapper(dataDir: string, warn: (message: string) => void): Promise<Wrapper> {
  const path = join(dataDir, devUnsealFileName);
  await mkdir(dataDir, { recursive: true });
  let wrapper: Wrapper;
  try {
    const text = await readFile(path, 'utf8');
    if (text.length > devUnsealFileBytesMax) fail(ErrorCode.InvalidArgument, `${path} is not a dev unseal file`);
    wrapper = parse(JSON.parse(text) as DevUnsealFile, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (e instanceof SyntaxError) fail(ErrorCode.InvalidArgument, `${path} is not valid JSON`);
      throw e;
    }
    wrapper = { id: randomBytes(16), key: randomBytes(32) };
    const body: DevUnsealFile = {
      warning: devUnsealWarning.replace('%s', path),
      wrapperId: wrapper.id.toString('hex'),
      key: Buffer.from(wrapper.key).toString('hex'),
    };
    // 'wx': never overwrite a key another process just created (if one did, use that one); 0600: owner only.
    let fh;
    try {
      fh = await open(path, 'wx', 0o600);
    } catch (e2) {
      if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw e2;
      return loadOrCreateDevWrapper(dataDir, warn);
    }
    try {
      await fh.writeFile(JSON.stringify(body, null, 2) + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) !== 0) warn(`WARNING: ${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it.`);
  warn(devUnsealWarning.replace('%s', path));
  return wrapper;
}

function parse(f: DevUnsealFile, path: string): Wrapper {
  const hex = (s: unknown, bytes: number) => typeof s === 'string' && s.length === bytes * 2 && /^[0-9a-f]+$/.test(s);
  if (f === null || typeof f !== 'object' || !hex(f.wrapperId, 16) || !hex(f.key, 32)) {
    fail(ErrorCode.InvalidArgument, `${path} is not a valid dev unseal file`);
  }
  return { id: Buffer.from(f.wrapperId, 'hex'), key: Buffer.from(f.key, 'hex') };
}
