/**
 * PGlite has no postmaster to stop a second process opening the same data directory, and two
 * writers would corrupt it. A pid file taken with O_EXCL stands in for that.
 */
import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCode, fail } from '../errors.ts';

export const dataDirLockName = 'stripvault-store.lock';

export interface DataDirLock {
  /** Absolute path of the locked data directory. */
  readonly dataDir: string;
  release(): void;
}

// Locks this process holds: a lock file naming our own pid but absent here is a leftover
// from an earlier process that happened to get the same pid.
const heldHere = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function holderOf(lockPath: string): number | null {
  let text: string;
  try {
    text = readFileSync(lockPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

function tryCreate(lockPath: string): boolean {
  let fd: number;
  try {
    fd = openSync(lockPath, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

export function acquireDataDirLock(dataDir: string): DataDirLock {
  if (typeof dataDir !== 'string' || dataDir.length === 0 || dataDir.includes('\0')) {
    fail(ErrorCode.InvalidArgument, 'store dataDir must be a non-empty path');
  }
  const dir = resolve(dataDir);
  const lockPath = join(dir, dataDirLockName);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (heldHere.has(lockPath)) {
    fail(ErrorCode.StoreUnavailable, `metadata store ${dir} is already open in this process`, { dataDir: dir });
  }
  if (!tryCreate(lockPath)) {
    const holder = holderOf(lockPath);
    if (holder !== null && holder !== process.pid && pidAlive(holder)) {
      fail(ErrorCode.StoreUnavailable, `metadata store ${dir} is in use by process ${holder} (lock file ${lockPath})`, {
        dataDir: dir,
        pid: holder,
      });
    }
    // Stale: its holder is gone. Two processes clearing the same stale lock at the same
    // instant could both win; without flock(2) in Node we accept that narrow window after a crash.
    try {
      unlinkSync(lockPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (!tryCreate(lockPath)) {
      fail(ErrorCode.StoreUnavailable, `metadata store ${dir} was locked by another process while we opened it`, { dataDir: dir });
    }
  }
  heldHere.add(lockPath);
  let held = true;
  return {
    dataDir: dir,
    release(): void {
      if (!held) return;
      held = false;
      heldHere.delete(lockPath);
      if (holderOf(lockPath) === process.pid) unlinkSync(lockPath);
    },
  };
}
