/**
 * Virtual disks: a volume presented to one COI under an NBD export name. A volume may be
 * presented to several COIs, each once; the export name is unique across the appliance.
 */
import { ErrorCode, fail, isStripvaultError } from '../errors.ts';
import { rowDate, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';
import { checkName, checkText, checkUuid } from './validate.ts';
import { checkDate } from './key-set.ts';

/**
 * The NBD spec allows export names up to 4096 bytes; ours also name disks in the admin UI, log
 * lines and file names, so they keep to a file name's 255 bytes.
 */
export const exportNameBytesMax = 255;
/** Most COI names one listVirtualDisks filter takes. */
export const coiFilterNamesMax = 1000;

export interface VirtualDiskRecord {
  readonly name: string;
  readonly volumeId: string;
  readonly volumeName: string;
  readonly coiId: string;
  readonly coi: string;
  readonly createdAt: Date;
}

export interface NewVirtualDisk {
  readonly name: string;
  readonly volumeId: string;
  readonly coi: string;
  readonly createdAt: Date;
}

export interface VirtualDiskFilter {
  readonly volumeId?: string;
  readonly coi?: string;
  /** Disks of any of these COIs (e.g. a member's). */
  readonly cois?: readonly string[];
}

/** An NBD export name: 1..255 bytes of UTF-8, no NUL, control or format characters. */
export function checkVirtualDiskName(value: unknown, field = 'virtualDisk.name'): string {
  return checkText(value, field, exportNameBytesMax);
}

const diskColumns = `d.name, d.volume_id::text AS volume_id, v.name AS volume_name, d.coi_id::text AS coi_id, c.name AS coi, d.created_at`;
const diskJoins = `virtual_disks d JOIN volumes v ON v.id = d.volume_id JOIN cois c ON c.id = d.coi_id`;

function diskFromRow(row: Row): VirtualDiskRecord {
  return {
    name: rowString(row, 'name'),
    volumeId: rowString(row, 'volume_id'),
    volumeName: rowString(row, 'volume_name'),
    coiId: rowString(row, 'coi_id'),
    coi: rowString(row, 'coi'),
    createdAt: rowDate(row, 'created_at'),
  };
}

/**
 * Records a virtual disk. The volume and the COI must exist (SV_STORE_NOT_FOUND) and the COI
 * must have an active workgroup key (SV_KEY_DESTROYED); a taken name, or the volume already
 * presented to that COI, is SV_STORE_CONFLICT.
 */
export async function createVirtualDisk(sql: Sql, input: NewVirtualDisk): Promise<VirtualDiskRecord> {
  const name = checkVirtualDiskName(input?.name);
  const volumeId = checkUuid(input.volumeId, 'virtualDisk.volumeId');
  const coi = checkName(input.coi, 'virtualDisk.coi');
  const createdAt = checkDate(input.createdAt, 'virtualDisk.createdAt');
  try {
    return await sql.transaction(async (tx) => {
      // Share locks: the volume and the COI cannot be removed until we commit.
      const volumes = await tx.query<Row>('SELECT id FROM volumes WHERE id = $1 FOR SHARE', [volumeId]);
      if (volumes.length === 0) fail(ErrorCode.StoreNotFound, `no volume ${volumeId}`, { volume: volumeId });
      const cois = await tx.query<Row>(
        `SELECT c.id::text AS id, (SELECT k.id FROM workgroup_keys k WHERE k.coi_id = c.id AND k.state = 'active') AS active_key_id
           FROM cois c WHERE c.name = $1 FOR SHARE`,
        [coi],
      );
      const coiRow = cois[0];
      if (coiRow === undefined) fail(ErrorCode.StoreNotFound, `no COI "${coi}"`, { coi });
      if (coiRow['active_key_id'] === null) fail(ErrorCode.KeyDestroyed, `COI "${coi}" has no active workgroup key`, { coi });
      await tx.query('INSERT INTO virtual_disks (name, volume_id, coi_id, created_at) VALUES ($1, $2, $3, $4)', [
        name,
        volumeId,
        rowString(coiRow, 'id'),
        createdAt,
      ]);
      const rows = await tx.query<Row>(`SELECT ${diskColumns} FROM ${diskJoins} WHERE d.name = $1`, [name]);
      return diskFromRow(rows[0]!);
    });
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.['constraint'] === 'virtual_disks_pkey') {
      fail(ErrorCode.StoreConflict, `a virtual disk named "${name}" already exists`, { virtualDisk: name }, e);
    }
    if (isStripvaultError(e, ErrorCode.StoreConflict) && e.detail?.['constraint'] === 'virtual_disks_volume_id_coi_id_key') {
      fail(ErrorCode.StoreConflict, `volume ${volumeId} is already presented to COI "${coi}"`, { volume: volumeId, coi }, e);
    }
    throw e;
  }
}

/** SV_STORE_NOT_FOUND if absent. */
export async function getVirtualDisk(sql: Sql, name: string): Promise<VirtualDiskRecord> {
  const diskName = checkVirtualDiskName(name);
  const rows = await sql.query<Row>(`SELECT ${diskColumns} FROM ${diskJoins} WHERE d.name = $1`, [diskName]);
  const row = rows[0];
  if (row === undefined) fail(ErrorCode.StoreNotFound, `no virtual disk "${diskName}"`, { virtualDisk: diskName });
  return diskFromRow(row);
}

/** SV_STORE_NOT_FOUND if absent. */
export async function removeVirtualDisk(sql: Sql, name: string): Promise<void> {
  const diskName = checkVirtualDiskName(name);
  const rows = await sql.query<Row>('DELETE FROM virtual_disks WHERE name = $1 RETURNING name', [diskName]);
  if (rows.length === 0) fail(ErrorCode.StoreNotFound, `no virtual disk "${diskName}"`, { virtualDisk: diskName });
}

/** By name; every filter given must hold. */
export async function listVirtualDisks(sql: Sql, filter: VirtualDiskFilter = {}): Promise<VirtualDiskRecord[]> {
  const volumeId = filter.volumeId === undefined ? null : checkUuid(filter.volumeId, 'filter.volumeId');
  const coi = filter.coi === undefined ? null : checkName(filter.coi, 'filter.coi');
  let cois: string | null = null;
  if (filter.cois !== undefined) {
    if (!Array.isArray(filter.cois) || filter.cois.length > coiFilterNamesMax) {
      fail(ErrorCode.InvalidArgument, `filter.cois: must be an array of at most ${coiFilterNamesMax}`, { field: 'filter.cois' });
    }
    cois = JSON.stringify(filter.cois.map((c) => checkName(c, 'filter.cois[]')));
  }
  const rows = await sql.query<Row>(
    `SELECT ${diskColumns} FROM ${diskJoins}
      WHERE ($1::uuid IS NULL OR d.volume_id = $1) AND ($2::text IS NULL OR c.name = $2)
        AND ($3::jsonb IS NULL OR c.name IN (SELECT jsonb_array_elements_text($3::jsonb)))
      ORDER BY d.name`,
    [volumeId, coi, cois],
  );
  return rows.map(diskFromRow);
}
