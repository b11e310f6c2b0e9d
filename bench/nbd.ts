/**
 * stripvault over NBD next to qemu-nbd (raw file, LUKS1 image) in the same run on the same
 * machine, measured by the same outside clients: nbdcopy for sequential MB/s (1 GiB of random
 * data written with a final flush, then the export read to null:) and fio's nbd engine for 4 KiB
 * random IOPS at queue depth 32. Every server runs in its own process, and is warmed up first with
 * an unmeasured write (warmUpBytes), as fio's ramp_time warms up its jobs.
 * Targets (issue 3): sequential write and read >= 1.0x qemu-nbd LUKS1; 4 KiB random IOPS >= 0.5x.
 *
 *   node --import tsx bench/nbd.ts            full run, about 3 minutes
 *   node --import tsx bench/nbd.ts --quick    smoke run (256 MiB, 3 s fio): ratios not meaningful
 *   node --import tsx bench/nbd.ts --profile  stripvault only, server under --cpu-prof, top costs
 *   node --import tsx bench/nbd.ts --direct   the volume without the metadata store (bench/peers.ts volume-server)
 */
import { randomFill } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  freePort,
  interruptAll,
  qemuCacheOptions,
  runTool,
  startQemuLuks,
  startQemuRaw,
  startStripvault,
  startStripvaultDirect,
  stopAllChildren,
  volumeBytes,
  type Peer,
} from './peers.ts';
import { table } from './timing.ts';
import { nativeSeal } from '../appliance/split/native-seal.ts';

const randomFillAsync = promisify(randomFill);

const sourceChunkBytes = 16 * 1024 * 1024;
/**
 * Every server first takes this much written with nbdcopy, unmeasured, as fio's ramp_time does for
 * its jobs: a long-running server is measured, not its first seconds (stripvault's JIT compiles its
 * write path then — measured: 288 MB/s cold against 350 warm on the same build). 256 MiB was not
 * enough: the first GiB after it still saw 165 optimising compilations and 21 deoptimisations, at
 * 312 MB/s, against 50 and 8, at 358 MB/s, in the GiB after that (node --trace-opt --trace-deopt).
 */
const warmUpBytes = 1024 * 1024 * 1024;
const quickWarmUpBytes = 64 * 1024 * 1024;
const quickCopyBytes = 256 * 1024 * 1024;
const fioSecondsFull = 12;
const fioSecondsQuick = 3;
const fioRampSeconds = 2;
const fioIoDepth = 32;
const fioBlockBytes = 4096;
const copyTimeoutMs = 150_000;
const fioSlackMs = 30_000;

/** What the issue asks of stripvault relative to qemu-nbd LUKS1. */
export const targets = {
  seqWrite: 1.0,
  seqRead: 1.0,
  randWrite: 0.5,
  randRead: 0.5,
} as const;
type Figure = keyof typeof targets;

function figureLabel(k: Figure, copyBytes: number): string {
  const mib = (b: number) => (b >= 2 ** 30 ? `${b / 2 ** 30} GiB` : `${b / 2 ** 20} MiB`);
  switch (k) {
    case 'seqWrite':
      return `seq write ${mib(copyBytes)} (MB/s)`;
    case 'seqRead':
      return `seq read ${mib(volumeBytes)} (MB/s)`;
    case 'randWrite':
      return `4K randwrite qd${fioIoDepth} (IOPS)`;
    case 'randRead':
      return `4K randread qd${fioIoDepth} (IOPS)`;
  }
}

export interface NbdBenchRow {
  readonly figure: string;
  readonly stripvault: number;
  readonly 'qemu raw': number;
  readonly 'qemu LUKS1': number;
  readonly 'sv/raw': number;
  readonly 'sv/LUKS1': number;
  readonly target: string;
  readonly met: string;
}

export interface NbdBenchOptions {
  /** Smoke run: 256 MiB written, 3 s per fio job. */
  readonly quick?: boolean;
  /** Profile the stripvault server (node --cpu-prof into this directory); only stripvault runs. */
  readonly profileDir?: string;
  /** Serve the volume built directly (bench/peers.ts volume-server, no metadata store) instead of `stripvault serve`. */
  readonly direct?: boolean;
  /** Progress lines (default: stderr). */
  readonly log?: (line: string) => void;
}

