/**
 * One appliance: the metadata store, the keys that open strips, the storage devices and the
 * volumes over them. The CLI and the server drive everything through this object; it owns every
 * open device and volume and closes them in order.
 */
import { access, mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { StorageDevice } from './device/device.ts';
import { allocateRegion } from './device/allocation.ts';
import { createFileDevice } from './device/file-device.ts';
import { isNbdUri } from './device/nbd-uri.ts';
import { openDevice } from './device/open-device.ts';
import { ErrorCode, StripvaultError, fail } from './errors.ts';
import type { Logger } from './log.ts';
import { SplitPool, type SplitRunner } from './split/split-pool.ts';
import { AuditLog, audited } from '../keymgr/audit.ts';
import type { Directory } from '../keymgr/directory.ts';
import type { Actor } from '../keymgr/key-manager-api.ts';
import { KeyManager } from '../keymgr/key-manager.ts';
import { openStore, type DeviceRecord, type Store, type StoreConfig, type VolumeRecord } from './store/store.ts';
import { Owl, owlRingBytesFor } from './volume/owl.ts';
import { Volume, stripBytesForVolume, uuidToBytes, validateVolumeShape, type OwlRecoveryReport, type ScrubOptions, type StripState } from './volume/volume.ts';
import { slotBytesFor } from './strip/layout.ts';
import { Strip } from './strip/strip.ts';

export const storeDirName = 'store';
/** Outstanding write lists live here, one file per volume: on the appliance's own disk, beside the store. */
export const owlDirName = 'owl';

export const auditFileName = 'audit.log';
/** Who the appliance itself acts as in the audit log when no person asked. */
export const systemActor: Actor = { name: 'system' };

/** A session key rotation running in the background on a serving appliance. */
export interface RekeyJob {
  readonly volumeId: string;
  readonly volumeName: string;
  state: 'running' | 'finished' | 'paused' | 'failed';
  blocksDone: number;
  blocksTotal: number;
  blocksResealed: number;
  readonly startedAt: Date;
  finishedAt?: Date;
  /** Stable code of what stopped it (state failed). */
  error?: string;
}

export interface ApplianceOptions {
  /** Where the embedded store, the audit file and the outstanding write lists live. */
  readonly dataDir: string;
  /** Defaults to PGlite under dataDir/store. */
  readonly store?: StoreConfig;
  /** The directory behind LDAP communities of interest (none: only local COIs). */
  readonly directory?: Directory;
  /** The audit log's file sink; default dataDir/audit.log. */
  readonly auditFile?: string;
  readonly log: Logger;
  /** Threads for sealing and opening shares; default one per core. 0: on the calling thread. */
  readonly splitWorkers?: number;
}

export interface AddDeviceRequest {
  readonly name: string;
  readonly path: string;
  /** Create a sparse file of this size if `path` does not exist. */
  readonly createBytes?: number;
}

export interface CreateVolumeRequest {
  readonly name: string;
  readonly m: number;
  readonly sizeBytes: number;
  readonly blockBytes: number;
  /** Device names or ids; N is their count. */
  readonly devices: readonly string[];
  /** The community of interest the volume is first presented to (its key wraps the strip headers). */
  readonly coi: string;
  /** Name of that first virtual disk (the NBD export); default the volume's name. */
  readonly virtualDisk?: string;
  /** The caller just created these devices as sparse files: skip zeroing the strip regions. */
  readonly regionsZeroed?: boolean;
}

export class Appliance {
  readonly dataDir: string;
  readonly store: Store;
  readonly log: Logger;
  readonly keys: KeyManager;
  readonly audit: AuditLog;
  private readonly runner: SplitRunner | undefined;
  private readonly devices = new Map<string, StorageDevice>();
  private readonly volumes = new Map<string, Promise<Volume>>();
  /** Background re-keys by volume id (the latest per volume), and how to stop them at close. */
  private readonly rekeys = new Map<string, { job: RekeyJob; abort: AbortController; done: Promise<void> }>();

  private constructor(dataDir: string, store: Store, keys: KeyManager, audit: AuditLog, log: Logger, runner: SplitRunner | undefined) {
    this.dataDir = dataDir;
    this.store = store;
    this.keys = keys;
    this.audit = audit;
    this.log = log;
    this.runner = runner;
  }

  static async open(opts: ApplianceOptions): Promise<Appliance> {
    const dataDir = resolve(opts.dataDir);
    await mkdir(dataDir, { recursive: true });
    const config: StoreConfig = opts.store ?? { kind: 'pglite', dataDir: join(dataDir, storeDirName) };
    const store = await openStore(config);
    let audit: AuditLog | undefined;
    try {
      audit = new AuditLog({ store, filePath: opts.auditFile ?? join(dataDir, auditFileName) });
      // The file catches up with the store first: a file behind or ahead of it refuses to start.
      await audit.sync();
      const keys = await KeyManager.open({ store, audit, ...(opts.directory ? { directory: opts.directory } : {}) });
      const runner = opts.splitWorkers === 0 ? undefined : new SplitPool(opts.splitWorkers);
      return new Appliance(dataDir, store, keys, audit, opts.log, runner);
    } catch (e) {
      await audit?.close().catch(() => undefined);
      await store.close();
      throw e;
    }
  }

  /** Registers a device; `created` says whether a new (all-zero, sparse) file was made for it. */
  async addDevice(req: AddDeviceRequest): Promise<DeviceRecord & { created: boolean }> {
    // An NBD URI names a remote export: nothing to resolve against our cwd, nothing to create.
    const remote = isNbdUri(req.path);
    if (remote && req.createBytes !== undefined) {
      fail(ErrorCode.InvalidArgument, `device.path: ${req.path} is a remote NBD export; --create only makes local files`, { field: 'device.path' });
    }
    const path = remote ? req.path : resolve(req.path);
    const exists =
      remote ||
      (await access(path).then(
        () => true,
        () => false,
      ));
    const created = !exists && req.createBytes !== undefined;
    const device = created ? await createFileDevice(path, req.createBytes!) : await openDevice(path);
    try {
      const record = await this.store.addDevice({ name: req.name, kind: device.kind, path, sizeBytes: device.sizeBytes });
      await this.event('device.added', record.id, { name: record.name, kind: device.kind, sizeBytes: record.sizeBytes, created });
      return { ...record, created };
    } finally {
      await device.close();
    }
  }

  async createVolume(req: CreateVolumeRequest, actor: Actor = systemActor): Promise<VolumeRecord> {
    // Bad shapes are refused before the store hears of the volume.
    validateVolumeShape({ m: req.m, n: req.devices.length, sizeBytes: req.sizeBytes, blockBytes: req.blockBytes });
    const records = await Promise.all(req.devices.map((d) => this.store.getDevice(d)));
    const n = records.length;
    const stripBytes = stripBytesForVolume(req.sizeBytes, req.blockBytes, req.m);
    const strips = [];
    for (let index = 0; index < n; index++) {
      const rec = records[index]!;
      const used = await this.store.listStripsOnDevice(rec.id);
      strips.push({ index, deviceId: rec.id, offsetBytes: allocateRegion(rec.sizeBytes, used, stripBytes), lengthBytes: stripBytes });
    }
    // The record goes in first (offline): if formatting fails half way, the regions stay reserved
    // and visible rather than silently reused.
    // Keys first: a sealed appliance or an unknown COI refuses before anything is reserved.
    const wrapper = await this.keys.wrapperForCoi(req.coi);
    const record = await this.store.createVolume({ name: req.name, m: req.m, n, sizeBytes: req.sizeBytes, blockSize: req.blockBytes, strips });
    await this.store.setVolumeState(record.id, 'offline');
    try {
      await this.keys.presentVolume({ name: req.virtualDisk ?? req.name, volumeId: record.id, coi: req.coi }, actor);
    } catch (e) {
      // Nothing was written to a device yet: the record (and its reserved regions) goes again.
      wrapper.key.fill(0);
      await this.store.removeVolume(record.id).catch(() => undefined);
      throw e;
    }
    const locations = [];
    for (const s of strips) locations.push({ device: await this.device(records[s.index]!), base: s.offsetBytes });
    // A leftover list of an earlier volume with this id cannot exist (ids are fresh), so create fails loudly if one does.
    await mkdir(join(this.dataDir, owlDirName), { recursive: true });
    const owl = await Owl.create(this.owlPath(record.id), uuidToBytes(record.id), owlRingBytesFor(slotBytesFor(req.blockBytes, req.m), n));
    const volume = await Volume.create({
      owl,
      id: record.id,
      name: req.name,
      m: req.m,
      n,
      sizeBytes: req.sizeBytes,
      blockBytes: req.blockBytes,
      locations,
      wrappers: [wrapper],
      regionsZeroed: req.regionsZeroed === true,
      hooks: this.hooksFor(record.id),
      ...(this.runner ? { runner: this.runner } : {}),
    }).finally(() => wrapper.key.fill(0));
    await this.store.setVolumeState(record.id, 'online');
    this.volumes.set(record.id, Promise.resolve(volume));
    await this.event('volume.created', record.id, { name: req.name, m: req.m, n, sizeBytes: req.sizeBytes, blockBytes: req.blockBytes });
    return this.store.getVolume(record.id);
  }

  /** Opens (once) and returns a volume by name or id. */
  openVolume(nameOrId: string): Promise<Volume> {
    // By id, an open volume is answered without the store: NBD exports ask on every request.
    const open = this.volumes.get(nameOrId);
    if (open) return open;
    const run = async (): Promise<Volume> => {
      const record = await this.store.getVolume(nameOrId);
      const cached = this.volumes.get(record.id);
      if (cached) return cached;
      const p = this.openRecord(record);
      this.volumes.set(record.id, p);
      p.catch(() => this.volumes.delete(record.id));
      return p;
    };
    return run();
  }

  private async openRecord(record: VolumeRecord): Promise<Volume> {
    const locations = [];
    for (const s of record.strips) {
      try {
        const dev = await this.device(await this.store.getDevice(s.deviceId));
        locations.push({ device: dev, base: s.offsetBytes });
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        this.log.log('warn', 'strip.device_unavailable', { volume: record.name, strip: s.index, code: e.code });
        locations.push(null);
      }
    }
    const wrappers = await this.keys.wrappersForVolume(record.id);
    if (wrappers.length === 0) {
      fail(ErrorCode.VolumeUnavailable, `volume ${record.name} is presented to no community of interest: no key opens it (withdrawn or shredded)`);
    }
    const owl = await this.openOwl(record);
    const volume = await Volume.open({
      owl,
      locations,
      wrappers,
      expectId: record.id,
      hooks: this.hooksFor(record.id),
      generationFloor: record.generationReserved,
      staleStrips: record.strips.filter((s) => s.state === 'stale').map((s) => s.index),
      ...(this.runner ? { runner: this.runner } : {}),
    })
      .catch(async (e: unknown) => {
        // The journal stays as it is for the next attempt; only its handle goes.
        await owl.close().catch(() => undefined);
        throw e;
      })
      .finally(() => {
        for (const w of wrappers) w.key.fill(0);
      });
    const health = volume.health();
    await this.store.setVolumeState(record.id, health.state === 'healthy' ? 'online' : 'degraded');
    for (const s of health.strips) if (s.state !== 'healthy') await this.store.setStripState(record.id, s.index, s.state);
    await this.event('volume.opened', record.id, { name: record.name, state: health.state });
    return volume;
  }

  /**
   * Replaces strip `index` of a volume with an empty strip on another device (the old one died or
   * was wiped): places and records it, formats it stale; a scrub (`Volume.scrub`) then rebuilds it.
   */
  async replaceStrip(volumeNameOrId: string, index: number, deviceNameOrId: string): Promise<Volume> {
    const record = await this.store.getVolume(volumeNameOrId);
    const old = record.strips[index];
    if (old === undefined) fail(ErrorCode.OutOfRange, `volume ${record.name} has no strip ${index}`);
    const volume = await this.openVolume(record.id);
    // Checked before the store moves anything: a strip in service is never replaced.
    const state = volume.health().strips[index]!.state;
    if (state === 'healthy' || state === 'stale') {
      fail(ErrorCode.InvalidArgument, `strip ${index} of volume ${record.name} is in service (${state}); only a missing or failed strip is replaced`);
    }
    const device = await this.store.getDevice(deviceNameOrId);
    const used = await this.store.listStripsOnDevice(device.id);
    const offsetBytes = allocateRegion(device.sizeBytes, used, old.lengthBytes);
    await this.store.moveStrip(record.id, { index, deviceId: device.id, offsetBytes, lengthBytes: old.lengthBytes });
    await volume.replaceStrip(index, { device: await this.device(device), base: offsetBytes });
    await this.event('strip.replaced', record.id, { strip: index, device: device.name });
    return volume;
  }

  async removeVolume(nameOrId: string, actor: Actor = systemActor): Promise<void> {
    const record = await this.store.getVolume(nameOrId);
    // Its virtual disks go first (audited): no client may be left holding a name for it, and once
    // none presents it, it cannot be opened again while it closes.
    for (const d of await this.keys.listVirtualDisks({ volumeId: record.id })) await this.keys.withdrawVirtualDisk(d.name, actor);
    await this.closeVolume(record.id);
    // Its regions are about to be free for reuse: the strip headers (every wrapped key) go first,
    // so what stays on the devices until overwritten is unreadable by any key. Unreachable strips
    // keep theirs (reported); `volume shred` also destroys the keys.
    const unreachable: number[] = [];
    for (const s of record.strips) {
      try {
        await Strip.wipeHeadersAt({ device: await this.deviceById(s.deviceId), base: s.offsetBytes });
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        unreachable.push(s.index);
      }
    }
    if (unreachable.length > 0) await this.event('volume.remove_headers_unreachable', record.id, { name: record.name, strips: unreachable });
    await this.store.removeVolume(record.id);
    await rm(this.owlPath(record.id), { force: true });
    await this.event('volume.removed', record.id, { name: record.name });
  }

  /**
   * Rotates a volume's session keys online (Volume.rekey), audited before it starts, with events
   * at start and end. Called again after an interruption, it resumes.
   */
  async rekeyVolume(nameOrId: string, opts: ScrubOptions, actor: Actor = systemActor): Promise<Awaited<ReturnType<Volume['rekey']>>> {
    const record = await this.store.getVolume(nameOrId);
    const entry = { actor: actor.name, action: 'key.session.rotate', subject: `volume:${record.name}`, detail: { volumeId: record.id } };
    return audited(this.audit, entry, async () => {
      const volume = await this.openVolume(record.id);
      await this.event('volume.rekey_started', record.id, { name: record.name, resumed: volume.rekeyInProgress() });
      const report = await volume.rekey(opts);
      await this.event(report.finished ? 'volume.rekey_finished' : 'volume.rekey_paused', record.id, {
        name: record.name,
        blocksDone: report.blocksDone,
        blocksResealed: report.blocksRepaired,
        blocksLost: report.blocksLost,
      });
      return report;
    });
  }

  /**
   * Starts a session key rotation in the background (audited before it starts); returns its job,
   * whose counters move as it runs. One per volume at a time (SV_STORE_CONFLICT otherwise). An
   * interrupted one (close, crash) is resumed by starting it again.
   */
  async startRekey(nameOrId: string, opts: { rateBytesPerSec?: number }, actor: Actor = systemActor): Promise<RekeyJob> {
    const record = await this.store.getVolume(nameOrId);
    if (this.rekeys.get(record.id)?.job.state === 'running') fail(ErrorCode.StoreConflict, `volume ${record.name} is already being re-keyed`);
    const abort = new AbortController();
    const job: RekeyJob = { volumeId: record.id, volumeName: record.name, state: 'running', blocksDone: 0, blocksTotal: record.sizeBytes / record.blockSize, blocksResealed: 0, startedAt: new Date() };
    const entry = { actor: actor.name, action: 'key.session.rotate', subject: `volume:${record.name}`, detail: { volumeId: record.id, background: true } };
    const volume = await audited(this.audit, entry, () => this.openVolume(record.id));
    await this.event('volume.rekey_started', record.id, { name: record.name, resumed: volume.rekeyInProgress() });
    const done = volume
      .rekey({
        ...(opts.rateBytesPerSec ? { rateBytesPerSec: opts.rateBytesPerSec } : {}),
        signal: abort.signal,
        onProgress: (p) => {
          job.blocksDone = p.blocksDone;
          job.blocksResealed = p.blocksRepaired;
        },
      })
      .then(
        async (report) => {
          job.state = report.finished ? 'finished' : 'paused';
          job.finishedAt = new Date();
          await this.event(report.finished ? 'volume.rekey_finished' : 'volume.rekey_paused', record.id, { name: record.name, blocksResealed: report.blocksRepaired, blocksLost: report.blocksLost });
        },
        async (e: unknown) => {
          job.state = 'failed';
          job.error = e instanceof StripvaultError ? e.code : 'SV_INTERNAL';
          job.finishedAt = new Date();
          await this.event('volume.rekey_failed', record.id, { name: record.name, code: job.error });
        },
      )
      .catch(() => undefined);
    this.rekeys.set(record.id, { job, abort, done });
    return job;
  }

  /** The latest background re-key of a volume, or null if none was started since this appliance started. */
  async rekeyJob(nameOrId: string): Promise<RekeyJob | null> {
    const record = await this.store.getVolume(nameOrId);
    return this.rekeys.get(record.id)?.job ?? null;
  }

  /** Closes a volume if it is open (flushes; its keys are wiped from memory). */
  async closeVolume(volumeId: string): Promise<void> {
    const open = this.volumes.get(volumeId);
    if (!open) return;
    // Stays in the map while it closes: requests meanwhile get the closing volume (SV_VOLUME_CLOSED)
    // rather than a second, concurrent instance on the same strips and journal.
    try {
      await (await open.catch(() => null))?.close();
    } finally {
      if (this.volumes.get(volumeId) === open) this.volumes.delete(volumeId);
    }
  }

  /** Unregisters a device that holds no strip (the store refuses otherwise) and closes it if open. */
  async removeDevice(nameOrId: string): Promise<DeviceRecord> {
    const record = await this.store.getDevice(nameOrId);
    await this.store.removeDevice(record.id);
    const open = this.devices.get(record.id);
    this.devices.delete(record.id);
    await open?.close().catch(() => undefined);
    await this.event('device.removed', record.id, { name: record.name });
    return record;
  }

  /** Drops a volume that closed itself (a crypto-shred) from the open set. */
  forgetVolume(volumeId: string): void {
    this.volumes.delete(volumeId);
  }

  /** Whether the volume is open in this appliance (its keys in memory). */
  isVolumeOpen(volumeId: string): boolean {
    return this.volumes.has(volumeId);
  }

  /** Seals the appliance: every open volume is flushed and closed (keys wiped), then the master key is forgotten. */
  async seal(actor: Actor): Promise<void> {
    // Keys first: from this moment no volume can be (re)opened; then every open one is closed and
    // its copies of keys zeroed. Closing flushes, which needs no key.
    try {
      await this.keys.seal(actor);
    } finally {
      for (const id of [...this.volumes.keys()]) await this.closeVolume(id).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    // Background re-keys stop between chunks; the next start resumes them.
    for (const r of this.rekeys.values()) r.abort.abort();
    for (const r of this.rekeys.values()) await r.done;
    for (const p of this.volumes.values()) await (await p.catch(() => null))?.close();
    this.volumes.clear();
    for (const d of this.devices.values()) await d.close().catch(() => undefined);
    this.devices.clear();
    await this.runner?.close();
    await this.audit.close().catch(() => undefined);
    await this.store.close();
  }

  /** The open device behind a store device id (opened once, shared by every strip on it). */
  async deviceById(deviceId: string): Promise<StorageDevice> {
    return this.device(await this.store.getDevice(deviceId));
  }

  private async device(record: DeviceRecord): Promise<StorageDevice> {
    const cached = this.devices.get(record.id);
    if (cached) return cached;
    const dev = await openDevice(record.path, { id: record.id });
    if (dev.sizeBytes < record.sizeBytes) {
      await dev.close();
      fail(ErrorCode.DeviceTooSmall, `device ${record.name} shrank from ${record.sizeBytes} to ${dev.sizeBytes} bytes`);
    }
    this.devices.set(record.id, dev);
    return dev;
  }

  private owlPath(volumeId: string): string {
    return join(this.dataDir, owlDirName, `${volumeId}.owl`);
  }

  /** The volume's outstanding write list; a volume made before lists existed gets an empty one. */
  private async openOwl(record: VolumeRecord): Promise<Owl> {
    try {
      return await Owl.open(this.owlPath(record.id), uuidToBytes(record.id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    // Administrators must see this: if the volume crashed mid-write before, its torn writes cannot be rolled forward.
    await this.event('volume.owl_missing', record.id, { name: record.name, reason: 'no outstanding write list found; starting an empty one' });
    await mkdir(join(this.dataDir, owlDirName), { recursive: true });
    return Owl.create(this.owlPath(record.id), uuidToBytes(record.id), owlRingBytesFor(slotBytesFor(record.blockSize, record.m), record.n));
  }

  private hooksFor(volumeId: string) {
    return {
      onOwlRecovery: (report: OwlRecoveryReport) =>
        this.event(report.stoppedAt ? 'volume.owl_recovery_incomplete' : 'volume.owl_recovered', volumeId, { ...report }),
      allocateGenerations: (min: number, count: number) => this.store.allocateGenerations(volumeId, min, count),
      onStripState: async (index: number, state: StripState, reason: string | undefined) => {
        await this.store.setStripState(volumeId, index, state);
        await this.event('strip.state', volumeId, { strip: index, state, reason });
      },
    };
  }

  /** Logs an event and records it in the store for administrators. */
  recordEvent(kind: string, subject: string, detail: Record<string, unknown>): Promise<void> {
    return this.event(kind, subject, detail);
  }

  private async event(kind: string, subject: string, detail: Record<string, unknown>): Promise<void> {
    this.log.log('info', kind, { subject, ...detail });
    await this.store.appendEvent({ kind, subject, detail });
  }
}
