/**
 * NBD servers for the benchmarks, each in its own process so the measuring tools, the bench driver
 * and the server never share an event loop: stripvault (`stripvault serve`, or the same volume
 * built directly when serve is unavailable) and qemu-nbd over a raw file and over a LUKS1 image.
 * Every wait is bounded, every server listens on 127.0.0.1 only, and stop() always ends the
 * process (SIGTERM, then SIGKILL after a grace period).
 *
 * Run directly (`node --import tsx bench/peers.ts volume-server DIR PORT`) this file is the child
 * that serves a 1 GiB 2-of-3 volume over three strip files in DIR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createFileDevice } from '../appliance/device/file-device.ts';
import { staticExportRegistry } from '../appliance/nbd/backend.ts';
import { startNbdServer } from '../appliance/nbd/server.ts';
import { volumeExport } from '../appliance/volume/volume-export.ts';
import { SplitPool } from '../appliance/split/split-pool.ts';
import { slotBytesFor } from '../appliance/strip/layout.ts';
import { Owl, owlRingBytesFor } from '../appliance/volume/owl.ts';
import { Volume, stripBytesForVolume, uuidToBytes } from '../appliance/volume/volume.ts';
import { serveNodeFlags } from '../cli/node-flags.ts';

export const loopbackHost = '127.0.0.1';
export const exportName = 'default';
export const volumeBytes = 1024 ** 3;
/** Options given to both qemu-nbd targets: page cache like stripvault's strip files, thread pool I/O. */
export const qemuCacheOptions = ['--cache=writeback', '--aio=threads'] as const;
/** Connections qemu-nbd accepts at once; above 1 it also advertises multi-conn, as stripvault does. */
export const qemuSharedMax = 8;
/** LUKS1 parameters: AES-256-XTS (512-bit XTS key) and a deliberately cheap key derivation. */
export const luksOptions = ['--type', 'luks1', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--hash', 'sha256', '--pbkdf-force-iterations', '1000'] as const;
/** LUKS1 default payload offset: 4096 sectors of header and key material before the data. */
export const luksHeaderBytes = 4096 * 512;

const readyTimeoutMs = 60_000;
const stopGraceMs = 15_000;
const killWaitMs = 5_000;
const pollIntervalMs = 50;
const stderrTailBytesMax = 4096;
const toolTimeoutMsDefault = 120_000;

/** Every process this module started and that has not exited, so an interrupted bench can end them. */
const live = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

let interrupted = false;

/** Ends every server and tool still running. */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...live].map((c) => stopChild(c, 2000)));
}

/**
 * For a driver that got SIGINT/SIGTERM: ends everything, and refuses to start anything more, so a
 * bench step that fails because its process was killed cannot go on to a fallback or the next peer.
 */
export async function interruptAll(): Promise<void> {
  interrupted = true;
  await stopAllChildren();
}

function checkNotInterrupted(cmd: string): void {
  if (interrupted) throw new Error(`not starting ${cmd}: the bench was interrupted`);
}

const repoRoot = dirname(dirname(fileURLToPath(import.meta.url)));
const selfPath = fileURLToPath(import.meta.url);

export interface Peer {
  /** Label for tables: what is serving. */
  readonly name: string;
  readonly uri: string;
  readonly pid: number;
  /** The last lines of the server's stderr (for failure reports). */
  stderrTail(): string;
  /** Ends the server and waits until it has exited (bounded). Safe to call twice. */
  stop(): Promise<void>;
}

/** A port the OS just handed out on loopback; small race with other processes, accepted for a bench. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: loopbackHost, port: 0 }, () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

export function nbdUri(port: number): string {
  return `nbd://${loopbackHost}:${port}/${exportName}`;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL if it has not exited within the grace period. */
export async function stopChild(child: ChildProcess, graceMs = stopGraceMs): Promise<void> {
  if (exited(child)) return;
  child.kill('SIGTERM');
  if (await waitExit(child, graceMs)) return;
  child.kill('SIGKILL');
  await waitExit(child, killWaitMs);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: loopbackHost, port });
    socket.setTimeout(1000);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Spawned {
  child: ChildProcess;
  tail(): string;
  /** Whether some stderr line so far was a JSON object whose "event" is `event`. */
  sawEvent(event: string): boolean;
}

