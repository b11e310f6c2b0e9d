/**
 * Shared test plumbing: servers over memory exports on loopback and Unix
 * sockets, a raw protocol peer for malformed-input tests, and external tools.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { ExecutionContext } from 'ava';
import { staticExportRegistry } from '../../appliance/nbd/backend.ts';
import type { ExportRegistry, NbdExport } from '../../appliance/nbd/backend.ts';
import { ByteReader } from '../../appliance/nbd/byte-reader.ts';
import {
  decodeChunkHeader,
  decodeChunkPayload,
  decodeGreeting,
  decodeOptionReplyHeader,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  encodeRequest,
} from '../../appliance/nbd/codec.ts';
import type { ChunkHeader, ChunkPayload } from '../../appliance/nbd/codec.ts';
import type { NbdEvent } from '../../appliance/nbd/events.ts';
import { createMemoryExport } from '../../appliance/nbd/memory-export.ts';
import type { MemoryExport, MemoryExportOptions } from '../../appliance/nbd/memory-export.ts';
import {
  ClientFlag,
  InfoType,
  Option,
  Reply,
  greetingBytes,
  metaContextBaseAllocation,
  optionReplyHeaderBytes,
  simpleReplyBytes,
  simpleReplyMagic,
  structuredReplyHeaderBytes,
} from '../../appliance/nbd/protocol.ts';
import { startNbdServer } from '../../appliance/nbd/server.ts';
import type { NbdAddress, NbdServer, NbdServerOptions } from '../../appliance/nbd/server.ts';

export const MiB = 1024 * 1024;

/** Bound on any single wait in these tests: long enough for a loaded 2-core box, short enough to fail a hung test. */
export const waitMs = 10_000;

export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sv-nbd-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface TestServer {
  server: NbdServer;
  address: NbdAddress;
  events: NbdEvent[];
}

/** A server on 127.0.0.1:0 (or a Unix socket in a temp dir), closed when the test ends; `registry` replaces the static one over `exports`. */
export async function serve(
  t: ExecutionContext,
  exports: NbdExport[],
  opts: Partial<Omit<NbdServerOptions, 'exports'>> & { unix?: boolean; defaultName?: string; registry?: ExportRegistry } = {},
): Promise<TestServer> {
  const events: NbdEvent[] = [];
  const listen = opts.listen ?? (opts.unix === true ? { path: path.join(await tempDir(t), 'nbd.sock') } : { host: '127.0.0.1', port: 0 });
  const server = await startNbdServer({
    ...opts,
    listen,
    exports: opts.registry ?? staticExportRegistry(exports, opts.defaultName),
    log: (e) => events.push(e),
  });
  t.teardown(() => server.close());
  return { server, address: server.address, events };
}

export function memory(name: string, sizeBytes: number, opts: Partial<MemoryExportOptions> = {}): MemoryExport {
  return createMemoryExport({ name, sizeBytes, ...opts });
}

/** A plain object serving `inner`, with some members replaced (for fault and latency injection). */
export function wrapExport(inner: NbdExport, overrides: Partial<NbdExport> = {}): NbdExport {
  const base: NbdExport = {
    name: inner.name,
    description: inner.description,
    sizeBytes: inner.sizeBytes,
    blockSizeMin: inner.blockSizeMin,
    blockSizePreferred: inner.blockSizePreferred,
    blockSizeMax: inner.blockSizeMax,
    readOnly: inner.readOnly,
    multiConn: inner.multiConn,
    read: (offset, length) => inner.read(offset, length),
    write: (offset, data, opts) => inner.write(offset, data, opts),
    flush: () => inner.flush(),
    trim: (offset, length, opts) => inner.trim(offset, length, opts),
    writeZeroes: (offset, length, opts) => inner.writeZeroes(offset, length, opts),
    cache: inner.cache === undefined ? undefined : (offset, length) => inner.cache?.(offset, length) ?? Promise.resolve(),
    blockStatus: inner.blockStatus === undefined ? undefined : (offset, length) => inner.blockStatus?.(offset, length) ?? Promise.resolve([]),
  };
  return { ...base, ...overrides };
}

export function uri(address: NbdAddress, exportName: string): string {
  if ('path' in address) return `nbd+unix:///${exportName}?socket=${address.path}`;
  return `nbd://${address.host}:${address.port}/${exportName}`;
}

/** Byte equality that stays fast for megabytes (ava's deepEqual does not), naming the first difference. */
export function sameBytes(t: ExecutionContext, actual: Buffer, expected: Buffer, what = 'bytes'): void {
  if (actual.equals(expected)) {
    t.pass();
    return;
  }
  let at = 0;
  while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
  t.fail(`${what} differ at offset ${at} (lengths ${actual.length} and ${expected.length})`);
}

/** Polls a condition (not a timing assertion: it only bounds how long a broken server can stall the test). */
export async function eventually(condition: () => boolean, what: string, ms: number = waitMs): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---------------------------------------------------------------- external tools

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

const packageOf: Record<string, string> = {
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  fio: 'fio',
  openssl: 'openssl',
};

