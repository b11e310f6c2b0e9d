/**
 * Real NBD clients (nbdcopy, fio) as killable children for crash tests, and the per-block check
 * that fits them: with no model of what they acknowledged, each block must be wholly one of the
 * contents it could hold — never a mix, never unreadable.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { NbdClient } from '../../appliance/nbd/client.ts';
import type { NbdAddress } from '../../appliance/nbd/server.ts';
import { digest } from './crash-patterns.ts';

const packageOf: Record<string, string> = { nbdcopy: 'libnbd-bin', fio: 'fio' };

export interface ToolRun {
  readonly child: ChildProcess;
  /** Exit code (null if killed) once it ended; a missing program rejects naming its package. */
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>;
}

export function startTool(cmd: string, args: readonly string[], cwd?: string): ToolRun {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }>((resolve, reject) => {
    child.once('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? new Error(`${cmd} is not installed (Debian package ${packageOf[cmd] ?? '?'}); this test needs it`) : e),
    );
    child.once('exit', (code, signal) => resolve({ code, signal, output }));
  });
  return { child, done };
}

export function nbdUri(at: NbdAddress, exportName: string): string {
  return 'path' in at ? `nbd+unix:///${exportName}?socket=${at.path}` : `nbd://${at.host}:${at.port}/${exportName}`;
}

export interface WholeBlockReport {
  /** How many blocks held each allowed content, by its name. */
  readonly counts: ReadonlyMap<string, number>;
  /** Blocks that were none of them: "block N: <why>". */
  readonly bad: readonly string[];
}

/**
 * Reads blocks [first, first + blocks) and names each by the allowed content it equals.
 * `allowed(block)` lists (name, content) pairs; a read error is thrown, never counted.
 */
export async function checkWholeBlocks(
  client: NbdClient,
  blockBytes: number,
  first: number,
  blocks: number,
  allowed: (block: number) => ReadonlyArray<readonly [string, Buffer]>,
): Promise<WholeBlockReport> {
  const counts = new Map<string, number>();
  const bad: string[] = [];
  const runBlocks = 256;
  for (let b = first; b < first + blocks; b += runBlocks) {
    const n = Math.min(runBlocks, first + blocks - b);
    const data = await client.read(b * blockBytes, n * blockBytes);
    for (let i = 0; i < n; i++) {
      const got = data.subarray(i * blockBytes, (i + 1) * blockBytes);
      const options = allowed(b + i);
      const hit = options.find(([, c]) => c.equals(got));
      if (hit) counts.set(hit[0], (counts.get(hit[0]) ?? 0) + 1);
      else bad.push(`block ${b + i}: ${describeForeign(got, options, blockBytes)}`);
    }
  }
  return { counts, bad };
}

function describeForeign(got: Buffer, options: ReadonlyArray<readonly [string, Buffer]>, blockBytes: number): string {
  const sector = 512;
  const from = new Set<string>();
  let unknown = 0;
  for (let at = 0; at < blockBytes; at += sector) {
    const hit = options.find(([, c]) => c.subarray(at, at + sector).equals(got.subarray(at, at + sector)));
    if (hit) from.add(hit[0]);
    else unknown++;
  }
  if (unknown === 0) return `mix of ${[...from].join(' and ')}`;
  return `unknown content ${digest(got)}${got.every((x) => x === 0) ? ' (all zeros)' : ''}: ${unknown} sectors match none of ${options.map(([n]) => n).join(', ')}`;
}

/** Bytes a process has written through write(2)-family calls (strip writes, mostly), from /proc. */
export async function bytesWrittenBy(pid: number): Promise<number | null> {
  try {
    const m = /^wchar:\s*(\d+)$/m.exec(await readFile(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** How often the server's write count is sampled while waiting for a kill moment. */
const progressPollMs = 5;

/**
 * Resolves once process `pid` has written `bytes` more than when called ("reached"), or when
 * `ended` settles first (the client finished or failed), or after `timeoutMs`. Anchors a kill to
 * the server's progress rather than to wall time, which a loaded machine stretches.
 */
export async function waitForServerWrites(pid: number, bytes: number, ended: Promise<unknown>, timeoutMs: number): Promise<'reached' | 'ended' | 'timeout'> {
  const base = await bytesWrittenBy(pid);
  if (base === null) throw new Error(`cannot read /proc/${pid}/io to follow the server's progress`);
  let over = false;
  void ended.then(
    () => (over = true),
    () => (over = true),
  );
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await bytesWrittenBy(pid);
    if (now === null || now - base >= bytes) return 'reached';
    if (over) return 'ended';
    if (Date.now() > deadline) return 'timeout';
    await new Promise((r) => setTimeout(r, progressPollMs));
  }
}