type Figures = Record<Figure, number>;

interface Plan {
  readonly copyBytes: number;
  readonly fioSeconds: number;
  readonly source: string;
  readonly warmBytes: number;
  /** Written to every server before anything is measured (see warmUpBytes). */
  readonly warmSource: string;
}

async function makeSource(path: string, bytes: number): Promise<void> {
  const h = await open(path, 'w');
  try {
    const chunk = Buffer.allocUnsafe(sourceChunkBytes);
    for (let done = 0; done < bytes; done += chunk.length) {
      await randomFillAsync(chunk);
      await h.write(chunk, 0, Math.min(chunk.length, bytes - done));
    }
  } finally {
    await h.close();
  }
}

async function fio(uri: string, rw: 'randwrite' | 'randread', seconds: number): Promise<number> {
  const args = [
    `--name=${rw}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${rw}`,
    `--bs=${fioBlockBytes}`,
    `--iodepth=${fioIoDepth}`,
    '--numjobs=1',
    '--time_based',
    `--runtime=${seconds}`,
    `--ramp_time=${fioRampSeconds}`,
    '--output-format=json',
  ];
  const { stdout } = await runTool('fio', args, { timeoutMs: (seconds + fioRampSeconds) * 1000 + fioSlackMs });
  // The nbd engine prints "fio: connected to NBD server" before the JSON document.
  const start = stdout.search(/^\{/m);
  if (start < 0) throw new Error(`fio ${rw}: no JSON in output:\n${stdout.slice(0, 500)}`);
  const report = JSON.parse(stdout.slice(start)) as { jobs: Array<{ error: number; read: { iops: number; io_bytes: number }; write: { iops: number; io_bytes: number } }> };
  const job = report.jobs[0];
  if (job === undefined || job.error !== 0) throw new Error(`fio ${rw}: job error ${job?.error}`);
  const side = rw === 'randwrite' ? job.write : job.read;
  if (side.io_bytes <= 0) throw new Error(`fio ${rw}: no I/O done`);
  return side.iops;
}

/** A measured stretch of time, in the monotonic microseconds V8 CPU profiles use. */
export interface Phase {
  readonly name: string;
  readonly startUs: number;
  readonly endUs: number;
}

const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

async function measurePeer(peer: Peer, plan: Plan, log: (line: string) => void, phases: Phase[]): Promise<Figures> {
  const timed = async <T>(name: string, body: () => Promise<T>): Promise<T> => {
    log(`  ${peer.name}: ${name}`);
    const startUs = monotonicUs();
    try {
      return await body();
    } finally {
      phases.push({ name, startUs, endUs: monotonicUs() });
    }
  };
  await timed(`warm-up, not measured: nbdcopy write ${plan.warmBytes / 2 ** 20} MiB`, () => runTool('nbdcopy', ['--flush', plan.warmSource, peer.uri], { timeoutMs: copyTimeoutMs }));
  const w = await timed(`nbdcopy write ${plan.copyBytes / 2 ** 20} MiB`, () => runTool('nbdcopy', ['--flush', plan.source, peer.uri], { timeoutMs: copyTimeoutMs }));
  const seqWrite = plan.copyBytes / 1e6 / w.seconds;
  const r = await timed(`nbdcopy read ${volumeBytes / 2 ** 20} MiB`, () => runTool('nbdcopy', [peer.uri, 'null:'], { timeoutMs: copyTimeoutMs }));
  const seqRead = volumeBytes / 1e6 / r.seconds;
  const randWrite = await timed('fio randwrite', () => fio(peer.uri, 'randwrite', plan.fioSeconds));
  const randRead = await timed('fio randread', () => fio(peer.uri, 'randread', plan.fioSeconds));
  const f = { seqWrite, seqRead, randWrite, randRead };
  log(`  ${peer.name}: ${JSON.stringify(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, Math.round(v)])))}`);
  return f;
}

interface Measured {
  readonly name: string;
  readonly pid: number;
  readonly figures: Figures;
  readonly phases: Phase[];
}

/** Starts a peer in its own directory, measures it, always stops it. */
async function withPeer(start: () => Promise<Peer>, plan: Plan, log: (line: string) => void): Promise<Measured> {
  const peer = await start();
  log(`${peer.name} serving ${peer.uri} (pid ${peer.pid})`);
  const phases: Phase[] = [];
  try {
    return { name: peer.name, pid: peer.pid, figures: await measurePeer(peer, plan, log, phases), phases };
  } catch (e) {
    throw new Error(`${peer.name}: ${(e as Error).message}\nserver stderr:\n${peer.stderrTail()}`);
  } finally {
    await peer.stop();
  }
}

function rowsOf(copyBytes: number, sv: Figures, raw: Figures | undefined, luks: Figures | undefined): NbdBenchRow[] {
  return (Object.keys(targets) as Figure[]).map((k) => {
    const vsRaw = raw ? sv[k] / raw[k] : NaN;
    const vsLuks = luks ? sv[k] / luks[k] : NaN;
    return {
      figure: figureLabel(k, copyBytes),
      stripvault: sv[k],
      'qemu raw': raw?.[k] ?? NaN,
      'qemu LUKS1': luks?.[k] ?? NaN,
      'sv/raw': vsRaw,
      'sv/LUKS1': vsLuks,
      target: `>= ${targets[k].toFixed(1)}x LUKS1`,
      met: Number.isNaN(vsLuks) ? '-' : vsLuks >= targets[k] ? 'yes' : 'NO',
    };
  });
}

export async function benchNbd(opts: NbdBenchOptions = {}): Promise<NbdBenchRow[]> {
  return (await runBench(opts)).rows;
}

interface BenchRun {
  readonly rows: NbdBenchRow[];
  readonly stripvault: Measured;
}

async function runBench(opts: NbdBenchOptions): Promise<BenchRun> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const root = await mkdtemp(join(tmpdir(), 'stripvault-bench-nbd-'));
  try {
    const copyBytes = opts.quick ? quickCopyBytes : volumeBytes;
    const warmBytes = opts.quick ? quickWarmUpBytes : warmUpBytes;
    const plan: Plan = { copyBytes, warmBytes, fioSeconds: opts.quick ? fioSecondsQuick : fioSecondsFull, source: join(root, 'source.bin'), warmSource: join(root, 'warm.bin') };
    log(`bench nbd: ${root}; qemu-nbd ${qemuCacheOptions.join(' ')}; writing ${copyBytes / 2 ** 20} MiB random source and ${warmBytes / 2 ** 20} MiB for the warm-up`);
    await makeSource(plan.source, copyBytes);
    await makeSource(plan.warmSource, warmBytes);
    const dirFor = async (name: string) => {
      const d = join(root, name);
      await mkdir(d);
      return d;
    };

    const svDir = await dirFor('stripvault');
    const nodeArgs = opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [];
    const onFallback = (why: string) => log(`stripvault serve unavailable, using the direct volume server instead:\n${indent(why)}`);
    const startSv = async (): Promise<Peer> => {
      const o = { dataDir: svDir, port: await freePort(), nodeArgs };
      return opts.direct ? startStripvaultDirect(o) : startStripvault({ ...o, onFallback });
    };
    const sv = await withPeer(startSv, plan, log);
    if (opts.profileDir) return { rows: rowsOf(copyBytes, sv.figures, undefined, undefined), stripvault: sv };

    // Disk and page cache hold one target's files at a time.
    await rm(svDir, { recursive: true, force: true });
    const rawDir = await dirFor('qemu-raw');
    const raw = await withPeer(async () => startQemuRaw(rawDir, await freePort()), plan, log);
    await rm(rawDir, { recursive: true, force: true });
    const luksDir = await dirFor('qemu-luks');
    const luks = await withPeer(async () => startQemuLuks(luksDir, await freePort()), plan, log);
    return { rows: rowsOf(copyBytes, sv.figures, raw.figures, luks.figures), stripvault: sv };
  } finally {
    await stopAllChildren();
    await rm(root, { recursive: true, force: true });
  }
}