/** Runs a tool; a missing tool is an error that names the Debian package, never a silent skip. */
export function tool(cmd: string, args: string[], timeoutMs: number = 30_000, cwd?: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 * MiB, encoding: 'utf8', cwd }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown; killed?: boolean }) | null;
      if (e?.code === 'ENOENT') {
        reject(new Error(`${cmd} is not installed (Debian package ${packageOf[cmd] ?? '?'}); this test needs it`));
        return;
      }
      if (e?.killed === true) {
        reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms\n${stderr}`));
        return;
      }
      resolve({ code: typeof e?.code === 'number' ? e.code : e === null ? 0 : 1, stdout, stderr });
    });
  });
}

export async function toolOk(t: ExecutionContext, cmd: string, args: string[], timeoutMs?: number, cwd?: string): Promise<string> {
  const r = await tool(cmd, args, timeoutMs, cwd);
  if (r.code !== 0) t.fail(`${cmd} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

// ---------------------------------------------------------------- raw protocol peer

export type OptionReply = { option: number; replyType: number; data: Buffer };
export type PeerReply = { kind: 'simple'; error: number; cookie: bigint } | { kind: 'chunk'; header: ChunkHeader; payload: ChunkPayload };

/** A hand-driven client that can say anything, for malformed-input tests. */
export class RawPeer {
  /** The TCP socket, or the TLS stream over it after startTls. */
  socket: net.Socket;
  reader: ByteReader;
  ended: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.ended = RawPeer.#ended(socket);
    this.reader = new ByteReader(socket);
  }

  static #ended(socket: net.Socket): Promise<void> {
    socket.on('error', () => {});
    return new Promise((resolve) => {
      socket.once('end', () => resolve());
      socket.once('close', () => resolve());
    });
  }

  static async connect(address: NbdAddress): Promise<RawPeer> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = 'path' in address ? net.connect({ path: address.path }) : net.connect({ host: address.host, port: address.port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    return new RawPeer(socket);
  }

  /** Reads the greeting and answers with client flags. */
  static async open(address: NbdAddress, clientFlags: number = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes): Promise<RawPeer> {
    const p = await RawPeer.connect(address);
    decodeGreeting(await p.read(greetingBytes));
    p.write(encodeClientFlags(clientFlags));
    return p;
  }

  /** Straight to transmission with GO; structured replies and base:allocation on request. */
  static async transmission(address: NbdAddress, exportName: string, opts: { structured?: boolean; meta?: boolean } = {}): Promise<RawPeer> {
    const p = await RawPeer.open(address);
    if (opts.structured === true) {
      p.option(Option.StructuredReply);
      const r = await p.optionReply();
      if (r.replyType !== Reply.Ack) throw new Error('structured replies refused');
    }
    if (opts.meta === true) {
      p.option(Option.SetMetaContext, encodeMetaContextRequest({ name: exportName, queries: [metaContextBaseAllocation] }));
      while ((await p.optionReply()).replyType !== Reply.Ack);
    }
    p.option(Option.Go, encodeInfoRequest({ name: exportName, infoTypes: [InfoType.BlockSize] }));
    for (;;) {
      const r = await p.optionReply();
      if (r.replyType === Reply.Ack) return p;
      if (r.replyType !== Reply.Info) throw new Error(`GO failed: reply ${r.replyType} ${r.data.toString()}`);
    }
  }

  /** NBD_OPT_STARTTLS; on ACK the stream `upgrade` returns carries everything after. Returns the server's reply type. */
  async startTls(upgrade: (socket: net.Socket) => Promise<Duplex>): Promise<number> {
    this.option(Option.StartTls);
    const r = await this.optionReply();
    if (r.replyType !== Reply.Ack) return r.replyType;
    if (this.reader.detach().length !== 0) throw new Error('server sent data after acknowledging STARTTLS');
    const secure = (await upgrade(this.socket)) as net.Socket;
    this.socket = secure;
    this.ended = RawPeer.#ended(secure);
    this.reader = new ByteReader(secure);
    return r.replyType;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  read(bytes: number): Promise<Buffer> {
    return this.reader.read(bytes);
  }

  option(option: number, data: Buffer = Buffer.alloc(0)): void {
    this.write(encodeOptionRequest(option, data));
  }

  async optionReply(): Promise<OptionReply> {
    const h = decodeOptionReplyHeader(await this.read(optionReplyHeaderBytes));
    return { option: h.option, replyType: h.replyType, data: await this.read(h.length) };
  }

  request(r: { type: number; flags?: number; cookie?: bigint; offset?: number | bigint; length: number }, payload?: Buffer): void {
    this.write(encodeRequest({ flags: r.flags ?? 0, type: r.type, cookie: r.cookie ?? 1n, offset: r.offset ?? 0, length: r.length }));
    if (payload !== undefined) this.write(payload);
  }

  /** The next reply message; for a simple READ reply, the caller reads the payload itself. */
  async reply(): Promise<PeerReply> {
    const magic = await this.read(4);
    if (magic.readUInt32BE(0) === simpleReplyMagic) {
      const r = decodeSimpleReply(Buffer.concat([magic, await this.read(simpleReplyBytes - 4)]));
      return { kind: 'simple', ...r };
    }
    const header = decodeChunkHeader(Buffer.concat([magic, await this.read(structuredReplyHeaderBytes - 4)]));
    return { kind: 'chunk', header, payload: decodeChunkPayload(header.type, await this.read(header.length)) };
  }

  /** Resolves when the server has closed the connection; throws if it has not within waitMs. */
  async closedByServer(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('server did not close the connection')), waitMs);
    });
    try {
      // drain anything still in flight so 'end' can be seen
      this.socket.resume();
      await Promise.race([this.ended, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}
