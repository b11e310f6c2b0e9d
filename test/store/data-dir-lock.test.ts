import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { acquireDataDirLock, dataDirLockName } from '../../appliance/store/data-dir-lock.ts';

const root = mkdtempSync(join(tmpdir(), 'stripvault-lock-'));
let dirs = 0;
const freshDir = (): string => join(root, `d${++dirs}`);
test.after.always(() => rmSync(root, { recursive: true, force: true }));

const refused = (t: ExecutionContext, dataDir: string): StripvaultError =>
  t.throws(() => acquireDataDirLock(dataDir), { instanceOf: StripvaultError, code: ErrorCode.StoreUnavailable }) as StripvaultError;

test('one holder at a time in this process; release frees it', (t) => {
  const dataDir = freshDir();
  const lock = acquireDataDirLock(dataDir);
  const lockPath = join(dataDir, dataDirLockName);
  t.is(readFileSync(lockPath, 'utf8'), `${process.pid}\n`);
  refused(t, dataDir);
  lock.release();
  t.false(existsSync(lockPath));
  lock.release(); // twice is harmless
  acquireDataDirLock(dataDir).release();
});

test('a live process holding the lock keeps it', (t) => {
  const dataDir = freshDir();
  mkdirSync(dataDir, { recursive: true });
  // pid 1 is always alive.
  writeFileSync(join(dataDir, dataDirLockName), '1\n');
  t.regex(refused(t, dataDir).message, /in use by process 1/);
  t.is(readFileSync(join(dataDir, dataDirLockName), 'utf8'), '1\n', 'left alone');
});

test('a lock left by a dead process, or garbage, is taken over', (t) => {
  const gone = spawnSync(process.execPath, ['-e', '']).pid;
  for (const content of [`${gone}\n`, 'not a pid', '']) {
    const dataDir = freshDir();
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, dataDirLockName), content);
    const lock = acquireDataDirLock(dataDir);
    t.is(readFileSync(join(dataDir, dataDirLockName), 'utf8'), `${process.pid}\n`);
    lock.release();
  }
});

test('a lock file naming this process but not held here is stale', (t) => {
  const dataDir = freshDir();
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, dataDirLockName), `${process.pid}\n`);
  const lock = acquireDataDirLock(dataDir);
  refused(t, dataDir);
  lock.release();
  t.false(existsSync(join(dataDir, dataDirLockName)));
});

test('bad paths are refused', (t) => {
  for (const dataDir of ['', 'a\u0000b', 42]) {
    t.throws(() => acquireDataDirLock(dataDir as string), { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument });
  }
});
