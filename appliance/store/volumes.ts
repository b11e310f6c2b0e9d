/**
 * Volumes and their strips. A volume is created with all N strips in one transaction, and the
 * strips' device regions are checked against the device size and every other strip on that
 * device, so two volumes can never be placed on the same bytes.
 */
import { randomUUID } from 'node:crypto';
import { assert, ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { sharesMax, validateBlockBytes, validateGeometry } from '../split/geometry.ts';
import { rowDate, rowInteger, rowOneOf, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkIdOrName, checkInteger, checkName, checkOneOf, checkUuid } from './validate.ts';

export const volumeStates = ['online', 'degraded', 'failed', 'offline'] as const;
export type VolumeState = (typeof volumeStates)[number];
export const stripStates = ['healthy', 'stale', 'missing', 'rebuilding', 'failed'] as const;
export type StripState = (typeof stripStates)[number];

export interface StripRecord {
  readonly index: number;
  readonly deviceId: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly state: StripState;
}

export interface VolumeRecord {
  readonly id: string;
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly state: VolumeState;
  readonly epoch: number;
  readonly generationReserved: number;
  readonly createdAt: Date;
  /** Where the scheduled scrub resumes (0: no pass under way). */
  readonly scrubNextBlock: number;
  /** When the last whole scrub pass finished (null: never). */
  readonly scrubCompletedAt: Date | null;
  /** Ordered by index, exactly n of them. */
  readonly strips: readonly StripRecord[];
}

export interface NewStrip {
  readonly index: number;
  readonly deviceId: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export interface NewVolume {
  /** Given when the id already exists elsewhere (e.g. in strip headers being imported). */
  readonly id?: string;
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly strips: readonly NewStrip[];
}

export interface StripPlacement {
  readonly volumeId: string;
  readonly index: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

function invalid(field: string, message: string): never {
  fail(ErrorCode.InvalidArgument, `${field}: ${message}`, { field });
}

function checkStrips(value: unknown, n: number): NewStrip[] {
  if (!Array.isArray(value)) invalid('volume.strips', 'must be an array');
  if (value.length !== n) invalid('volume.strips', `must have exactly n=${n} entries, got ${value.length}`);
  const strips = value.map((strip: Partial<NewStrip> | null | undefined, i): NewStrip => {
    if (typeof strip !== 'object' || strip === null) invalid(`volume.strips[${i}]`, 'must be an object');
    const offsetBytes = checkInteger(strip.offsetBytes, `volume.strips[${i}].offsetBytes`, 0);
    const lengthBytes = checkInteger(strip.lengthBytes, `volume.strips[${i}].lengthBytes`, 1);
    checkInteger(offsetBytes + lengthBytes, `volume.strips[${i}] end (offsetBytes + lengthBytes)`, 1);
    return {
      index: checkInteger(strip.index, `volume.strips[${i}].index`, 0, n - 1),
      deviceId: checkUuid(strip.deviceId, `volume.strips[${i}].deviceId`),
      offsetBytes,
      lengthBytes,
    };
  });
  if (new Set(strips.map((s) => s.index)).size !== n) invalid('volume.strips', 'indices must be 0..n-1, each once');
  // Strips of one volume on one device would let one device failure take out two shares.
  if (new Set(strips.map((s) => s.deviceId)).size !== n) invalid('volume.strips', 'every strip must be on a different device');
  return strips.sort((a, b) => a.index - b.index);
}

const volumeColumns = `v.id, v.name, v.m, v.n, v.size_bytes, v.block_size, v.state, v.epoch, v.generation_reserved, v.created_at,
  v.scrub_next_block, v.scrub_completed_at,
  s.strip_index, s.device_id, s.offset_bytes, s.length_bytes, s.state AS strip_state`;

/** One row per strip, volumes grouped in row order; one statement so volume and strips agree. */
function volumesFromRows(rows: readonly Row[]): VolumeRecord[] {
  const volumes: VolumeRecord[] = [];
  let current: (VolumeRecord & { strips: StripRecord[] }) | null = null;
  for (const row of rows) {
    const id = rowString(row, 'id');
    if (current === null || current.id !== id) {
      current = {
        id,
        name: rowString(row, 'name'),
        m: rowInteger(row, 'm'),
        n: rowInteger(row, 'n'),
        sizeBytes: rowInteger(row, 'size_bytes'),
        blockSize: rowInteger(row, 'block_size'),
        state: rowOneOf(row, 'state', volumeStates),
        epoch: rowInteger(row, 'epoch'),
        generationReserved: rowInteger(row, 'generation_reserved'),
        createdAt: rowDate(row, 'created_at'),
        scrubNextBlock: rowInteger(row, 'scrub_next_block'),
        scrubCompletedAt: row['scrub_completed_at'] === null ? null : rowDate(row, 'scrub_completed_at'),
        strips: [],
      };
      volumes.push(current);
    }
    current.strips.push({
      index: rowInteger(row, 'strip_index'),
      deviceId: rowString(row, 'device_id'),
      offsetBytes: rowInteger(row, 'offset_bytes'),
      lengthBytes: rowInteger(row, 'length_bytes'),
      state: rowOneOf(row, 'strip_state', stripStates),
    });
  }
  for (const volume of volumes) {
    assert(volume.strips.length === volume.n, `volume ${volume.id} has ${volume.strips.length} strips, n=${volume.n}`);
    volume.strips.forEach((strip, i) => assert(strip.index === i, `volume ${volume.id} strip order`));
  }
  return volumes;
}

async function selectVolumes(sql: Sql, where: string, params: (string | null)[]): Promise<VolumeRecord[]> {
  const rows = await sql.query<Row>(
    `SELECT ${volumeColumns} FROM volumes v JOIN strips s ON s.volume_id = v.id ${where} ORDER BY v.name, v.id, s.strip_index`,
    params,
  );
  return volumesFromRows(rows);
}

/** Locks the device row (ordering us against removeDevice and other placements) and checks the region. */
async function reserveRegion(tx: Sql, strip: NewStrip, moving?: { volumeId: string }): Promise<void> {
  const devices = await tx.query<Row>('SELECT size_bytes FROM devices WHERE id = $1 FOR UPDATE', [strip.deviceId]);
  const device = devices[0];
  if (device === undefined) fail(ErrorCode.StoreNotFound, `no device ${strip.deviceId} for strip ${strip.index}`, { device: strip.deviceId });
  const deviceBytes = rowInteger(device, 'size_bytes');
  const end = strip.offsetBytes + strip.lengthBytes;
  if (end > deviceBytes) {
    fail(ErrorCode.OutOfRange, `strip ${strip.index} ends at byte ${end}, past the end of device ${strip.deviceId} (${deviceBytes} bytes)`, {
      device: strip.deviceId,
      index: strip.index,
    });
  }
  // A strip being moved does not conflict with where it is now.
  const overlapping = await tx.query<Row>(
    `SELECT v.name, s.strip_index FROM strips s JOIN volumes v ON v.id = s.volume_id
      WHERE s.device_id = $1 AND s.offset_bytes < $2 AND $3 < s.offset_bytes + s.length_bytes
        AND NOT (s.volume_id::text = $4 AND s.strip_index = $5) LIMIT 1`,
    [strip.deviceId, end, strip.offsetBytes, moving?.volumeId ?? '', moving ? strip.index : -1],
  );
  const other = overlapping[0];
  if (other !== undefined) {
    const otherName = rowString(other, 'name');
    fail(ErrorCode.StoreConflict, `strip ${strip.index} overlaps strip ${rowInteger(other, 'strip_index')} of volume "${otherName}" on device ${strip.deviceId}`, {
      device: strip.deviceId,
      volume: otherName,
    });
  }
}

export async function createVolume(sql: Sql, input: NewVolume): Promise<VolumeRecord> {
  const id = input?.id === undefined ? randomUUID() : checkUuid(input.id, 'volume.id');
  const name = checkName(input.name, 'volume.name');
  // Same rules as the split engine, so a volume the store accepts is one the volume layer can build.
  const { m, n } = validateGeometry(input.m, input.n);
  const blockSize = validateBlockBytes(input.blockSize);
  const sizeBytes = checkInteger(input.sizeBytes, 'volume.sizeBytes', blockSize);
  if (sizeBytes % blockSize !== 0) invalid('volume.sizeBytes', `must be a multiple of blockSize (${blockSize})`);
  const strips = checkStrips(input.strips, n);
  try {
    return await sql.transaction(async (tx) => {
      // Lock devices in one global order so concurrent placements cannot deadlock.
      for (const strip of [...strips].sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1))) await reserveRegion(tx, strip);
      await tx.query('INSERT INTO volumes (id, name, m, n, size_bytes, block_size) VALUES ($1, $2, $3, $4, $5, $6)', [
        id,
        name,
        m,
        n,
        sizeBytes,
        blockSize,
      ]);
      for (const strip of strips) {
        await tx.query('INSERT INTO strips (volume_id, strip_index, device_id, offset_bytes, length_bytes) VALUES ($1, $2, $3, $4, $5)', [
          id,
          strip.index,
          strip.deviceId,
          strip.offsetBytes,
          strip.lengthBytes,
        ]);
      }
      const [created, ...extra] = await selectVolumes(tx, 'WHERE v.id = $1', [id]);
      assert(created !== undefined && extra.length === 0, 'created volume reads back once');
      return created;
    });
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.constraint === 'volumes_name_key') {
      fail(ErrorCode.StoreConflict, `a volume named "${name}" already exists`, { name }, e);
    }
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.constraint === 'volumes_pkey') {
      fail(ErrorCode.StoreConflict, `a volume with id ${id} already exists`, { id }, e);
    }
    throw e;
  }
}