function spawnServer(cmd: string, args: readonly string[]): Spawned {
  checkNotInterrupted(cmd);
  const child = track(spawn(cmd, args, { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] }));
  let tail = '';
  let partial = '';
  const events = new Set<string>();
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-stderrTailBytesMax);
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      if (!line.startsWith('{')) continue;
      try {
        const ev = (JSON.parse(line) as { event?: unknown }).event;
        if (typeof ev === 'string') events.add(ev);
      } catch {
        // not a log line of ours
      }
    }
    if (partial.length > stderrTailBytesMax) partial = '';
  });
  child.on('error', (e) => {
    tail += `\nspawn error: ${e.message}`;
  });
  return { child, tail: () => tail, sawEvent: (e) => events.has(e) };
}

/** Waits until `ready()` holds, failing early if the process exits; bounded by `timeoutMs`. */
async function untilReady(name: string, s: Spawned, ready: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited(s.child)) throw new Error(`${name} exited (code ${s.child.exitCode}, signal ${s.child.signalCode}) before it was ready:\n${s.tail()}`);
    if (await ready()) return;
    if (Date.now() > deadline) throw new Error(`${name} not ready within ${timeoutMs} ms:\n${s.tail()}`);
    await sleep(pollIntervalMs);
  }
}

async function startPeer(
  name: string,
  port: number,
  cmd: string,
  args: readonly string[],
  ready: (s: Spawned) => boolean | Promise<boolean>,
  timeoutMs = readyTimeoutMs,
): Promise<Peer> {
  const s = spawnServer(cmd, args);
  try {
    await untilReady(name, s, () => ready(s), timeoutMs);
  } catch (e) {
    await stopChild(s.child);
    throw e;
  }
  let stopped: Promise<void> | undefined;
  return {
    name,
    uri: nbdUri(port),
    pid: s.child.pid ?? -1,
    stderrTail: s.tail,
    stop: () => (stopped ??= stopChild(s.child)),
  };
}

export interface StripvaultPeerOptions {
  /** An empty directory for the store and strips. */
  readonly dataDir: string;
  readonly port: number;
  /** Extra node options for the server process, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']. */
  readonly nodeArgs?: readonly string[];
}

/** The product: `stripvault serve` on an empty data directory (creates the embedded default volume). */
export function startStripvaultServe(opts: StripvaultPeerOptions): Promise<Peer> {
  const args = [...serveNodeFlags, ...(opts.nodeArgs ?? []), join(repoRoot, 'bin', 'stripvault.js'), 'serve', '--data', opts.dataDir, '--nbd', `${loopbackHost}:${opts.port}`, '--api-listen', 'off'];
  return startPeer('stripvault serve', opts.port, process.execPath, args, (s) => s.sawEvent('serving'));
}

/**
 * The same volume as serve's embedded default (1 GiB, 2-of-3, three sparse strip files, one
 * random wrapping key, a split worker pool and an outstanding write list) built directly from the
 * volume and NBD modules, without the metadata store.
 */
export function startStripvaultDirect(opts: StripvaultPeerOptions): Promise<Peer> {
  const args = [...serveNodeFlags, ...(opts.nodeArgs ?? []), '--import', 'tsx', selfPath, 'volume-server', opts.dataDir, String(opts.port)];
  return startPeer('stripvault (direct volume)', opts.port, process.execPath, args, (s) => s.sawEvent('serving'));
}

/** `stripvault serve` if it comes up; otherwise the direct equivalent. Says which in `name`. */
export async function startStripvault(opts: StripvaultPeerOptions & { onFallback?: (why: string) => void }): Promise<Peer> {
  try {
    return await startStripvaultServe(opts);
  } catch (e) {
    if (interrupted) throw e;
    opts.onFallback?.((e as Error).message);
  }
  // serve may have left a partial store and strips behind; the direct server wants a clean room.
  const direct = join(opts.dataDir, 'direct');
  await mkdir(direct, { recursive: true });
  return startStripvaultDirect({ ...opts, dataDir: direct });
}

function qemuNbdArgs(port: number): string[] {
  return ['-t', '-e', String(qemuSharedMax), '-x', exportName, '-b', loopbackHost, '-p', String(port), ...qemuCacheOptions];
}

