/**
 * The metadata store: configuration and state shared by the appliances, over PostgreSQL or the
 * embedded PGlite. One schema (migrations.ts), one module per concept over the Sql seam; this
 * class only opens, migrates and delegates. Nothing secret lives here: keys stay wrapped elsewhere.
 */
import { ErrorCode, fail } from '../errors.ts';
import * as audit from './audit.ts';
import * as devices from './devices.ts';
import * as events from './events.ts';
import { migrate } from './migrations.ts';
import { openPgSql } from './pg-sql.ts';
import { openPgliteSql } from './pglite-sql.ts';
import type { SqlPool } from './sql.ts';
import * as volumes from './volumes.ts';
import type { NewStrip } from './volumes.ts';

export type { AuditHead, AuditRow, AuditTransaction } from './audit.ts';
export type { DeviceKind, DeviceRecord, DeviceState, NewDevice } from './devices.ts';
export type { EventQuery, EventRecord, NewEvent } from './events.ts';
export type { NewStrip, NewVolume, StripPlacement, StripRecord, StripState, VolumeRecord, VolumeState } from './volumes.ts';

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
