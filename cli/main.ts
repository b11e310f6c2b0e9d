/**
 * `stripvault` — one CLI for everything the appliance does. Usage errors exit 2, operational
 * errors 1, each with a one-line message carrying the stable error code.
 */
import { open } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Readable, Writable } from 'node:stream';
import { Appliance } from '../appliance/appliance.ts';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';
import { jsonLogger, type Logger } from '../appliance/log.ts';
import { blockBytesDefault } from '../appliance/split/geometry.ts';
import type { StoreConfig } from '../appliance/store/store.ts';
import { defaultCoiName, devUnseal, ensureDefaultCoi } from '../keymgr/dev-unseal.ts';
import { adminRemoteCommand } from './admin-remote.ts';
import { keysCommand } from './keys.ts';
import { formatSize, parseSize } from './sizes.ts';

/** Bytes moved per volume request by `volume read` / `volume write`. */
export const copyChunkBytes = 4 * 1024 * 1024;

export const usage = `usage: stripvault [--data DIR] [--store postgres://...] <command>

  device add NAME PATH [--create SIZE]   register a file or block device (create a sparse file of SIZE)
  device add NAME nbd://HOST:PORT/EXPORT register a remote NBD export (or nbd+unix:///EXPORT?socket=PATH)
  device list [--json]
  device show NAME [--json]
  device remove NAME
  volume create NAME --size SIZE --devices A,B,C [--m M] [--block-size BYTES] [--coi C]
                                         (presented to COI C, default "default", as virtual disk NAME)
  volume list [--json]
  volume show NAME [--json]              store record plus live strip health
  volume remove NAME
  volume scrub NAME [--rate SIZE]        verify every share, repair bad ones (SIZE per second, e.g. 50M)
  volume rebuild NAME --strip I --device D [--rate SIZE]
                                         replace a missing/failed strip with one on device D and fill it
  volume rekey NAME [--rate SIZE]        rotate the session keys online: re-seal every block, erase the old keys
  volume write NAME [--offset N] [--input FILE]      copy bytes in (stdin by default)
  volume read NAME [--offset N] [--length N] [--output FILE]   copy bytes out (stdout by default)
  With --api URL (or STRIPVAULT_API), device * and volume create|list|show|remove|scrub|rebuild go
  through the running appliance's admin API instead of the data directory.
  serve [--nbd HOST:PORT|unix:PATH] [--api-listen HOST:PORT|off] [--scrub-every 7d|off] [--scrub-rate 50M]
        [--no-dev-unseal] [--ldap-config FILE.json] [--tls-host NAME,NAME...]
                                         run the appliance: NBD (TLS with client certificates; plain text
                                         from loopback only), the admin API (default 127.0.0.1:8080),
                                         scheduled scrub. On an empty data directory, without
                                         --no-dev-unseal, it creates the embedded default with a DEV
                                         unseal share on disk (loudly marked; never in production).

Key manager (through the appliance's admin API: [--api URL] [--api-token-file FILE]):
  init --officers A,B,C --threshold T    create the master key; prints each officer's share ONCE
  unseal                                 offer one officer share, read from stdin (never argv)
  seal
  status [--json]
  coi create NAME [--ldap-group DN]      community of interest (local members, or an LDAP group's)
  coi list [--json]
  coi remove NAME
  coi add-member COI (--client NAME|--user NAME)
  coi remove-member COI (--client NAME|--user NAME)
  coi members COI [--json]
  coi rotate-key COI                     new workgroup key; strip headers re-wrapped online
  vdisk create NAME --volume V --coi C   present volume V to COI C as NBD export NAME
  vdisk list [--json]
  vdisk remove NAME
  volume shred NAME --yes-destroy-all-data   destroy the volume's keys: its data is gone for good
  volume verify-shred NAME
  cert issue-client NAME --out DIR       writes ca-cert.pem, client-cert.pem, client-key.pem (0600)
  cert issue-server HOST... --out DIR    writes ca-cert.pem, server-cert.pem, server-key.pem (0600)
  cert list [--json]
  cert revoke SERIAL
  audit verify

Environment: STRIPVAULT_DATA (default ./data), STRIPVAULT_STORE (PostgreSQL URL; default embedded PGlite).
  STRIPVAULT_API (default http://127.0.0.1:8080), STRIPVAULT_API_TOKEN (default: read DATA/api-token).
`;

export interface CliIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

class UsageError extends Error {}

