/**
 * `stripvault device …` and `stripvault volume create|list|show|remove|scrub|rebuild` through the
 * admin API of a running appliance, when `--api URL` or STRIPVAULT_API says where it is. The local
 * way (opening the data directory) stays the default; it cannot work while `serve` holds the
 * embedded store, nor on an appliance that only its security officers can unseal.
 *
 * Output is the local commands' output, line for line, so scripts do not care which way ran.
 */
import { resolve } from 'node:path';
import { isNbdUri } from '../appliance/device/nbd-uri.ts';
import { ErrorCode, fail } from '../appliance/errors.ts';
import { defaultCoiName } from '../keymgr/dev-unseal.ts';
import { ApiClient, resolveApiToken, segment } from './api-client.ts';
import type { CliIo } from './main.ts';
import { formatSize, parseSize } from './sizes.ts';

export interface AdminRemoteCommand {
  readonly group: string;
  readonly verb: string | undefined;
  readonly rest: readonly string[];
  readonly options: Readonly<Record<string, string | boolean | undefined>>;
  readonly dataDir: string;
  readonly io: CliIo;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** How often `volume rekey` asks the appliance for progress. */
export const rekeyPollMs = 500;

interface RekeyAnswer {
  volumeName: string;
  state: 'running' | 'finished' | 'paused' | 'failed';
  blocksDone: number;
  blocksTotal: number;
  blocksResealed: number;
  error: string | null;
}

const remoteVerbs: Readonly<Record<string, ReadonlySet<string>>> = {
  device: new Set(['add', 'list', 'show', 'remove']),
  volume: new Set(['create', 'list', 'show', 'remove', 'scrub', 'rebuild', 'rekey']),
};

/** The API URL the user asked for, or undefined when the local way applies. */
export function requestedApiUrl(options: AdminRemoteCommand['options'], env: Readonly<Record<string, string | undefined>>): string | undefined {
  const flag = options.api;
  if (typeof flag === 'string') return flag;
  const fromEnv = env.STRIPVAULT_API;
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
}

export function isRemoteAdminCommand(group: string, verb: string | undefined): boolean {
  return verb !== undefined && Object.hasOwn(remoteVerbs, group) && remoteVerbs[group]!.has(verb);
}

function usage(message: string): never {
  fail(ErrorCode.InvalidArgument, `${message} (see stripvault --help)`);
}

interface Device {
  id: string;
  name: string;
  kind: string;
  path: string;
  sizeBytes: number;
  state: string;
  createdAt: string;
}
interface Strip {
  index: number;
  deviceId: string;
  offsetBytes: number;
  lengthBytes: number;
  state: string;
}
interface VolumeRecord {
  id: string;
  name: string;
  m: number;
  n: number;
  sizeBytes: number;
  blockSize: number;
  state: string;
  epoch: number;
  generationReserved: number;
  createdAt: string;
  scrubNextBlock: number;
  scrubCompletedAt: string | null;
  strips: Strip[];
}
interface Health {
  state: string;
  strips?: Array<{ index: number; state: string; reason?: string }>;
  repair?: unknown[];
  error?: string;
}
interface ScrubAnswer {
  volumeName: string;
  blocksDone: number;
  blocksTotal: number;
  blocksRepaired: number;
  blocksLost: number;
  nextBlock: number;
  lost: number[];
  caughtUp: number[];
}

/**
 * Runs the command through the API if the user named one and the command is ours: its exit code,
 * or null to let the local CLI run it. Errors are StripvaultErrors for main's handler.
 */
export async function adminRemoteCommand(cmd: AdminRemoteCommand): Promise<number | null> {
  const { group, verb, rest, options, io } = cmd;
  const env = cmd.env ?? process.env;
  const url = requestedApiUrl(options, env);
  if (url === undefined) return null;
  if (!isRemoteAdminCommand(group, verb)) {
    // Falling back to the data directory would fight the server for its store: say so instead.
    // (read and write move bulk data, which goes over NBD; the key commands were handled before us.)
    if (Object.hasOwn(remoteVerbs, group) && verb !== undefined) {
      usage(`${group} ${verb} does not go through the API: run it without --api/STRIPVAULT_API on the data directory while no server holds it${group === 'volume' && (verb === 'read' || verb === 'write') ? ', or use an NBD client' : ''}`);
    }
    return null;
  }

  const out = (s: string) => io.stdout.write(s + '\n');
  const str = (name: string): string | undefined => {
    const v = options[name];
    return typeof v === 'string' ? v : undefined;
  };
  const json = options.json === true;
  const arg = (i: number, what: string): string => rest[i] ?? usage(`missing ${what}`);
  const noMoreArgs = (n: number) => {
    if (rest.length > n) usage(`unexpected argument ${JSON.stringify(rest[n])}`);
  };
  const needOpt = (name: string): string => str(name) ?? usage(`missing --${name}`);
  const token = await resolveApiToken({ tokenFile: str('api-token-file'), env, dataDir: cmd.dataDir });
  const api = new ApiClient({ baseUrl: url, token });

  switch (`${group} ${verb}`) {
    case 'device add': {
      const name = arg(0, 'device NAME');
      const given = arg(1, 'device PATH');
      noMoreArgs(2);
      // The appliance is on this machine (the API listens on loopback): a relative path means ours.
      const path = isNbdUri(given) ? given : resolve(given);
      const create = str('create');
      const d = await api.json<Device & { created: boolean }>({
        method: 'POST',
        path: '/devices',
        body: { name, path, ...(create === undefined ? {} : { createBytes: parseSize(create, '--create') }) },
      });
      out(json ? JSON.stringify(d) : `device ${d.name} added: ${d.kind} ${d.path}, ${formatSize(d.sizeBytes)}`);
      return 0;
    }
    case 'device list': {
      noMoreArgs(0);
      const { devices } = await api.json<{ devices: Device[] }>({ method: 'GET', path: '/devices' });
      if (json) out(JSON.stringify(devices));
      else for (const d of devices) out(`${d.name}\t${d.kind}\t${formatSize(d.sizeBytes)}\t${d.state}\t${d.path}`);
      return 0;
    }
    case 'device show': {
      const name = arg(0, 'device NAME');
      noMoreArgs(1);
      const d = await api.json<Device & { strips: unknown[] }>({ method: 'GET', path: `/devices/${segment(name)}` });
      out(
        json
          ? JSON.stringify(d)
          : [`name: ${d.name}`, `id: ${d.id}`, `kind: ${d.kind}`, `path: ${d.path}`, `size: ${formatSize(d.sizeBytes)}`, `state: ${d.state}`, `strips: ${d.strips.length}`].join('\n'),
      );
      return 0;
    }
    case 'device remove': {
      const name = arg(0, 'device NAME');
      noMoreArgs(1);
      const d = await api.json<Device>({ method: 'DELETE', path: `/devices/${segment(name)}` });
      out(`device ${d.name} removed`);
      return 0;
    }
    case 'volume create': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      const devices = needOpt('devices')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      if (str('m') === undefined && devices.length < 3) usage('with fewer than three devices, give --m explicitly');
      const m = str('m') === undefined ? undefined : Number(str('m'));
      if (m !== undefined && !Number.isInteger(m)) usage(`--m must be an integer, got ${str('m')}`);
      const blockSize = str('block-size');
      const v = await api.json<VolumeRecord>({
        method: 'POST',
        path: '/volumes',
        body: {
          name,
          sizeBytes: parseSize(needOpt('size'), '--size'),
          devices,
          coi: str('coi') ?? defaultCoiName,
          ...(m === undefined ? {} : { m }),
          ...(blockSize === undefined ? {} : { blockBytes: parseSize(blockSize, '--block-size') }),
        },
      });
      out(json ? JSON.stringify(v) : `volume ${v.name} created: ${v.m}-of-${v.n}, ${formatSize(v.sizeBytes)}, block ${v.blockSize}`);
      return 0;
    }
    case 'volume list': {
      noMoreArgs(0);
      const { volumes } = await api.json<{ volumes: VolumeRecord[] }>({ method: 'GET', path: '/volumes' });
      if (json) out(JSON.stringify(volumes));
      else for (const v of volumes) out(`${v.name}\t${v.m}-of-${v.n}\t${formatSize(v.sizeBytes)}\t${v.state}\t${v.id}`);
      return 0;
    }
    case 'volume show': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      const v = await api.json<VolumeRecord & { health: Health }>({ method: 'GET', path: `/volumes/${segment(name)}` });
      if (json) out(JSON.stringify(v));
      else {
        const h = v.health;
        out([`name: ${v.name}`, `id: ${v.id}`, `geometry: ${v.m}-of-${v.n}`, `size: ${formatSize(v.sizeBytes)}`, `block size: ${v.blockSize}`, `epoch: ${v.epoch}`, `health: ${h.state}`].join('\n'));
        for (const s of h.strips ?? []) out(`  strip ${s.index}: ${s.state}${s.reason ? ` (${s.reason})` : ''}`);
        if (h.repair?.length) out(`  shares needing repair: ${h.repair.length}`);
      }
      return 0;
    }
    case 'volume remove': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      await api.json<VolumeRecord>({ method: 'DELETE', path: `/volumes/${segment(name)}` });
      out(`volume ${name} removed`);
      return 0;
    }
    case 'volume rekey': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      const rateText = str('rate');
      const rateBytesPerSec = rateText === undefined ? 0 : parseSize(rateText, '--rate');
      let job = await api.json<RekeyAnswer>({ method: 'POST', path: `/volumes/${segment(name)}/rekey`, body: { rateBytesPerSec } });
      // It runs in the appliance; this only watches (stopping the CLI does not stop it).
      while (job.state === 'running') {
        io.stderr.write(`rekey ${job.volumeName}: ${job.blocksDone}/${job.blocksTotal} blocks, ${job.blocksResealed} re-sealed\n`);
        await new Promise((r) => setTimeout(r, rekeyPollMs));
        job = await api.json<RekeyAnswer>({ method: 'GET', path: `/volumes/${segment(name)}/rekey` });
      }
      out(
        json
          ? JSON.stringify(job)
          : job.state === 'finished'
            ? `volume ${job.volumeName} re-keyed: ${job.blocksResealed} blocks re-sealed`
            : `volume ${job.volumeName} re-key ${job.state}${job.error ? ` (${job.error})` : ''}: run it again to resume`,
      );
      return job.state === 'finished' ? 0 : 1;
    }
    case 'volume scrub':
    case 'volume rebuild': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      const rateText = str('rate');
      const rateBytesPerSec = rateText === undefined ? 0 : parseSize(rateText, '--rate');
      let body: Record<string, unknown> = { rateBytesPerSec };
      if (verb === 'rebuild') {
        const text = needOpt('strip');
        if (!/^\d{1,2}$/.test(text)) usage(`--strip must be a strip index, got "${text}"`);
        body = { strip: Number(text), device: needOpt('device'), ...body };
      }
      // No progress lines: the API answers once the pass is done.
      io.stderr.write(`${verb} of volume ${name} running on the appliance; the report follows when it finishes\n`);
      const { volumeName, ...report } = await api.json<ScrubAnswer>({ method: 'POST', path: `/volumes/${segment(name)}/${verb}`, body });
      out(
        json
          ? JSON.stringify(report)
          : `volume ${volumeName} scrubbed: ${report.blocksDone} blocks, ${report.blocksRepaired} repaired, ${report.blocksLost} lost` +
              (report.caughtUp.length ? `; strips ${report.caughtUp.join(', ')} caught up` : ''),
      );
      return report.blocksLost > 0 ? 1 : 0;
    }
    default:
      return null;
  }
}