function indent(text: string): string {
  return text
    .trim()
    .split('\n')
    .slice(-8)
    .map((l) => `    ${l}`)
    .join('\n');
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  readonly share: string;
  readonly function: string;
  readonly where: string;
}

export interface ProfileSummary {
  readonly samples: number;
  /** Self time grouped by source area (a directory of ours, a node: module, or a V8 pseudo-node). */
  readonly byArea: ProfileEntry[];
  /** Functions with the most self time. */
  readonly bySelf: ProfileEntry[];
  /** Our own functions (appliance/) with the most inclusive time: the call paths that cost. */
  readonly byTotal: ProfileEntry[];
}

function shortPath(url: string): string {
  return url.replace(/^file:\/\//, '').replace(/.*\/(appliance|bench|cli|keymgr|node_modules)\//, '$1/');
}

/** Where samples went in a V8 .cpuprofile, optionally only those taken within [startUs, endUs). */
export async function summarizeCpuProfile(path: string, opts: { top?: number; window?: Phase } = {}): Promise<ProfileSummary> {
  const top = opts.top ?? 15;
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode) => `${n.callFrame.functionName}@${n.callFrame.url}`;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const area = new Map<string, number>();
  let counted = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    if (opts.window && (t < opts.window.startUs || t >= opts.window.endUs)) continue;
    const node = byId.get(profile.samples[i]!);
    if (node === undefined) continue;
    counted++;
    const k = keyOf(node);
    self.set(k, (self.get(k) ?? 0) + 1);
    const url = node.callFrame.url;
    const a = url === '' ? node.callFrame.functionName : url.startsWith('node:') ? url : shortPath(url).split('/').slice(0, 2).join('/');
    area.set(a, (area.get(a) ?? 0) + 1);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (!n.callFrame.url.includes('/appliance/')) continue;
      const key = keyOf(n);
      if (seen.has(key)) continue;
      seen.add(key);
      total.set(key, (total.get(key) ?? 0) + 1);
    }
  }
  const pct = (h: number) => `${((100 * h) / Math.max(1, counted)).toFixed(1)}%`;
  const entries = (m: Map<string, number>, named: boolean): ProfileEntry[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, h]) => {
        if (!named) return { share: pct(h), function: k, where: '' };
        const at = k.lastIndexOf('@');
        return { share: pct(h), function: k.slice(0, at) || '(anonymous)', where: shortPath(k.slice(at + 1)) };
      });
  return { samples: counted, byArea: entries(area, false), bySelf: entries(self, true), byTotal: entries(total, true) };
}

