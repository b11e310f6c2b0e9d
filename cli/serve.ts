/**
 * `stripvault serve`: run one appliance. On an empty data directory it builds the embedded default
 * — PGlite store, three strip files under DATA/strips, a 1 GiB 2-of-3 volume exported as `default` —
 * so `npm start` on a fresh clone serves a disk at nbd://127.0.0.1:10809/default.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Appliance } from '../appliance/appliance.ts';
import { stripAlignBytes } from '../appliance/device/allocation.ts';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';
import { jsonLogger, type Logger } from '../appliance/log.ts';
import type { ExportRegistry, NbdExport } from '../appliance/nbd/backend.ts';
import { isLoopback, startNbdServer, type NbdAddress } from '../appliance/nbd/server.ts';
import { blockBytesDefault } from '../appliance/split/geometry.ts';
import type { StoreConfig } from '../appliance/store/store.ts';
import { volumeExport } from '../appliance/volume/volume-export.ts';
import { stripBytesForVolume } from '../appliance/volume/volume.ts';
import { loadOrCreateDevWrapper } from '../keymgr/dev-wrapping-key.ts';
import { startScrubSchedule } from '../appliance/scrub-schedule.ts';
import { parseDuration, parseSize } from './sizes.ts';
import type { CliIo } from './main.ts';

export const defaultNbdAddress = '127.0.0.1:10809';
export const defaultVolumeName = 'default';
export const defaultVolumeBytes = 1024 ** 3;
export const defaultGeometry = { m: 2, n: 3 } as const;
export const scrubEveryDefault = '7d';
export const scrubRateDefault = '50M';

export interface ServeOptions {
  readonly dataDir: string;
  readonly store: StoreConfig | undefined;
  readonly nbd: string | undefined;
  readonly io: CliIo;
  /** How often every volume is scrubbed ("7d", "off"); default scrubEveryDefault. */
  readonly scrubEvery?: string | undefined;
  /** Scrub speed limit per volume, bytes per second ("50M"); default scrubRateDefault. */
  readonly scrubRate?: string | undefined;
  /** Resolves to stop the server (tests); by default SIGTERM/SIGINT. */
  readonly stop?: Promise<void>;
  /** Called once listening, with the bound address. */
  readonly onListening?: (address: NbdAddress) => void;
}

export function parseNbdAddress(text: string): NbdAddress {
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (path.length === 0) fail(ErrorCode.InvalidArgument, '--nbd unix: needs a socket path');
    return { path };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) fail(ErrorCode.InvalidArgument, `--nbd: expected HOST:PORT, [V6]:PORT or unix:PATH, got "${text}"`);
  return { host: m[1] ?? m[2]!, port };
}

/** Creates the embedded default on a store with no volumes at all. */
export async function ensureEmbeddedDefault(appliance: Appliance, log: Logger): Promise<void> {
  if ((await appliance.store.listVolumes()).length > 0) return;
  const stripDir = join(appliance.dataDir, 'strips');
  await mkdir(stripDir, { recursive: true });
  const stripBytes = stripBytesForVolume(defaultVolumeBytes, blockBytesDefault, defaultGeometry.m);
  const deviceBytes = Math.ceil(stripBytes / stripAlignBytes) * stripAlignBytes;
  const existing = new Set((await appliance.store.listDevices()).map((d) => d.name));
  const names: string[] = [];
  let created = 0;
  for (let i = 0; i < defaultGeometry.n; i++) {
    const name = `local-${i}`;
    if (!existing.has(name)) {
      // Only a file made just now is known to read as zeros; a leftover one gets zeroed.
      const rec = await appliance.addDevice({ name, path: join(stripDir, `strip-${i}.img`), createBytes: deviceBytes });
      if (rec.created) created++;
    }
    names.push(name);
  }
  await appliance.createVolume({
    name: defaultVolumeName,
    m: defaultGeometry.m,
    sizeBytes: defaultVolumeBytes,
    blockBytes: blockBytesDefault,
    devices: names,
    // Freshly created sparse files read as zeros; anything older gets its strip regions zeroed.
    regionsZeroed: created === defaultGeometry.n,
  });
  log.log('info', 'embedded_default.created', { volume: defaultVolumeName, geometry: `${defaultGeometry.m}-of-${defaultGeometry.n}`, sizeBytes: defaultVolumeBytes });
}