/** qemu-nbd over a sparse raw file of `volumeBytes`. */
export async function startQemuRaw(dir: string, port: number): Promise<Peer> {
  const image = join(dir, 'raw.img');
  await createSparse(image, volumeBytes);
  return startPeer('qemu-nbd raw', port, 'qemu-nbd', [...qemuNbdArgs(port), '-f', 'raw', image], () => canConnect(port));
}

/**
 * qemu-nbd decrypting a LUKS1 image (made by cryptsetup: `qemu-img create -f luks` does not work
 * here) whose payload is `volumeBytes`.
 */
export async function startQemuLuks(dir: string, port: number): Promise<Peer> {
  const image = join(dir, 'luks.img');
  const keyFile = join(dir, 'luks.key');
  // qemu reads the secret as UTF-8 text, so the passphrase is hex.
  await writeFile(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  await createSparse(image, volumeBytes + luksHeaderBytes);
  await runTool('cryptsetup', ['luksFormat', '--batch-mode', ...luksOptions, '--key-file', keyFile, image], { timeoutMs: 30_000 });
  const args = [
    '--object', `secret,id=sec0,file=${keyFile}`,
    ...qemuNbdArgs(port),
    '--image-opts', `driver=luks,key-secret=sec0,file.filename=${image}`,
  ];
  return startPeer('qemu-nbd LUKS1', port, 'qemu-nbd', args, () => canConnect(port));
}

async function createSparse(path: string, bytes: number): Promise<void> {
  const h = await open(path, 'w');
  try {
    await h.truncate(bytes);
  } finally {
    await h.close();
  }
}

export interface ToolResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
}

/** Runs a measuring tool to completion, killing it if it overruns; rejects on a non-zero exit. */
export function runTool(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<ToolResult> {
  const timeoutMs = opts.timeoutMs ?? toolTimeoutMsDefault;
  checkNotInterrupted(cmd);
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = track(spawn(cmd, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-stderrTailBytesMax)));
    const timer = setTimeout(() => {
      timedOut = true;
      void stopChild(child, 2000);
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (timedOut) reject(new Error(`${cmd} ${args.join(' ')}: timed out after ${timeoutMs} ms\n${stderr}`));
      else if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code ?? signal}\n${stderr}`));
      else resolve({ stdout, stderr, seconds });
    });
  });
}

/** The child side of startStripvaultDirect. */
async function volumeServerMain(dataDir: string, port: number): Promise<void> {
  const m = 2;
  const n = 3;
  const blockBytes = 4096;
  const stripBytes = stripBytesForVolume(volumeBytes, blockBytes, m);
  const devices = [];
  for (let i = 0; i < n; i++) devices.push(await createFileDevice(join(dataDir, `strip-${i}.img`), stripBytes, { id: `local-${i}` }));
  // As serve runs it: seal/open on a worker pool, and an outstanding write list beside the strips.
  const id = randomUUID();
  const runner = new SplitPool();
  const owl = await Owl.create(join(dataDir, 'volume.owl'), uuidToBytes(id), owlRingBytesFor(slotBytesFor(blockBytes, m), n));
  const volume = await Volume.create({
    id,
    runner,
    owl,
    name: exportName,
    m,
    n,
    sizeBytes: volumeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [{ id: randomBytes(16), key: randomBytes(32) }],
    regionsZeroed: true,
  });
  const exp = volumeExport(volume, exportName);
  const server = await startNbdServer({ listen: { host: loopbackHost, port }, exports: staticExportRegistry([exp], exportName) });
  const log = (event: string, fields: Record<string, unknown> = {}) => process.stderr.write(JSON.stringify({ t: new Date().toISOString(), event, ...fields }) + '\n');
  log('serving', { nbd: `${loopbackHost}:${port}`, dataDir });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await server.close();
  await volume.close();
  await runner.close();
  for (const d of devices) await d.close();
  log('stopped');
}

if (process.argv[1] === selfPath && process.argv[2] === 'volume-server') {
  const [dataDir, portText] = process.argv.slice(3);
  if (dataDir === undefined || portText === undefined) {
    process.stderr.write('usage: node --import tsx bench/peers.ts volume-server DIR PORT\n');
    process.exit(2);
  }
  volumeServerMain(dataDir, Number(portText)).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`volume-server: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
