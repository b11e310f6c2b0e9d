/**
 * The admin token file: created once, 0600, 64 hex digits; loaded as is afterwards; two processes
 * starting together agree on one token; a file others may read, or one that is not a token, refused.
 */
import test from 'ava';
import { chmod, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { apiTokenPath, loadOrCreateApiToken, readApiTokenFile } from '../../admin-ui/api-token.ts';
import { withTempDir } from '../helpers/volumes.ts';

test('created 0600 with 32 random bytes, then loaded unchanged', async (t) => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    const first = await loadOrCreateApiToken(data);
    t.true(first.created);
    t.regex(first.token, /^[0-9a-f]{64}$/);
    const info = await stat(apiTokenPath(data));
    t.is(info.mode & 0o777, 0o600);
    t.is((await readFile(apiTokenPath(data), 'utf8')).trim(), first.token);
    const second = await loadOrCreateApiToken(data);
    t.deepEqual(second, { token: first.token, created: false });
    t.is(await readApiTokenFile(apiTokenPath(data)), first.token);
    t.deepEqual(await readdir(data), ['api-token'], 'no temporary file left behind');
  });
});

test('concurrent first starts agree on one token', async (t) => {
  await withTempDir(async (dir) => {
    const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateApiToken(dir)));
    t.is(new Set(results.map((r) => r.token)).size, 1);
    t.is(results.filter((r) => r.created).length, 1);
    t.deepEqual(await readdir(dir), ['api-token']);
  });
});

test('a token file others can read, or one without a token, is refused', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'api-token');
    await writeFile(path, 'a'.repeat(64) + '\n', { mode: 0o600 });
    t.is(await readApiTokenFile(path), 'a'.repeat(64));
    await chmod(path, 0o640);
    let e = await t.throwsAsync(readApiTokenFile(path));
    t.true(isStripvaultError(e, ErrorCode.InvalidArgument));
    t.regex(e!.message, /readable by others/);
    await t.throwsAsync(loadOrCreateApiToken(dir), { message: /readable by others/ });
    for (const bad of ['', 'a'.repeat(63), 'g'.repeat(64), 'A'.repeat(64) + 'x', 'a'.repeat(2000)]) {
      await writeFile(path, bad, { mode: 0o600 });
      await chmod(path, 0o600);
      e = await t.throwsAsync(readApiTokenFile(path));
      t.true(isStripvaultError(e, ErrorCode.InvalidArgument), bad.slice(0, 10));
      t.false(e!.message.includes(bad.length > 0 ? bad.slice(0, 20) : '\u0000'), 'the file content is not quoted');
    }
    e = await t.throwsAsync(readApiTokenFile(join(dir, 'missing')));
    t.is((e as { detail?: { errno?: string } }).detail?.errno, 'ENOENT');
  });
});
