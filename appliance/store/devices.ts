/** Storage devices: where strips live (a local file, a block device, or a remote NBD export). */
import { randomUUID } from 'node:crypto';
import { assert, ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowInteger, rowOneOf, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkIdOrName, checkInteger, checkName, checkOneOf, checkText, checkUuid, pathBytesMax } from './validate.ts';

export const deviceKinds = ['file', 'block', 'nbd'] as const;
export type DeviceKind = (typeof deviceKinds)[number];
export const deviceStates = ['online', 'offline', 'failed'] as const;
export type DeviceState = (typeof deviceStates)[number];

export interface DeviceRecord {
  readonly id: string;
  readonly name: string;
  readonly kind: DeviceKind;
  /** Absolute path for file and block devices; an NBD URI for nbd. */
  readonly path: string;
  readonly sizeBytes: number;
  readonly state: DeviceState;
  readonly createdAt: Date;
}

export interface NewDevice {
  readonly name: string;
  readonly kind: DeviceKind;
  readonly path: string;
  readonly sizeBytes: number;
}

// Schemes of the NBD URI specification (plain, TLS, and their Unix-socket forms).
const nbdUriPattern = /^nbds?(\+unix)?:\/\/./;

function checkPath(kind: DeviceKind, value: unknown): string {
  const path = checkText(value, 'device.path', pathBytesMax);
  if (kind === 'nbd') {
    if (!nbdUriPattern.test(path)) fail(ErrorCode.InvalidArgument, 'device.path: an nbd device needs an nbd:// or nbds:// URI', { field: 'device.path' });
  } else if (!path.startsWith('/')) {
    // The store is shared by a cluster: a relative path would mean something else on each appliance.
    fail(ErrorCode.InvalidArgument, 'device.path: must be an absolute path', { field: 'device.path' });
  }
  return path;
}

const columns = 'id, name, kind, path, size_bytes, state, created_at';

export function deviceFromRow(row: Row): DeviceRecord {
  return {
    id: rowString(row, 'id'),
    name: rowString(row, 'name'),
    kind: rowOneOf(row, 'kind', deviceKinds),
    path: rowString(row, 'path'),
    sizeBytes: rowInteger(row, 'size_bytes'),
    state: rowOneOf(row, 'state', deviceStates),
    createdAt: rowDate(row, 'created_at'),
  };
}

export async function addDevice(sql: Sql, input: NewDevice): Promise<DeviceRecord> {
  const name = checkName(input?.name, 'device.name');
  const kind = checkOneOf(input.kind, deviceKinds, 'device.kind');
  const path = checkPath(kind, input.path);
  const sizeBytes = checkInteger(input.sizeBytes, 'device.sizeBytes', 1);
  try {
    const rows = await sql.query<Row>(
      `INSERT INTO devices (id, name, kind, path, size_bytes) VALUES ($1, $2, $3, $4, $5) RETURNING ${columns}`,
      [randomUUID(), name, kind, path, sizeBytes],
    );
    const row = rows[0];
    assert(row !== undefined, 'INSERT ... RETURNING returned no row');
    return deviceFromRow(row);
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict)) {
      fail(ErrorCode.StoreConflict, `a device named "${name}" already exists`, { name }, e);
    }
    throw e;
  }
}

export async function listDevices(sql: Sql): Promise<DeviceRecord[]> {
  const rows = await sql.query<Row>(`SELECT ${columns} FROM devices ORDER BY name`);
  return rows.map(deviceFromRow);
}

export async function getDevice(sql: Sql, idOrName: string): Promise<DeviceRecord> {
  const key = checkIdOrName(idOrName, 'device');
  const rows = await sql.query<Row>(`SELECT ${columns} FROM devices WHERE id = $1 OR name = $2`, [key.id, key.name]);
  const row = rows[0];
  if (row === undefined) fail(ErrorCode.StoreNotFound, `no device "${idOrName}"`, { device: idOrName });
  return deviceFromRow(row);
}

export async function setDeviceState(sql: Sql, id: string, state: DeviceState): Promise<void> {
  const deviceId = checkUuid(id, 'device.id');
  const newState = checkOneOf(state, deviceStates, 'device.state');
  const rows = await sql.query<Row>('UPDATE devices SET state = $2 WHERE id = $1 RETURNING id', [deviceId, newState]);
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no device ${deviceId}`, { device: deviceId });
}

/** Volumes named in a "device in use" message; the detail lists them all. */
const inUseNamesShown = 8;

/** Refused while any strip lives on the device: remove or move those volumes first. */
export async function removeDevice(sql: Sql, id: string): Promise<void> {
  const deviceId = checkUuid(id, 'device.id');
  await sql.transaction(async (tx) => {
    // The row lock orders us against createVolume, which locks the devices it places strips on.
    const found = await tx.query<Row>('SELECT id FROM devices WHERE id = $1 FOR UPDATE', [deviceId]);
    if (found.length === 0) fail(ErrorCode.StoreNotFound, `no device ${deviceId}`, { device: deviceId });
    const users = await tx.query<Row>(
      'SELECT DISTINCT v.name FROM strips s JOIN volumes v ON v.id = s.volume_id WHERE s.device_id = $1 ORDER BY v.name',
      [deviceId],
    );
    if (users.length > 0) {
      const volumes = users.map((row) => rowString(row, 'name'));
      const shown = volumes.slice(0, inUseNamesShown).join(', ') + (volumes.length > inUseNamesShown ? ', ...' : '');
      fail(ErrorCode.StoreConflict, `device ${deviceId} holds strips of volume(s) ${shown}`, { device: deviceId, volumes });
    }
    await tx.query('DELETE FROM devices WHERE id = $1', [deviceId]);
  });
}
