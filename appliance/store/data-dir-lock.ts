/**
 * PGlite has no postmaster to stop a second process opening the same data directory, and two
 * writers would corrupt it. A pid file taken with O_EXCL stands in for that.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
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

/** Who holds a lock: a pid alone is not enough, pids are reused (after a reboot, low ones soon). */
interface Holder {
  readonly pid: number;
  /** Linux boot id: a lock from before a reboot is stale whatever its pid. */
  readonly boot: string | null;
  /** Start time of the process in clock ticks since boot (/proc/PID/stat field 22). */
  readonly start: string | null;
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function bootId(): string | null {
  return readOr('/proc/sys/kernel/random/boot_id')?.trim() ?? null;
}

function startTime(pid: number): string | null {
  const stat = readOr(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // Fields after the command (which may contain spaces) start after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

function me(): Holder {
  return { pid: process.pid, boot: bootId(), start: startTime(process.pid) };
}

/** The holder still runs: same pid, same boot, same process start time (where the system tells). */
function holderAlive(h: Holder): boolean {
  if (!pidAlive(h.pid)) return false;
  if (h.boot !== null && bootId() !== null && h.boot !== bootId()) return false;
  if (h.start !== null && startTime(h.pid) !== null && h.start !== startTime(h.pid)) return false;
  return true;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function holderOf(lockPath: string): Holder | null {
  let text: string;
  try {
    text = readFileSync(lockPath, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  // "pid boot start", or a bare pid from an older build.
  const [pidText, boot, start] = text.trim().split(/\s+/);
  const pid = Number.parseInt(pidText ?? '', 10);
  return Number.isSafeInteger(pid) && pid > 0 ? { pid, boot: boot ?? null, start: start ?? null } : null;
}

/**
 * Creates the lock file complete or not at all: written under a private name, then hard-linked into
 * place (link fails if the name exists). A lock file is therefore never seen empty or half written.
 */
function tryCreate(lockPath: string): boolean {
  const h = me();
  const temp = `${lockPath}.${process.pid}.${randomBytes(6).toString('hex')}`;
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, `${h.pid} ${h.boot ?? '-'} ${h.start ?? '-'}\n`);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, lockPath);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(temp);
  }
}

function normalise(h: Holder): Holder {
  return { pid: h.pid, boot: h.boot === '-' ? null : h.boot, start: h.start === '-' ? null : h.start };
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
    if (holder !== null && holder.pid !== process.pid && holderAlive(normalise(holder))) {
      fail(ErrorCode.StoreUnavailable, `metadata store ${dir} is in use by process ${holder.pid} (lock file ${lockPath})`, {
        dataDir: dir,
        pid: holder.pid,
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
      if (holderOf(lockPath)?.pid === process.pid) unlinkSync(lockPath);
    },
  };
}
