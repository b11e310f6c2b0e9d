/**
 * Crash-test plumbing around the real `stripvault serve` process: prepared data directories
 * (made once per slot, restored from a pristine copy per run), a child started with or without
 * STRIPVAULT_CRASH_AT, its log lines, its death and the signal that caused it, and seeds that a
 * failing run prints and CRASH_SEED replays (with ava --match to pick the test).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PassThrough } from 'node:stream';
import type { ExecutionContext } from 'ava';
import { crashAtEnv } from '../../appliance/crash-point.ts';
import { connectNbd, type NbdClient } from '../../appliance/nbd/client.ts';
import type { NbdAddress } from '../../appliance/nbd/server.ts';
import { crashBlockBytes } from './crash-patterns.ts';

export const stripvaultBin = fileURLToPath(new URL('../../bin/stripvault.js', import.meta.url));

/** Bound on a start (node, tsx, PGlite, OWL recovery) on a loaded 2-core machine. */
export const startMsMax = 60_000;
/** Bound on a clean stop after SIGTERM before the harness gives up and kills. */
export const stopMsMax = 30_000;
/** How long a crash test waits for a child it expects to die, once its workload has ended. */
export const deathMsMax = 10_000;
/** Log kept per child for failure reports. */
const logCharsMax = 200_000;

export interface Geometry {
  readonly m: number;
  readonly n: number;
}

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export function describeExit(e: ExitInfo): string {
  return e.signal !== null ? `killed by ${e.signal}` : `exited with code ${e.code}`;
}

/** A `stripvault serve` child. */
export interface ApplianceProcess {
  readonly child: ChildProcess;
  readonly dataDir: string;
  readonly crashAt: string | undefined;
  /** Resolves when the process has exited, however. */
  readonly exited: Promise<ExitInfo>;
  /** The exit, once it happened. */
  exit(): ExitInfo | undefined;
  /** Where it listens, once its "serving" line was logged. */
  address(): NbdAddress | undefined;
  /** Everything it logged (stdout and stderr), for failure reports. */
  log(): string;
  /** Parsed JSON log lines with this event name. */
  events(name: string): Array<Record<string, unknown>>;
  /** Resolves to the address once serving, or to the exit if it died first. Rejects after startMsMax. */
  serving(): Promise<NbdAddress | ExitInfo>;
  kill(signal: NodeJS.Signals): void;
  /** SIGTERM, then the exit (SIGKILL if it does not stop within stopMsMax). */
  stop(): Promise<ExitInfo>;
}

export interface LaunchOptions {
  readonly dataDir: string;
  /** e.g. "owl.appended:3"; when absent the variable is removed from the child's environment. */
  readonly crashAt?: string;
  /** "unix:PATH" or "127.0.0.1:0" (a free port, read back from the log). */
  readonly nbd: string;
}

const live = new Set<ChildProcess>();
// Never leave a server running, whatever a test does.
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export function launch(opts: LaunchOptions): ApplianceProcess {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env[crashAtEnv];
  if (opts.crashAt !== undefined) env[crashAtEnv] = opts.crashAt;
  // No admin API (it would need a port per child) and no scheduled scrub: only NBD and recovery.
  const child = spawn(process.execPath, [stripvaultBin, 'serve', '--data', opts.dataDir, '--nbd', opts.nbd, '--api-listen', 'off', '--scrub-every', 'off'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  let log = '';
  let partial = '';
  let address: NbdAddress | undefined;
  let exit: ExitInfo | undefined;
  const lines: Array<Record<string, unknown>> = [];
  const onServing: Array<() => void> = [];
  const merged = new PassThrough();
  child.stdout!.pipe(merged, { end: false });
  child.stderr!.pipe(merged, { end: false });
  merged.on('data', (d: Buffer) => {
    const text = d.toString();
    if (log.length < logCharsMax) log += text;
    partial += text;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      if (!line.startsWith('{')) continue;
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      lines.push(rec);
      if (rec.event === 'serving' && typeof rec.nbd === 'string') {
        address = parseAddress(rec.nbd);
        for (const f of onServing.splice(0)) f();
      }
    }
  });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      live.delete(child);
      for (const f of onServing.splice(0)) f();
      resolve(exit);
    });
  });
  const proc: ApplianceProcess = {
    child,
    dataDir: opts.dataDir,
    crashAt: opts.crashAt,
    exited,
    exit: () => exit,
    address: () => address,
    log: () => log,
    events: (name) => lines.filter((l) => l.event === name),
    serving: () =>
      new Promise<NbdAddress | ExitInfo>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`serve did not start within ${startMsMax} ms:\n${tail(log)}`)), startMsMax);
        const settle = () => {
          clearTimeout(timer);
          resolve(address ?? exit!);
        };
        if (address !== undefined || exit !== undefined) settle();
        else onServing.push(settle);
      }),
    kill: (signal) => {
      if (exit === undefined) child.kill(signal);
    },
    async stop() {
      if (exit !== undefined) return exit;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopMsMax);
      const e = await exited;
      clearTimeout(timer);
      return e;
    },
  };
  return proc;
}