export async function listVolumes(sql: Sql): Promise<VolumeRecord[]> {
  return await selectVolumes(sql, '', []);
}

export async function getVolume(sql: Sql, idOrName: string): Promise<VolumeRecord> {
  const key = checkIdOrName(idOrName, 'volume');
  const volumes = await selectVolumes(sql, 'WHERE v.id = $1 OR v.name = $2', [key.id, key.name]);
  const volume = volumes[0];
  if (volume === undefined) fail(ErrorCode.StoreNotFound, `no volume "${idOrName}"`, { volume: idOrName });
  return volume;
}

function notFound(volumeId: string): never {
  fail(ErrorCode.StoreNotFound, `no volume ${volumeId}`, { volume: volumeId });
}

/** Removes the volume and its strips, freeing their device regions. */
export async function removeVolume(sql: Sql, id: string): Promise<void> {
  const volumeId = checkUuid(id, 'volume.id');
  const rows = await sql.query<Row>('DELETE FROM volumes WHERE id = $1 RETURNING id', [volumeId]);
  if (rows.length === 0) notFound(volumeId);
}

/** Records scrub progress: where to resume, and (at the end of a whole pass) when it finished. */
export async function setScrubCursor(sql: Sql, id: string, nextBlock: number, completedAt?: Date): Promise<void> {
  const volumeId = checkUuid(id, 'volume.id');
  const next = checkInteger(nextBlock, 'volume.scrubNextBlock', 0, Number.MAX_SAFE_INTEGER);
  const rows =
    completedAt === undefined
      ? await sql.query<Row>('UPDATE volumes SET scrub_next_block = $2 WHERE id = $1 RETURNING id', [volumeId, next])
      : await sql.query<Row>('UPDATE volumes SET scrub_next_block = $2, scrub_completed_at = $3 WHERE id = $1 RETURNING id', [volumeId, next, completedAt]);
  if (rows.length === 0) notFound(volumeId);
}

