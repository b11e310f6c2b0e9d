/**
 * What the NBD server serves. The volume layer (virtual disks) implements
 * NbdExport; tests use memory-export.ts. The session validates every request
 * (range, alignment, flags, read-only) before calling in, so a backend only
 * sees well-formed calls:
 *  - read/write: offset and length aligned to blockSizeMin, within the export,
 *    length <= min(blockSizeMax, requestBytesMax);
 *  - trim/writeZeroes/cache/blockStatus: within the export, aligned to
 *    blockSizeMin, any length (they carry no payload, so they are not capped);
 *  - zero-length requests never reach the backend;
 *  - calls may run concurrently, also overlapping ones: ordering between
 *    overlapping writes is the client's business, as on a real disk.
 * A backend reports failure by throwing; appliance/nbd/errors.ts turns the
 * StripvaultError code into the NBD error the client sees.
 */
import { ErrorCode, fail } from '../errors.ts';
import type { NbdPeer } from './peer.ts';
import { blockSizeMinLimit, blockSizePreferredFloor, stringBytesMax } from './protocol.ts';

export interface NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly sizeBytes: number;
  readonly blockSizeMin: number;
  readonly blockSizePreferred: number;
  readonly blockSizeMax: number;
  readonly readOnly: boolean;
  /** true if consistent across connections (flush/FUA visible to every connection) */
  readonly multiConn: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * `data` is lent for the call only: the session reuses its memory for another request once the
   * promise settles, so an export must copy whatever it keeps.
   */
  write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, opts: { fua: boolean }): Promise<void>;
  writeZeroes(offset: number, length: number, opts: { fua: boolean; noHole: boolean }): Promise<void>;
  cache?(offset: number, length: number): Promise<void>;
  /** base:allocation extents covering [offset, offset+length), flags per spec (HOLE=1, ZERO=2) */
  blockStatus?(offset: number, length: number): Promise<Array<{ length: number; flags: number }>>;
}

/**
 * What a peer may see and open. Both calls answer for one peer: an export the peer may not open
 * must be absent from `list` and `undefined` from `get`, exactly as an export that does not exist,
 * so a client cannot learn the names of disks it has no access to. Either may throw; SV_SEALED
 * reaches the client as NBD_REP_ERR_POLICY with a message saying so.
 */
export interface ExportRegistry {
  list(peer: NbdPeer): NbdExport[] | Promise<NbdExport[]>;
  get(name: string, peer: NbdPeer): NbdExport | undefined | Promise<NbdExport | undefined>;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/**
 * The spec's constraints on what we advertise (see "Size constraints"). An
 * export that breaks them is a configuration bug: we refuse to serve it
 * rather than send a client numbers it may not survive.
 */
export function checkExport(e: NbdExport): void {
  const detail = { export: e.name };
  if (Buffer.byteLength(e.name, 'utf8') > stringBytesMax || e.name.includes('\0')) {
    fail(ErrorCode.InvalidArgument, 'export name is not a valid NBD string', detail);
  }
  if (!Number.isSafeInteger(e.sizeBytes) || e.sizeBytes < 0) fail(ErrorCode.InvalidArgument, 'export size must be a non-negative integer', detail);
  if (!isPowerOfTwo(e.blockSizeMin) || e.blockSizeMin > blockSizeMinLimit) {
    fail(ErrorCode.InvalidArgument, `minimum block size must be a power of two <= ${blockSizeMinLimit}`, { ...detail, blockSizeMin: e.blockSizeMin });
  }
  if (!isPowerOfTwo(e.blockSizePreferred) || e.blockSizePreferred < Math.max(e.blockSizeMin, blockSizePreferredFloor)) {
    fail(ErrorCode.InvalidArgument, 'preferred block size must be a power of two >= max(minimum, 512)', { ...detail, blockSizePreferred: e.blockSizePreferred });
  }
  if (!Number.isSafeInteger(e.blockSizeMax) || e.blockSizeMax < e.blockSizePreferred || e.blockSizeMax > 0xffffffff) {
    fail(ErrorCode.InvalidArgument, 'maximum payload must be >= the preferred block size and fit 32 bits', { ...detail, blockSizeMax: e.blockSizeMax });
  }
}

/** A fixed set of exports, the same for every peer; `defaultName` is what the empty name (the spec's "default export") opens. */
export function staticExportRegistry(exports: readonly NbdExport[], defaultName?: string): ExportRegistry {
  const byName = new Map<string, NbdExport>();
  for (const e of exports) {
    if (byName.has(e.name)) fail(ErrorCode.InvalidArgument, 'duplicate export name', { export: e.name });
    byName.set(e.name, e);
  }
  return {
    list: () => [...byName.values()],
    get: (name) => byName.get(name === '' && defaultName !== undefined ? defaultName : name),
  };
}