function parseAddress(text: string): NbdAddress {
  if (text.startsWith('unix:')) return { path: text.slice(5) };
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(text.slice(i + 1)) };
}

/** The last lines of a log, for messages. */
export function tail(log: string, lines = 30): string {
  return log.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Starts a child and waits until it serves; a child that dies first is an error carrying its log. */
export async function startServing(opts: LaunchOptions): Promise<ApplianceProcess & { readonly at: NbdAddress }> {
  const p = launch(opts);
  let r: NbdAddress | ExitInfo;
  try {
    r = await p.serving();
  } catch (e) {
    p.kill('SIGKILL');
    await p.exited;
    throw e;
  }
  if ('code' in r) throw new Error(`serve ${opts.crashAt ? `(${crashAtEnv}=${opts.crashAt}) ` : ''}${describeExit(r)} before serving:\n${tail(p.log())}`);
  return Object.assign(p, { at: r });
}

export function connect(at: NbdAddress, exportName: string): Promise<NbdClient> {
  // 16 in flight: as deep as fio's iodepth in these tests, far below the server's limits.
  return connectNbd(at, exportName, { connectTimeoutMs: startMsMax, inflightMax: 16 });
}

// ---------------------------------------------------------------- prepared data directories

export interface TemplateSpec {
  readonly geometry: Geometry;
  /** Volume size; the 2-of-3 default is the embedded 1 GiB volume and ignores it. */
  readonly sizeBytes?: number;
  /** Blocks filled (and flushed) before the template is frozen, with their content. */
  readonly fill?: { readonly firstBlock: number; readonly blocks: number; readonly content: (first: number, blocks: number) => Buffer };
  /** Runs that may use the template at once (default 2). */
  readonly slots?: number;
}

/**
 * A data directory holding one volume, stopped cleanly, that runs work on copies of. The store
 * records each strip file by absolute path, so a copy elsewhere would still write the original's
 * strips: instead each slot is prepared at its own path, kept as a pristine copy beside it, and
 * restored to that same path before every run that takes the slot.
 */
export interface Template {
  readonly exportName: string;
  readonly geometry: Geometry;
  readonly sizeBytes: number;
  readonly blockBytes: number;
  /** Waits for a free slot, restores it, and returns it with a release function. */
  take(): Promise<{ readonly root: string; readonly dataDir: string; release(): void }>;
  remove(): Promise<void>;
}

export const isEmbeddedDefault = (g: Geometry) => g.m === 2 && g.n === 3;

/** Blocks written per request while filling a template. */
const fillRunBlocks = 256;
const slotsDefault = 2;

export async function prepareTemplate(spec: TemplateSpec): Promise<Template> {
  const root = await mkdtemp(join(tmpdir(), 'sv-crash-'));
  const slots = Array.from({ length: spec.slots ?? slotsDefault }, (_, i) => join(root, `slot-${i}`));
  // allSettled: a failed slot must not remove the directory under another one still starting.
  const results = await Promise.allSettled(
    slots.map(async (slot) => {
      const r = await prepareDataDir(spec, join(slot, 'data'));
      await copyDir(join(slot, 'data'), join(slot, 'pristine'));
      return r;
    }),
  );
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    await rm(root, { recursive: true, force: true });
    throw failed.reason;
  }
  const made = results.map((r) => (r as PromiseFulfilledResult<{ exportName: string; sizeBytes: number }>).value);
  const free = [...slots];
  const waiting: Array<() => void> = [];
  return {
    ...made[0]!,
    geometry: spec.geometry,
    blockBytes: crashBlockBytes,
    async take() {
      while (free.length === 0) await new Promise<void>((r) => waiting.push(r));
      const slot = free.shift()!;
      const release = () => {
        free.push(slot);
        waiting.shift()?.();
      };
      try {
        await rm(join(slot, 'data'), { recursive: true, force: true });
        await rm(join(slot, 'run'), { recursive: true, force: true });
        await copyDir(join(slot, 'pristine'), join(slot, 'data'));
        await mkdir(join(slot, 'run'));
      } catch (e) {
        release();
        throw e;
      }
      return { root: join(slot, 'run'), dataDir: join(slot, 'data'), release };
    },
    remove: () => rm(root, { recursive: true, force: true }),
  };
}

/**
 * The 2-of-3 geometry is the embedded default `serve` builds on an empty directory; any other is
 * built with the CLI (`device add` × n sparse files, `volume create --m`), exported under the
 * volume's own name since serve exports every volume in the store.
 */
