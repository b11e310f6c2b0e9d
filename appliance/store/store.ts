/**
 * The metadata store: configuration and state shared by the appliances, over PostgreSQL or the
 * embedded PGlite. One schema (migrations.ts), one module per concept over the Sql seam; this
 * class only opens, migrates and delegates. Nothing secret lives here: keys stay wrapped elsewhere.
 */
import { ErrorCode, fail } from '../errors.ts';
import * as audit from './audit.ts';
import * as certificates from './certificates.ts';
import * as cois from './cois.ts';
import * as devices from './devices.ts';
import * as events from './events.ts';
import * as keySet from './key-set.ts';
import * as localUsers from './local-users.ts';
import { migrate } from './migrations.ts';
import { openPgSql } from './pg-sql.ts';
import { openPgliteSql } from './pglite-sql.ts';
import type { SqlPool } from './sql.ts';
import * as virtualDisks from './virtual-disks.ts';
import * as volumes from './volumes.ts';
import type { NewStrip } from './volumes.ts';
import * as workgroupKeys from './workgroup-keys.ts';

export type { AuditHead, AuditRow, AuditTransaction } from './audit.ts';
export type { DeviceKind, DeviceRecord, DeviceState, NewDevice } from './devices.ts';
export type { EventQuery, EventRecord, NewEvent } from './events.ts';
export type { NewStrip, NewVolume, StripPlacement, StripRecord, StripState, VolumeRecord, VolumeState } from './volumes.ts';
export type { ApplianceCaRow, KeySetRow, NewKeyManagerRoot } from './key-set.ts';
export type { CoiMember, CoiRecord, CoiSource, MemberKind, NewCoi } from './cois.ts';
export type { NewWorkgroupKey, WorkgroupKeyRecord, WorkgroupKeyState, WrappedWorkgroupKey } from './workgroup-keys.ts';
export type { NewVirtualDisk, VirtualDiskFilter, VirtualDiskRecord } from './virtual-disks.ts';
export type { CertificateRow } from './certificates.ts';
export type { LocalUserRecord } from './local-users.ts';

export type StoreConfig =
  | { readonly kind: 'pglite'; /** null keeps the store in memory (tests). */ readonly dataDir: string | null }
  | { readonly kind: 'postgres'; readonly connectionString: string };

export class Store {
  readonly #sql: SqlPool;

  private constructor(sql: SqlPool) {
    this.#sql = sql;
  }

  /** Migrates `sql` to the latest schema and takes ownership of it (close() closes it). */
  static async open(sql: SqlPool): Promise<Store> {
    try {
      await migrate(sql);
    } catch (e) {
      // The migration error is the one worth reporting.
      await sql.close().catch(() => {});
      throw e;
    }
    return new Store(sql);
  }