export async function setVolumeState(sql: Sql, id: string, state: VolumeState): Promise<void> {
  const volumeId = checkUuid(id, 'volume.id');
  const newState = checkOneOf(state, volumeStates, 'volume.state');
  const rows = await sql.query<Row>('UPDATE volumes SET state = $2 WHERE id = $1 RETURNING id', [volumeId, newState]);
  if (rows.length === 0) notFound(volumeId);
}

export async function setStripState(sql: Sql, volumeId: string, index: number, state: StripState): Promise<void> {
  const id = checkUuid(volumeId, 'volume.id');
  const stripIndex = checkInteger(index, 'strip.index', 0, sharesMax - 1);
  const newState = checkOneOf(state, stripStates, 'strip.state');
  const rows = await sql.query<Row>('UPDATE strips SET state = $3 WHERE volume_id = $1 AND strip_index = $2 RETURNING strip_index', [
    id,
    stripIndex,
    newState,
  ]);
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no strip ${stripIndex} in volume ${id}`, { volume: id, index: stripIndex });
}

/**
 * Moves strip `index` of a volume to a new region (a replacement device): the region is checked and
 * reserved like a new volume's, must be on a device that holds no other strip of this volume, and
 * the strip starts out stale (it holds nothing until rebuilt).
 */
export async function moveStrip(sql: Sql, volumeId: string, to: NewStrip): Promise<void> {
  const id = checkUuid(volumeId, 'volume.id');
  const strip: NewStrip = {
    index: checkInteger(to?.index, 'strip.index', 0, sharesMax - 1),
    deviceId: checkUuid(to?.deviceId, 'strip.deviceId'),
    offsetBytes: checkInteger(to?.offsetBytes, 'strip.offsetBytes', 0),
    lengthBytes: checkInteger(to?.lengthBytes, 'strip.lengthBytes', 1),
  };
  await sql.transaction(async (tx) => {
    const others = await tx.query<Row>('SELECT strip_index FROM strips WHERE volume_id = $1 AND device_id = $2 AND strip_index <> $3', [
      id,
      strip.deviceId,
      strip.index,
    ]);
    if (others.length > 0) invalid('strip.deviceId', `device already holds strip ${rowInteger(others[0]!, 'strip_index')} of this volume`);
    await reserveRegion(tx, strip, { volumeId: id });
    const rows = await tx.query<Row>(
      `UPDATE strips SET device_id = $3, offset_bytes = $4, length_bytes = $5, state = 'stale'
        WHERE volume_id = $1 AND strip_index = $2 RETURNING strip_index`,
      [id, strip.index, strip.deviceId, strip.offsetBytes, strip.lengthBytes],
    );
    if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no strip ${strip.index} in volume ${id}`, { volume: id, index: strip.index });
  });
}