export async function main(argv: string[], io: CliIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const err = (s: string) => io.stderr.write(s + '\n');
  try {
    return await run(argv, io);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`stripvault: ${e.message}\n\n${usage}`);
      return 2;
    }
    if (e instanceof StripvaultError) {
      err(`stripvault: ${e.code}: ${e.message}`);
      return e.code === ErrorCode.InvalidArgument || e.code === ErrorCode.InvalidGeometry ? 2 : 1;
    }
    if (e instanceof TypeError && (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      err(`stripvault: ${e.message}\n\n${usage}`);
      return 2;
    }
    err(`stripvault: internal error: ${(e as Error).stack ?? String(e)}`);
    return 70;
  }
}

async function run(argv: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      data: { type: 'string' },
      store: { type: 'string' },
      json: { type: 'boolean' },
      create: { type: 'string' },
      size: { type: 'string' },
      devices: { type: 'string' },
      m: { type: 'string' },
      'block-size': { type: 'string' },
      offset: { type: 'string' },
      length: { type: 'string' },
      input: { type: 'string' },
      output: { type: 'string' },
      nbd: { type: 'string' },
      rate: { type: 'string' },
      'scrub-every': { type: 'string' },
      'scrub-rate': { type: 'string' },
      strip: { type: 'string' },
      device: { type: 'string' },
      api: { type: 'string' },
      'api-token-file': { type: 'string' },
      officers: { type: 'string' },
      threshold: { type: 'string' },
      'ldap-group': { type: 'string' },
      client: { type: 'string' },
      user: { type: 'string' },
      volume: { type: 'string' },
      coi: { type: 'string' },
      out: { type: 'string' },
      'yes-destroy-all-data': { type: 'boolean' },
      'no-dev-unseal': { type: 'boolean' },
      'api-listen': { type: 'string' },
      'ldap-config': { type: 'string' },
      'tls-host': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [group, verb, ...rest] = positionals;
  if (values.help || group === undefined || group === 'help') {
    io.stdout.write(usage);
    return 0;
  }
  const dataDir = values.data ?? process.env.STRIPVAULT_DATA ?? './data';
  const storeUrl = values.store ?? process.env.STRIPVAULT_STORE;
  const log = jsonLogger({ level: 'warn', write: (l) => io.stderr.write(l + '\n') });
  const store: StoreConfig | undefined = storeUrl ? { kind: 'postgres', connectionString: storeUrl } : undefined;

  if (group === 'serve') {
    const { serve } = await import('./serve.ts');
    return serve({
      dataDir,
      store,
      nbd: values.nbd,
      io,
      scrubEvery: values['scrub-every'],
      scrubRate: values['scrub-rate'],
      api: values['api-listen'],
      noDevUnseal: values['no-dev-unseal'] === true,
      ldapConfig: values['ldap-config'],
      tlsHosts: (values['tls-host'] ?? '').split(',').map((h) => h.trim()).filter(Boolean),
    });
  }

  // Key-manager commands go through the admin API of the running appliance (cli/keys.ts).
  const keys = await keysCommand({ group, verb, rest, options: values, dataDir, io });
  if (keys !== null) return keys;
  // With --api/STRIPVAULT_API, devices and volumes are administered by the running appliance (cli/admin-remote.ts).
  const remote = await adminRemoteCommand({ group, verb, rest, options: values, dataDir, io });
  if (remote !== null) return remote;

  const appliance = await openAppliance(dataDir, store, log, io, values['no-dev-unseal'] === true);
  try {
    const out = (s: string) => io.stdout.write(s + '\n');
    const need = (x: string | undefined, what: string): string => {
      if (x === undefined) throw new UsageError(`missing ${what}`);
      return x;
    };
    const key = `${group} ${verb ?? ''}`;
    switch (key) {
      case 'device add': {
        const rec = await appliance.addDevice({
          name: need(rest[0], 'device NAME'),
          path: need(rest[1], 'device PATH'),
          ...(values.create ? { createBytes: parseSize(values.create, '--create') } : {}),
        });
        out(values.json ? JSON.stringify(rec) : `device ${rec.name} added: ${rec.kind} ${rec.path}, ${formatSize(rec.sizeBytes)}`);
        return 0;
      }
      case 'device list': {
        const list = await appliance.store.listDevices();
        if (values.json) out(JSON.stringify(list));
        else for (const d of list) out(`${d.name}\t${d.kind}\t${formatSize(d.sizeBytes)}\t${d.state}\t${d.path}`);
        return 0;
      }
      case 'device show': {
        const d = await appliance.store.getDevice(need(rest[0], 'device NAME'));
        const strips = await appliance.store.listStripsOnDevice(d.id);
        out(values.json ? JSON.stringify({ ...d, strips }) : [`name: ${d.name}`, `id: ${d.id}`, `kind: ${d.kind}`, `path: ${d.path}`, `size: ${formatSize(d.sizeBytes)}`, `state: ${d.state}`, `strips: ${strips.length}`].join('\n'));
        return 0;
      }
      case 'device remove': {
        const d = await appliance.removeDevice(need(rest[0], 'device NAME'));
        out(`device ${d.name} removed`);
        return 0;
      }
      case 'volume create': {
        const devices = need(values.devices, '--devices').split(',').map((s) => s.trim()).filter(Boolean);
        // M-1 stolen disks must yield nothing, so M = 1 is never chosen silently: with fewer than three
        // devices the operator says what they want.
        if (values.m === undefined && devices.length < 3) throw new UsageError('with fewer than three devices, give --m explicitly');
        const m = values.m === undefined ? devices.length - 1 : Number(values.m);
        if (!Number.isInteger(m)) throw new UsageError(`--m must be an integer, got ${values.m}`);
        const rec = await appliance.createVolume({
          name: need(rest[0], 'volume NAME'),
          m,
          sizeBytes: parseSize(need(values.size, '--size'), '--size'),
          blockBytes: values['block-size'] ? parseSize(values['block-size'], '--block-size') : blockBytesDefault,
          devices,
          coi: values.coi ?? defaultCoiName,
        });
        out(values.json ? JSON.stringify(rec) : `volume ${rec.name} created: ${rec.m}-of-${rec.n}, ${formatSize(rec.sizeBytes)}, block ${rec.blockSize}`);
        return 0;
      }
      case 'volume list': {
        const list = await appliance.store.listVolumes();
        if (values.json) out(JSON.stringify(list));
        else for (const v of list) out(`${v.name}\t${v.m}-of-${v.n}\t${formatSize(v.sizeBytes)}\t${v.state}\t${v.id}`);
        return 0;
      }
      case 'volume show': {
        const name = need(rest[0], 'volume NAME');
        const rec = await appliance.store.getVolume(name);
        let health: unknown;
        try {
          health = (await appliance.openVolume(name)).health();
        } catch (e) {
          if (!(e instanceof StripvaultError)) throw e;
          health = { state: 'failed', error: `${e.code}: ${e.message}` };
        }
        if (values.json) out(JSON.stringify({ ...rec, health }));
        else {
          const h = health as { state: string; strips?: Array<{ index: number; state: string; reason?: string }>; repair?: unknown[] };
          out([`name: ${rec.name}`, `id: ${rec.id}`, `geometry: ${rec.m}-of-${rec.n}`, `size: ${formatSize(rec.sizeBytes)}`, `block size: ${rec.blockSize}`, `epoch: ${rec.epoch}`, `health: ${h.state}`].join('\n'));
          for (const s of h.strips ?? []) out(`  strip ${s.index}: ${s.state}${s.reason ? ` (${s.reason})` : ''}`);
          if (h.repair?.length) out(`  shares needing repair: ${h.repair.length}`);
        }
        return 0;
      }
      case 'volume rebuild':
      case 'volume scrub': {
        const name = need(rest[0], 'volume NAME');
        let volume;
        if (verb === 'rebuild') {
          const text = need(values.strip, '--strip');
          if (!/^\d{1,2}$/.test(text)) throw new UsageError(`--strip must be a strip index, got "${text}"`);
          const index = Number(text);
          volume = await appliance.replaceStrip(name, index, need(values.device, '--device'));
        } else volume = await appliance.openVolume(name);
        const rate = values.rate ? parseSize(values.rate, '--rate') : 0;
        const report = await volume.scrub({
          rateBytesPerSec: rate,
          onProgress: (p) => io.stderr.write(`scrub ${volume.name}: ${p.blocksDone}/${p.blocksTotal} blocks, ${p.blocksRepaired} repaired, ${p.blocksLost} lost\n`),
        });
        out(
          values.json
            ? JSON.stringify(report)
            : `volume ${volume.name} scrubbed: ${report.blocksDone} blocks, ${report.blocksRepaired} repaired, ${report.blocksLost} lost` +
                (report.caughtUp.length ? `; strips ${report.caughtUp.join(', ')} caught up` : ''),
        );
        return report.blocksLost > 0 ? 1 : 0;
      }
      case 'volume rekey': {
        const name = need(rest[0], 'volume NAME');
        const rate = values.rate ? parseSize(values.rate, '--rate') : 0;
        const report = await appliance.rekeyVolume(name, {
          rateBytesPerSec: rate,
          onProgress: (p) => io.stderr.write(`rekey ${name}: ${p.blocksDone}/${p.blocksTotal} blocks, ${p.blocksRepaired} re-sealed\n`),
        }, { name: 'cli:local' });
        out(
          values.json
            ? JSON.stringify(report)
            : `volume ${name} ${report.finished ? 're-keyed' : 'partly re-keyed (run again to resume)'}: ${report.blocksRepaired} blocks re-sealed, ${report.blocksLost} lost`,
        );
        return report.finished ? 0 : 1;
      }
      case 'volume remove': {
        await appliance.removeVolume(need(rest[0], 'volume NAME'));
        out(`volume ${rest[0]} removed`);
        return 0;
      }
      case 'volume write': {
        const volume = await appliance.openVolume(need(rest[0], 'volume NAME'));
        const input = values.input && values.input !== '-' ? await openInput(values.input) : io.stdin;
        let offset = values.offset ? parseSize(values.offset, '--offset') : 0;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const drain = async (all: boolean) => {
          while (pendingBytes >= copyChunkBytes || (all && pendingBytes > 0)) {
            const buf = Buffer.concat(pending);
            const take = Math.min(copyChunkBytes, buf.length);
            if (offset + take > volume.sizeBytes) fail(ErrorCode.OutOfRange, `input extends past the end of the volume (${volume.sizeBytes} bytes)`);
            await volume.write(offset, buf.subarray(0, take));
            offset += take;
            pending = take < buf.length ? [buf.subarray(take)] : [];
            pendingBytes = buf.length - take;
          }
        };
        let total = 0;
        for await (const chunk of input) {
          const b = chunk as Buffer;
          pending.push(b);
          pendingBytes += b.length;
          total += b.length;
          await drain(false);
        }
        await drain(true);
        await volume.flush();
        io.stderr.write(`${total} bytes written\n`);
        return 0;
      }
      case 'volume read': {
        const volume = await appliance.openVolume(need(rest[0], 'volume NAME'));
        const offset = values.offset ? parseSize(values.offset, '--offset') : 0;
        const length = values.length ? parseSize(values.length, '--length') : volume.sizeBytes - offset;
        if (offset > volume.sizeBytes || offset + length > volume.sizeBytes || length < 0) {
          fail(ErrorCode.OutOfRange, `range [${offset}, +${length}) outside volume of ${volume.sizeBytes} bytes`);
        }
        const output = values.output && values.output !== '-' ? await openOutput(values.output) : io.stdout;
        return copyOut(output, output !== io.stdout, length, (at, n) => volume.read(offset + at, n));
      }
      default:
        throw new UsageError(`unknown command "${positionals.join(' ')}"`);
    }
  } finally {
    await appliance.close();
  }
}