  addDevice(input: devices.NewDevice): Promise<devices.DeviceRecord> {
    return devices.addDevice(this.#sql, input);
  }

  listDevices(): Promise<devices.DeviceRecord[]> {
    return devices.listDevices(this.#sql);
  }

  /** SV_STORE_NOT_FOUND if absent. */
  getDevice(idOrName: string): Promise<devices.DeviceRecord> {
    return devices.getDevice(this.#sql, idOrName);
  }

  setDeviceState(id: string, state: devices.DeviceState): Promise<void> {
    return devices.setDeviceState(this.#sql, id, state);
  }

  /** SV_STORE_CONFLICT while strips use the device. */
  removeDevice(id: string): Promise<void> {
    return devices.removeDevice(this.#sql, id);
  }

  createVolume(input: volumes.NewVolume): Promise<volumes.VolumeRecord> {
    return volumes.createVolume(this.#sql, input);
  }

  listVolumes(): Promise<volumes.VolumeRecord[]> {
    return volumes.listVolumes(this.#sql);
  }

  /** SV_STORE_NOT_FOUND if absent. */
  getVolume(idOrName: string): Promise<volumes.VolumeRecord> {
    return volumes.getVolume(this.#sql, idOrName);
  }

  removeVolume(id: string): Promise<void> {
    return volumes.removeVolume(this.#sql, id);
  }

  setVolumeState(id: string, state: volumes.VolumeState): Promise<void> {
    return volumes.setVolumeState(this.#sql, id, state);
  }

  setScrubCursor(volumeId: string, nextBlock: number, completedAt?: Date): Promise<void> {
    return volumes.setScrubCursor(this.#sql, volumeId, nextBlock, completedAt);
  }

  setStripState(volumeId: string, index: number, state: volumes.StripState): Promise<void> {
    return volumes.setStripState(this.#sql, volumeId, index, state);
  }

  /** Sets max(current, value) and returns it. */
  /** Puts strip `to.index` on a new region (a replacement device); it starts out stale. */
  moveStrip(volumeId: string, to: NewStrip): Promise<void> {
    return volumes.moveStrip(this.#sql, volumeId, to);
  }

  /** Atomically reserves [end - count, end) above `min` and every earlier range; returns end. */
  allocateGenerations(volumeId: string, min: number, count: number): Promise<number> {
    return volumes.allocateGenerations(this.#sql, volumeId, min, count);
  }

  /** True if the epoch was `expected` and is now `next` (> expected). */
  compareAndSetEpoch(volumeId: string, expected: number, next: number): Promise<boolean> {
    return volumes.compareAndSetEpoch(this.#sql, volumeId, expected, next);
  }

  listStripsOnDevice(deviceId: string): Promise<volumes.StripPlacement[]> {
    return volumes.listStripsOnDevice(this.#sql, deviceId);
  }

  appendEvent(input: events.NewEvent): Promise<events.EventRecord> {
    return events.appendEvent(this.#sql, input);
  }

  /** Newest first, at most `limit` (<= eventsListMax). */
  listEvents(query: events.EventQuery): Promise<events.EventRecord[]> {
    return events.listEvents(this.#sql, query);
  }

  /** Runs `fn` in a transaction holding the cluster-wide audit lock: appenders extend one chain, one at a time. */
  auditTransaction<R>(fn: (audit: audit.AuditTransaction) => Promise<R>): Promise<R> {
    return audit.auditTransaction(this.#sql, fn);
  }

  /** Audit rows with seq > afterSeq, oldest first, at most `limit` (<= auditListMax). */
  listAudit(afterSeq: number, limit: number): Promise<audit.AuditRow[]> {
    return audit.listAudit(this.#sql, afterSeq, limit);
  }

  /** The highest seq the named audit file sink durably held; 0 if never. */
  getAuditSinkMark(name: string): Promise<number> {
    return audit.getAuditSinkMark(this.#sql, name);
  }

  /** Key set and CA in one transaction; SV_STORE_CONFLICT if already initialized. */
  initKeyManagerRoot(input: keySet.NewKeyManagerRoot): Promise<void> {
    return keySet.initKeyManagerRoot(this.#sql, input);
  }

  /** null before init. */
  getKeySet(): Promise<keySet.KeySetRow | null> {
    return keySet.getKeySet(this.#sql);
  }

  /** null before init. */
  getApplianceCa(): Promise<keySet.ApplianceCaRow | null> {
    return keySet.getApplianceCa(this.#sql);
  }

  /** The COI and its first (active) workgroup key, together. */
  createCoi(input: cois.NewCoi): Promise<cois.CoiRecord> {
    return cois.createCoi(this.#sql, input);
  }

  /** SV_STORE_NOT_FOUND if absent. */
  getCoi(name: string): Promise<cois.CoiRecord> {
    return cois.getCoi(this.#sql, name);
  }

  listCois(): Promise<cois.CoiRecord[]> {
    return cois.listCois(this.#sql);
  }

  /** With its members and keys; SV_STORE_CONFLICT while it presents virtual disks. */
  removeCoi(name: string): Promise<{ readonly removedKeyIds: readonly string[] }> {
    return cois.removeCoi(this.#sql, name);
  }

  addCoiMember(coi: string, member: cois.CoiMember, at: Date): Promise<void> {
    return cois.addCoiMember(this.#sql, coi, member, at);
  }

  removeCoiMember(coi: string, member: cois.CoiMember): Promise<void> {
    return cois.removeCoiMember(this.#sql, coi, member);
  }

  listCoiMembers(coi: string): Promise<cois.CoiMember[]> {
    return cois.listCoiMembers(this.#sql, coi);
  }

  listLocalCoisOf(member: cois.CoiMember): Promise<string[]> {
    return cois.listLocalCoisOf(this.#sql, member);
  }

  isLocalCoiMember(coi: string, member: cois.CoiMember): Promise<boolean> {
    return cois.isLocalCoiMember(this.#sql, coi, member);
  }

  /** New active key; the current one (which must be `expectedActiveId`) becomes retired. */
  rotateWorkgroupKey(coi: string, expectedActiveId: string | null, next: workgroupKeys.NewWorkgroupKey): Promise<{ readonly retiredKeyId: string | null }> {
    return workgroupKeys.rotateWorkgroupKey(this.#sql, coi, expectedActiveId, next);
  }

  getWorkgroupKey(id: string): Promise<workgroupKeys.WorkgroupKeyRecord> {
    return workgroupKeys.getWorkgroupKey(this.#sql, id);
  }

  listWorkgroupKeys(filter?: { readonly coi?: string }): Promise<workgroupKeys.WorkgroupKeyRecord[]> {
    return workgroupKeys.listWorkgroupKeys(this.#sql, filter);
  }

  /** Deletes the wrapped bytes, keeps the row. */
  destroyWorkgroupKey(id: string, at: Date): Promise<workgroupKeys.WorkgroupKeyRecord> {
    return workgroupKeys.destroyWorkgroupKey(this.#sql, id, at);
  }

  wrappedKeysForVolume(volumeId: string): Promise<workgroupKeys.WrappedWorkgroupKey[]> {
    return workgroupKeys.wrappedKeysForVolume(this.#sql, volumeId);
  }

  activeWrappedKey(coi: string): Promise<workgroupKeys.WrappedWorkgroupKey | null> {
    return workgroupKeys.activeWrappedKey(this.#sql, coi);
  }

  workgroupKeysWithMaterial(ids: readonly string[]): Promise<string[]> {
    return workgroupKeys.workgroupKeysWithMaterial(this.#sql, ids);
  }

  createVirtualDisk(input: virtualDisks.NewVirtualDisk): Promise<virtualDisks.VirtualDiskRecord> {
    return virtualDisks.createVirtualDisk(this.#sql, input);
  }

  getVirtualDisk(name: string): Promise<virtualDisks.VirtualDiskRecord> {
    return virtualDisks.getVirtualDisk(this.#sql, name);
  }

  removeVirtualDisk(name: string): Promise<void> {
    return virtualDisks.removeVirtualDisk(this.#sql, name);
  }

  listVirtualDisks(filter?: virtualDisks.VirtualDiskFilter): Promise<virtualDisks.VirtualDiskRecord[]> {
    return virtualDisks.listVirtualDisks(this.#sql, filter);
  }

  recordCertificate(input: Omit<certificates.CertificateRow, 'revokedAt'>): Promise<void> {
    return certificates.recordCertificate(this.#sql, input);
  }

  findCertificate(serial: string): Promise<certificates.CertificateRow | null> {
    return certificates.findCertificate(this.#sql, serial);
  }

  /** null if never recorded; revoking twice keeps the first time. */
  revokeCertificate(serial: string, at: Date): Promise<certificates.CertificateRow | null> {
    return certificates.revokeCertificate(this.#sql, serial, at);
  }

  listCertificates(): Promise<certificates.CertificateRow[]> {
    return certificates.listCertificates(this.#sql);
  }

  addLocalUser(input: { readonly name: string; readonly passwordHash: string; readonly at: Date }): Promise<void> {
    return localUsers.addLocalUser(this.#sql, input);
  }

  setLocalUserPasswordHash(name: string, passwordHash: string, at: Date): Promise<void> {
    return localUsers.setLocalUserPasswordHash(this.#sql, name, passwordHash, at);
  }

  getLocalUserPasswordHash(name: string): Promise<string | null> {
    return localUsers.getLocalUserPasswordHash(this.#sql, name);
  }

  removeLocalUser(name: string): Promise<void> {
    return localUsers.removeLocalUser(this.#sql, name);
  }

  listLocalUsers(): Promise<localUsers.LocalUserRecord[]> {
    return localUsers.listLocalUsers(this.#sql);
  }

  /** Later calls fail with SV_STORE_UNAVAILABLE. */
  close(): Promise<void> {
    return this.#sql.close();
  }
}

export async function openStore(config: StoreConfig): Promise<Store> {
  if (config?.kind === 'pglite') {
    if (config.dataDir !== null && typeof config.dataDir !== 'string') {
      fail(ErrorCode.InvalidArgument, 'store.dataDir must be a path or null', { field: 'store.dataDir' });
    }
    return await Store.open(await openPgliteSql(config.dataDir));
  }
  if (config?.kind === 'postgres') return await Store.open(openPgSql(config.connectionString));
  fail(ErrorCode.InvalidArgument, 'store.kind must be pglite or postgres', { field: 'store.kind' });
}