/**
 * Hands out a range of `count` generations starting at or above `min` and above every range handed
 * out before, atomically: two appliances that open the same volume get disjoint ranges, so share
 * nonces never repeat between them. Returns the exclusive end; the range is [end - count, end).
 */
export async function allocateGenerations(sql: Sql, volumeId: string, min: number, count: number): Promise<number> {
  const id = checkUuid(volumeId, 'volume.id');
  const floor = checkInteger(min, 'generation.min', 0);
  const n = checkInteger(count, 'generation.count', 1);
  const rows = await sql.query<Row>(
    'UPDATE volumes SET generation_reserved = GREATEST(generation_reserved, $2) + $3 WHERE id = $1 RETURNING generation_reserved',
    [id, floor, n],
  );
  const row = rows[0];
  if (row === undefined) notFound(id);
  return rowInteger(row, 'generation_reserved');
}

/**
 * Failover's fence: only the appliance that read epoch `expected` can move it to `next`, and
 * epochs only go up. Returns false if someone else moved it first.
 */
export async function compareAndSetEpoch(sql: Sql, volumeId: string, expected: number, next: number): Promise<boolean> {
  const id = checkUuid(volumeId, 'volume.id');
  const from = checkInteger(expected, 'epoch.expected', 0);
  const to = checkInteger(next, 'epoch.next', 0);
  if (to <= from) invalid('epoch.next', `must be greater than expected (${from})`);
  const rows = await sql.query<Row>('UPDATE volumes SET epoch = $3 WHERE id = $1 AND epoch = $2 RETURNING id', [id, from, to]);
  if (rows.length > 0) return true;
  const exists = await sql.query<Row>('SELECT id FROM volumes WHERE id = $1', [id]);
  if (exists.length === 0) notFound(id);
  return false;
}

/** Regions in use on a device, by offset, so a caller can find free space for a new strip. */
export async function listStripsOnDevice(sql: Sql, deviceId: string): Promise<StripPlacement[]> {
  const id = checkUuid(deviceId, 'device.id');
  const rows = await sql.query<Row>(
    `SELECT d.id, s.volume_id, s.strip_index, s.offset_bytes, s.length_bytes
       FROM devices d LEFT JOIN strips s ON s.device_id = d.id WHERE d.id = $1 ORDER BY s.offset_bytes`,
    [id],
  );
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no device ${id}`, { device: id });
  return rows
    .filter((row) => row['volume_id'] !== null)
    .map((row) => ({
      volumeId: rowString(row, 'volume_id'),
      index: rowInteger(row, 'strip_index'),
      offsetBytes: rowInteger(row, 'offset_bytes'),
      lengthBytes: rowInteger(row, 'length_bytes'),
    }));
}