/** The profile the measured server's main thread wrote (node names files CPU.date.time.PID.THREAD.seq). */
async function profileOf(dir: string, pid: number): Promise<string> {
  const mine = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.0.`));
  if (mine.length !== 1) throw new Error(`expected one main-thread CPU profile of pid ${pid} in ${dir}, found ${mine.length} (did the server exit normally?)`);
  return join(dir, mine[0]!);
}

function printProfile(title: string, s: ProfileSummary): void {
  const asRows = (e: ProfileEntry[]) => e as unknown as Record<string, string>[];
  console.log(`\n## ${title} (${s.samples} samples)\nself time by area:`);
  console.log(table(asRows(s.byArea.slice(0, 10))));
  console.log('functions by self time:');
  console.log(table(asRows(s.bySelf)));
  console.log('stripvault functions by inclusive time:');
  console.log(table(asRows(s.byTotal)));
}

async function main(argv: readonly string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const profileDir = argv.includes('--profile') ? await mkdtemp(join(tmpdir(), 'stripvault-bench-prof-')) : undefined;
  let interrupted = false;
  const onSignal = (): void => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write('interrupted: stopping servers and tools\n');
    // runBench's finally removes its temp directory once the killed tools make it unwind.
    void interruptAll();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const run = await runBench({ quick, direct: argv.includes('--direct'), ...(profileDir ? { profileDir } : {}) });
    console.log(`stripvault target: ${run.stripvault.name}; seal engine: ${nativeSeal.available ? 'native' : `JavaScript (${nativeSeal.why})`}`);
    console.log(table(run.rows as unknown as Record<string, string | number>[]));
    if (profileDir) {
      const file = await profileOf(profileDir, run.stripvault.pid);
      for (const phase of run.stripvault.phases) printProfile(`${phase.name}: stripvault server CPU`, await summarizeCpuProfile(file, { window: phase }));
      console.log(`\nprofile kept in ${file} (Chrome DevTools > Performance > Load profile)`);
    }
  } catch (e) {
    if (!interrupted) throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (interrupted) {
    process.stderr.write('bench nbd interrupted; servers stopped and temp files removed\n');
    process.exitCode = 130;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`bench nbd failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  });
}
