/**
 * `stripvault serve`: run one appliance. On an empty data directory it builds the embedded default
 * — PGlite store, three strip files under DATA/strips, a 1 GiB 2-of-3 volume exported as `default` —
 * so `npm start` on a fresh clone serves a disk at nbd://127.0.0.1:10809/default.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Appliance } from '../appliance/appliance.ts';
import { stripAlignBytes } from '../appliance/device/allocation.ts';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';
import { jsonLogger, type Logger } from '../appliance/log.ts';
import type { NbdTlsOptions } from '../appliance/nbd/handshake.ts';
import { startNbdServer, type NbdAddress } from '../appliance/nbd/server.ts';
import { nativeSeal } from '../appliance/split/native-seal.ts';
import { nbdServerTls } from '../appliance/nbd/tls.ts';
import { systemActor } from '../appliance/appliance.ts';
import { VirtualDisks } from '../appliance/virtual-disks.ts';
import { virtualDiskRegistry } from '../appliance/virtual-disk-exports.ts';
import { buildApi } from '../admin-ui/api.ts';
import { applianceAdminOps } from '../admin-ui/appliance-ops.ts';
import { startApiServer, type ApiServer } from '../admin-ui/api-server.ts';
import { loadOrCreateApiToken } from '../admin-ui/api-token.ts';
import { verifyAudit } from '../keymgr/audit.ts';
import { defaultCoiName, devUnseal, ensureDefaultCoi } from '../keymgr/dev-unseal.ts';
import type { Actor, KeyManagerApi } from '../keymgr/key-manager-api.ts';
import { LdapDirectory } from '../keymgr/ldap-directory.ts';
import { checkClientCertificate } from '../keymgr/pki-check.ts';
import { blockBytesDefault } from '../appliance/split/geometry.ts';
import type { StoreConfig } from '../appliance/store/store.ts';
import { stripBytesForVolume } from '../appliance/volume/volume.ts';
import { startScrubSchedule } from '../appliance/scrub-schedule.ts';
import { parseDuration, parseSize } from './sizes.ts';
import { missingServeNodeFlags } from './node-flags.ts';
import type { CliIo } from './main.ts';

export const defaultNbdAddress = '127.0.0.1:10809';
export const defaultApiAddress = '127.0.0.1:8080';
/** An LDAP configuration file is small JSON; anything larger is not one. */
export const ldapConfigBytesMax = 256 * 1024;
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
  /** Admin API address ("HOST:PORT", loopback only) or "off"; default defaultApiAddress. */
  readonly api?: string | undefined;
  /** Never create or use a dev unseal share: start sealed and wait for the security officers. */
  readonly noDevUnseal?: boolean;
  /** JSON file with LdapDirectoryOptions: COIs may then map to LDAP groups. */
  readonly ldapConfig?: string | undefined;
  /** Extra host names / addresses for the NBD TLS server certificate. */
  readonly tlsHosts?: readonly string[];
  /** Called with the running appliance once serving (tests drive it in-process). */
  readonly onAppliance?: (appliance: Appliance) => void;
  /** Called with the admin API's URL once it listens (useful with --api-listen 127.0.0.1:0). */
  readonly onApi?: (url: string) => void;
}

export function parseApiAddress(text: string): { host: string; port: number } {
  const a = parseNbdAddress(text);
  if ('path' in a) fail(ErrorCode.InvalidArgument, '--api takes HOST:PORT (or off), not a Unix socket');
  return a;
}

async function loadLdapDirectory(path: string): Promise<LdapDirectory> {
  const text = await readFile(path, 'utf8');
  if (Buffer.byteLength(text) > ldapConfigBytesMax) fail(ErrorCode.InvalidArgument, `${path} is too large for an LDAP configuration`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    fail(ErrorCode.InvalidArgument, `${path} is not valid JSON`);
  }
  return new LdapDirectory(parsed as ConstructorParameters<typeof LdapDirectory>[0]);
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
    coi: defaultCoiName,
    // Freshly created sparse files read as zeros; anything older gets its strip regions zeroed.
    regionsZeroed: created === defaultGeometry.n,
  });
  log.log('info', 'embedded_default.created', { volume: defaultVolumeName, geometry: `${defaultGeometry.m}-of-${defaultGeometry.n}`, sizeBytes: defaultVolumeBytes });
}

/**
 * NBD over TLS with client certificates, available once the appliance is unsealed: the server
 * certificate is issued by the appliance CA when the first client asks (kept in memory only, so
 * no private key is ever on disk) for 127.0.0.1, localhost and the --tls-host names.
 */
function lazyNbdTls(appliance: Appliance, hostNames: readonly string[], log: Logger): { tls: NbdTlsOptions; forget: () => void } {
  let ready: Promise<NbdTlsOptions> | null = null;
  const build = async (): Promise<NbdTlsOptions> => {
    const status = await appliance.keys.status();
    if (!status.initialized || status.sealed) fail(ErrorCode.Sealed, 'stripvault is sealed: no TLS until security officers unseal it');
    const caCertPem = await appliance.keys.caCertificatePem();
    const issued = await appliance.keys.issueServerCertificate([...new Set(['127.0.0.1', 'localhost', ...hostNames])], {}, systemActor);
    const registry = appliance.keys.certificateRegistry();
    log.log('info', 'nbd.tls_ready', { serial: issued.serial, hosts: hostNames });
    return nbdServerTls({
      caCertPem,
      serverCertPem: issued.certificatePem,
      serverKeyPem: issued.privateKeyPem,
      checkClient: async (der) => {
        const c = await checkClientCertificate(registry, caCertPem, der);
        return { clientName: c.clientName, serial: c.serial };
      },
      mode: 'optional',
    });
  };
  return {
    tls: {
      mode: 'optional',
      async upgrade(socket, peer) {
        ready ??= build().catch((e: unknown) => {
          ready = null;
          throw e;
        });
        return (await ready).upgrade!(socket, peer);
      },
    },
    // At seal: the server key goes with the rest; the next TLS client after an unseal gets a new one.
    forget: () => {
      ready = null;
    },
  };
}