async function openInput(path: string): Promise<Readable> {
  try {
    const fh = await open(path, 'r');
    return fh.createReadStream();
  } catch (e) {
    fail(ErrorCode.InvalidArgument, `cannot read input ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

async function openOutput(path: string): Promise<Writable> {
  try {
    const fh = await open(path, 'w');
    return fh.createWriteStream();
  } catch (e) {
    fail(ErrorCode.InvalidArgument, `cannot write output ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * Streams `length` bytes to `output` in chunks, respecting back-pressure. A reader that goes away
 * (EPIPE, e.g. `| head`) ends the copy quietly; any other output error is a clear failure.
 */
async function copyOut(output: Writable, close: boolean, length: number, read: (at: number, n: number) => Promise<Buffer>): Promise<number> {
  let failure: NodeJS.ErrnoException | null = null;
  const onError = (e: NodeJS.ErrnoException) => (failure ??= e);
  output.on('error', onError);
  try {
    for (let done = 0; done < length && failure === null; ) {
      const n = Math.min(copyChunkBytes, length - done);
      const buf = await read(done, n);
      if (!output.write(buf)) {
        await new Promise<void>((resolve) => {
          const settle = () => {
            output.off('drain', settle);
            output.off('error', settle);
            resolve();
          };
          output.once('drain', settle);
          output.once('error', settle);
        });
      }
      done += n;
    }
    if (close && failure === null) await new Promise<void>((resolve) => output.end(() => resolve()));
  } finally {
    output.off('error', onError);
  }
  const f = failure as NodeJS.ErrnoException | null;
  if (f === null || f.code === 'EPIPE') return 0;
  fail(ErrorCode.InvalidArgument, `cannot write output: ${f.code ?? f.message}`);
}

/**
 * The appliance in this process, for commands run while no server holds the data directory. On a
 * data directory with the dev unseal (the embedded default) it unseals with it; `--no-dev-unseal`
 * never creates one, and a production appliance stays sealed (commands that need keys say so).
 */
async function openAppliance(dataDir: string, store: StoreConfig | undefined, log: Logger, io: CliIo, noDevUnseal: boolean): Promise<Appliance> {
  const appliance = await Appliance.open({ dataDir, ...(store ? { store } : {}), log });
  try {
    const outcome = await devUnseal(appliance.keys, appliance.dataDir, (m) => io.stderr.write(m + '\n'), { initialize: !noDevUnseal });
    if (outcome === 'unsealed') await ensureDefaultCoi(appliance.keys);
    return appliance;
  } catch (e) {
    await appliance.close();
    throw e;
  }
}