function volumeRegistry(appliance: Appliance, log: Logger): ExportRegistry {
  const exportOf = async (name: string): Promise<NbdExport | undefined> => {
    try {
      return volumeExport(await appliance.openVolume(name));
    } catch (e) {
      if (e instanceof StripvaultError && e.code === ErrorCode.StoreNotFound) return undefined;
      if (e instanceof StripvaultError) {
        log.log('warn', 'export.unavailable', { export: name, code: e.code, message: e.message });
        return undefined;
      }
      throw e;
    }
  };
  return {
    async list() {
      const out: NbdExport[] = [];
      for (const v of await appliance.store.listVolumes()) {
        const e = await exportOf(v.name);
        if (e) out.push(e);
      }
      return out;
    },
    // The empty name is the NBD "default export".
    get: (name) => exportOf(name === '' ? defaultVolumeName : name),
  };
}

export async function serve(opts: ServeOptions): Promise<number> {
  const log = jsonLogger({ write: (l) => opts.io.stderr.write(l + '\n') });
  const listen = parseNbdAddress(opts.nbd ?? defaultNbdAddress);
  const scrubEveryMs = parseDuration(opts.scrubEvery ?? scrubEveryDefault, '--scrub-every');
  const scrubRate = parseSize(opts.scrubRate ?? scrubRateDefault, '--scrub-rate');
  // Until client certificates exist (key manager), NBD is plain text: loopback and Unix sockets only.
  if ('host' in listen && !isLoopback(listen.host)) {
    fail(ErrorCode.InvalidArgument, `plain-text NBD may only listen on loopback or a Unix socket, not ${listen.host}`);
  }
  const wrapper = await loadOrCreateDevWrapper(opts.dataDir, (m) => log.log('warn', 'dev_unseal', { message: m }));
  const appliance = await Appliance.open({ dataDir: opts.dataDir, ...(opts.store ? { store: opts.store } : {}), wrappers: [wrapper], log });
  let server;
  try {
    await ensureEmbeddedDefault(appliance, log);
    for (const v of await appliance.store.listVolumes()) {
      await appliance.openVolume(v.name).catch((e: unknown) => {
        log.log('error', 'volume.open_failed', { volume: v.name, code: (e as StripvaultError).code, message: (e as Error).message });
      });
    }
    server = await startNbdServer({
      listen,
      exports: volumeRegistry(appliance, log),
      log: (ev) => log.log(ev.event === 'protocol-violation' || ev.event === 'request-failed' ? 'warn' : 'debug', `nbd.${ev.event}`, { ...ev }),
    });
  } catch (e) {
    await appliance.close();
    throw e;
  }
  const where = 'path' in server.address ? `unix:${server.address.path}` : `${server.address.host}:${server.address.port}`;
  const scrubs = scrubEveryMs === null ? null : startScrubSchedule(appliance, { everyMs: scrubEveryMs, rateBytesPerSec: scrubRate });
  log.log('info', 'serving', { nbd: where, dataDir: appliance.dataDir, scrubEveryMs, scrubRateBytesPerSec: scrubRate });
  opts.onListening?.(server.address);

  const stop =
    opts.stop ??
    new Promise<void>((resolve) => {
      process.once('SIGTERM', () => resolve());
      process.once('SIGINT', () => resolve());
    });
  await stop;
  log.log('info', 'shutting_down', {});
  await server.close();
  await scrubs?.stop();
  // Closing the appliance flushes every volume to its strips' storage before the store closes.
  await appliance.close();
  log.log('info', 'stopped', {});
  return 0;
}