/** A KeyManagerApi for the admin API whose seal() also closes every open volume (their keys go too). */
function sealingKeyManager(appliance: Appliance, onSeal: () => void): KeyManagerApi {
  const keys = appliance.keys;
  return new Proxy(keys, {
    get(target, prop) {
      if (prop === 'seal') return (actor: Actor) => appliance.seal(actor).finally(onSeal);
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export async function serve(opts: ServeOptions): Promise<number> {
  const log = jsonLogger({ write: (l) => opts.io.stderr.write(l + '\n') });
  const listen = parseNbdAddress(opts.nbd ?? defaultNbdAddress);
  const apiAddress = opts.api === 'off' ? null : parseApiAddress(opts.api ?? defaultApiAddress);
  const scrubEveryMs = parseDuration(opts.scrubEvery ?? scrubEveryDefault, '--scrub-every');
  const scrubRate = parseSize(opts.scrubRate ?? scrubRateDefault, '--scrub-rate');
  const directory = opts.ldapConfig ? await loadLdapDirectory(opts.ldapConfig) : undefined;
  const appliance = await Appliance.open({ dataDir: opts.dataDir, ...(opts.store ? { store: opts.store } : {}), log, ...(directory ? { directory } : {}) });
  let server;
  let api: ApiServer | null = null;
  try {
    const outcome = opts.noDevUnseal ? 'not-tried' : await devUnseal(appliance.keys, appliance.dataDir, (m) => log.log('warn', 'dev_unseal', { message: m }), { initialize: true });
    if (outcome === 'unsealed' || outcome === 'already-unsealed') {
      await ensureDefaultCoi(appliance.keys);
      await ensureEmbeddedDefault(appliance, log);
    }
    const status = await appliance.keys.status();
    if (status.sealed) {
      log.log('warn', 'sealed', {
        message: status.initialized
          ? `sealed: ${status.unseal?.threshold ?? '?'} security officer share(s) needed (stripvault unseal)`
          : 'not initialized: security officers run stripvault init, then unseal',
      });
    } else {
      for (const v of await appliance.store.listVolumes()) {
        if (v.state === 'offline') continue;
        await appliance.openVolume(v.name).catch((e: unknown) => {
          log.log('error', 'volume.open_failed', { volume: v.name, code: (e as StripvaultError).code, message: (e as Error).message });
        });
      }
    }
    const nbdTls = lazyNbdTls(appliance, opts.tlsHosts ?? [], log);
    if (apiAddress) {
      const { token } = await loadOrCreateApiToken(appliance.dataDir);
      const app = buildApi({
        keyManager: sealingKeyManager(appliance, nbdTls.forget),
        volumeKeyOps: new VirtualDisks(appliance),
        applianceOps: applianceAdminOps(appliance),
        token,
        auditVerify: () => verifyAudit({ store: appliance.store, filePath: appliance.audit.filePath, sinkName: appliance.audit.sinkName }),
        log,
      });
      api = await startApiServer({ ...apiAddress, app });
    }
    server = await startNbdServer({
      listen,
      exports: virtualDiskRegistry(appliance),
      tls: nbdTls.tls,
      log: (ev) =>
        log.log(ev.event === 'protocol-violation' || ev.event === 'request-failed' || ev.event === 'tls-upgrade-failed' ? 'warn' : 'debug', `nbd.${ev.event}`, { ...ev }),
    });
  } catch (e) {
    await api?.close();
    await appliance.close();
    throw e;
  }
  const where = 'path' in server.address ? `unix:${server.address.path}` : `${server.address.host}:${server.address.port}`;
  const scrubs = scrubEveryMs === null ? null : startScrubSchedule(appliance, { everyMs: scrubEveryMs, rateBytesPerSec: scrubRate });
  log.log('info', 'serving', { nbd: where, api: api?.url ?? null, dataDir: appliance.dataDir, scrubEveryMs, scrubRateBytesPerSec: scrubRate, sealEngine: nativeSeal.available ? 'native' : 'javascript' });
  // Correct either way, but several times slower without the addon: an administrator should know.
  if (!nativeSeal.available) log.log('warn', 'seal_engine.javascript', { why: nativeSeal.why });
  const missing = missingServeNodeFlags();
  if (missing.length > 0) {
    log.log('warn', 'node_flags.missing', { missing, message: `started without ${missing.join(' ')}: small random writes run several percent slower (npm start passes it; so should a service unit)` });
  }
  opts.onListening?.(server.address);
  opts.onAppliance?.(appliance);
  if (api) opts.onApi?.(api.url);

  const stop =
    opts.stop ??
    new Promise<void>((resolve) => {
      process.once('SIGTERM', () => resolve());
      process.once('SIGINT', () => resolve());
    });
  await stop;
  log.log('info', 'shutting_down', {});
  await server.close();
  await api?.close();
  await scrubs?.stop();
  // Closing the appliance flushes every volume to its strips' storage before the store closes.
  await appliance.close();
  log.log('info', 'stopped', {});
  return 0;
}