async function prepareDataDir(spec: TemplateSpec, dir: string): Promise<{ exportName: string; sizeBytes: number }> {
  const { m, n } = spec.geometry;
  let exportName = 'default';
  let sizeBytes = 1024 ** 3;
  if (!isEmbeddedDefault(spec.geometry)) {
    exportName = `crash-${m}of${n}`;
    sizeBytes = spec.sizeBytes ?? 64 * 1024 ** 2;
    const sink = new PassThrough();
    let out = '';
    sink.on('data', (d: Buffer) => (out += d.toString()));
    const io = { stdin: new PassThrough(), stdout: sink, stderr: sink };
    // The CLI in-process: the same commands as `stripvault ...`, without a node start per command.
    const { main: cliMain } = await import('../../cli/main.ts');
    const cli = async (...argv: string[]) => {
      const code = await cliMain(['--data', dir, ...argv], io);
      if (code !== 0) throw new Error(`stripvault ${argv.join(' ')} exited ${code}:\n${out}`);
    };
    await mkdir(join(dir, 'strips'), { recursive: true });
    const devices: string[] = [];
    for (let i = 0; i < n; i++) {
      // Sparse and generous: a strip (and whatever journal the volume keeps) fits whatever M is.
      await cli('device', 'add', `dev-${i}`, join(dir, 'strips', `strip-${i}.img`), '--create', String(sizeBytes + 64 * 1024 ** 2));
      devices.push(`dev-${i}`);
    }
    await cli('volume', 'create', exportName, '--size', String(sizeBytes), '--devices', devices.join(','), '--m', String(m));
  }
  const sock = join(dir, '..', 'prepare.sock');
  const p = await startServing({ dataDir: dir, nbd: `unix:${sock}` });
  try {
    const client = await connect(p.at, exportName);
    if (client.info.sizeBytes !== sizeBytes) throw new Error(`export ${exportName} is ${client.info.sizeBytes} bytes, expected ${sizeBytes}`);
    if (spec.fill) {
      const { firstBlock, blocks, content } = spec.fill;
      for (let b = firstBlock; b < firstBlock + blocks; b += fillRunBlocks) {
        const count = Math.min(fillRunBlocks, firstBlock + blocks - b);
        await client.write(b * crashBlockBytes, content(b, count));
      }
      await client.flush();
    }
    await client.close();
  } finally {
    const e = await p.stop();
    if (e.code !== 0) throw new Error(`template serve ${describeExit(e)}:\n${tail(p.log())}`);
  }
  return { exportName, sizeBytes };
}

/** cp -a keeps the strip files sparse (a 1 GiB volume copies in milliseconds). */
function copyDir(from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('cp', ['-a', '--sparse=always', from, to], (err, _stdout, stderr) => (err ? reject(new Error(`cp failed: ${stderr}`)) : resolve()));
  });
}

/** One crash run: a slot of a template, and every child it starts, cleaned up at teardown. */
export interface CrashRun {
  readonly dataDir: string;
  /** A directory for this run's sockets and files, emptied when the slot is taken again. */
  readonly scratch: string;
  readonly template: Template;
  readonly processes: ApplianceProcess[];
  /** Starts serve on this run's data dir (optionally with a crash point) without waiting. */
  launch(crashAt?: string): ApplianceProcess;
  /** Starts serve without a crash point and waits until it serves. */
  start(): Promise<ApplianceProcess & { readonly at: NbdAddress }>;
  /** Every log line of every child so far, for failure reports. */
  logs(): string;
}

export async function crashRun(t: ExecutionContext, template: Template): Promise<CrashRun> {
  const { root, dataDir, release } = await template.take();
  const processes: ApplianceProcess[] = [];
  t.teardown(async () => {
    for (const p of processes) p.kill('SIGKILL');
    await Promise.all(processes.map((p) => p.exited));
    release();
  });
  const run: CrashRun = {
    dataDir,
    scratch: root,
    template,
    processes,
    launch(crashAt) {
      // A fresh socket path per child: a SIGKILLed server leaves its socket file behind
      // (restart-socket.test.ts holds serve to cleaning that up; these runs test the data).
      const socket = join(root, `nbd-${processes.length}.sock`);
      const p = launch({ dataDir, nbd: `unix:${socket}`, ...(crashAt === undefined ? {} : { crashAt }) });
      processes.push(p);
      return p;
    },
    async start() {
      const p = run.launch();
      const r = await p.serving();
      if ('code' in r) throw new Error(`restart without a crash point ${describeExit(r)} before serving:\n${tail(p.log())}`);
      return Object.assign(p, { at: r });
    },
    logs: () => processes.map((p, i) => `--- child ${i}${p.crashAt ? ` (${crashAtEnv}=${p.crashAt})` : ''}: ${p.exit() ? describeExit(p.exit()!) : 'running'}\n${tail(p.log(), 15)}`).join('\n'),
  };
  return run;
}

// ---------------------------------------------------------------- seeds

/**
 * A run's seed: CRASH_SEED when set (to replay a failure), else one derived from the run's name
 * and the time, so repeated runs of the suite explore different workloads.
 */
export function crashSeed(): number {
  const env = process.env.CRASH_SEED;
  if (env !== undefined && env !== '') {
    const s = Number(env);
    if (!Number.isSafeInteger(s) || s < 0 || s >= 2 ** 32) throw new Error(`CRASH_SEED must be an integer in [0, 2^32), got ${env}`);
    return s;
  }
  return Math.floor(Math.random() * 2 ** 32);
}
