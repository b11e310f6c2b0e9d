import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
  t.is(readFileSync(lockPath, 'utf8').split(' ')[0], `${process.pid}`);
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
    t.is(readFileSync(join(dataDir, dataDirLockName), 'utf8').split(' ')[0], `${process.pid}`);
    lock.release();
  }
});

test('a lock whose pid is alive but belongs to another boot or another process start is stale', (t) => {
  // pid 1 is alive, but the lock says it was taken before a reboot, or by an earlier process 1.
  for (const content of ['1 00000000-0000-0000-0000-000000000000 -\n', '1 - 999999999999\n']) {
    const dataDir = freshDir();
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, dataDirLockName), content);
    const lock = acquireDataDirLock(dataDir);
    t.is(readFileSync(join(dataDir, dataDirLockName), 'utf8').split(' ')[0], `${process.pid}`, content);
    lock.release();
  }
  // No temporary files are left behind.
  const dataDir = freshDir();
  acquireDataDirLock(dataDir).release();
  t.deepEqual(readdirSync(dataDir), []);
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
