/**
 * A volume: N strips with an M-of-N redundancy, read and written as a byte-addressed disk.
 * Splits byte ranges into primary blocks, serialises overlapping operations, reads the cheapest M
 * strips first and the rest only when needed, writes every reachable strip, keeps generations
 * unique (generation-ledger.ts), and keeps serving while at least M strips answer.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, StripvaultError, assert, fail } from '../errors.ts';
import { validateBlockBytes, validateGeometry } from '../split/geometry.ts';
import { addressMax, volumeIdBytes } from '../split/share-binding.ts';
import { sharedBuffers } from '../split/shared-buffers.ts';
import { copyBytes, nativeSeal } from '../split/native-seal.ts';
import { openBatch, sealRuns, sealedRunOffsets, type BatchGeometry, type BatchShape, type BlockOutcome, type KeyTable, type SealRun, type SealRunsBatch } from '../split/batch.ts';
import type { IoStrip, SlotWrite } from '../split/io-batch.ts';
import { TickBatcher } from '../split/tick-batcher.ts';
import { HandleDevice } from '../device/handle-device.ts';
import { inlineRunner, workerStuckMessage, type SplitRunner } from '../split/split-pool.ts';
import { NotEnoughSharesError, sessionKeyBytes, type ShareRejection } from '../split/split.ts';
import { KeySlotState, addWrapper, newHeader, removeWrapper, type SessionKeySlot, type StripHeader, type Wrapper } from '../strip/header.ts';
import { dataOffset, keySlotsPerSection, sectionCountFor, sectionOfSlot, sectionsMax, slotBytesFor, stripBytesFor } from '../strip/layout.ts';
import { StatusCode } from '../strip/status-log.ts';
import { decodeSlot } from '../strip/slot.ts';
import { Strip, type StripLocation } from '../strip/strip.ts';
import { GenerationLedger, type GenerationRange } from './generation-ledger.ts';
import { RangeLock } from './range-lock.ts';
import { crashPoint } from '../crash-point.ts';
import { owlBlocksPerRecord, type Owl, type OwlEntry } from './owl.ts';
import { owlRecordBytes } from './owl-format.ts';
import { BlockCache, blockCacheBytesDefault, blockCacheBytesMax, type BlockCacheStats } from './block-cache.ts';

/** Blocks sealed or opened per device request: bounds memory per step and lets the event loop breathe. */
export const blocksPerIoMax = 256;
/** Blocks a turn must have per worker before its seals or reads are split across workers. */
export const blocksPerMessageMin = 16;
/** The largest share of the journal ring one group of records may take (see the recorder). */
export const owlGroupRingFractionMax = 1 / 4;
/** Slot bytes per worker write message: larger turns are cut so every worker copies a share. */
export const fdWriteBytesPerJob = 1024 * 1024;
/** A worker's strip I/O that takes longer is given up and redone through the devices (which fail the slow strip). */
export const fdIoTimeoutMs = 5_000;
/** Batches smaller than this are sealed/opened on the calling thread: a worker round trip costs more. */
export const poolBlocksMin = 4;
/**
 * Blocks of journal records sealed on the calling thread per turn of the event loop. Sealing a
 * 4 KiB block natively takes ~6 us; a worker round trip costs the main thread about as much as
 * sealing a dozen and adds two thread wake-ups to every write's latency (4 KiB random writes at
 * queue depth 32: +15 % IOPS sealed here). Counted per turn, not per group, so a busy turn's groups
 * beyond it (and sequential writes' large records) still go to the workers in parallel.
 */
export const sealInlineBlocksMax = 32;
/** Individual shares remembered as needing repair; past this the volume asks for a full scrub instead. */
export const repairListMax = 4096;
/** A strip operation (read, write, flush, header update) that takes longer fails the strip for the session. */
export const stripIoTimeoutMsDefault = 30_000;
export const stripIoTimeoutMsMax = 10 * 60_000;
/** A read asks one more strip when the M fastest have not answered within this many typical latencies ... */
export const hedgeLatencyFactor = 4;
/** ... but never sooner than this (timer granularity and jitter) ... */
export const hedgeDelayMsMin = 5;
/** ... nor later than this, whatever the history says. */
export const hedgeDelayMsMax = 250;
/** Latencies below this are noise (timer and event-loop jitter), not a difference in speed. */
export const latencyFloorMs = 2;
/** Weight of the newest sample in a strip's latency estimate. */
export const latencyWeight = 0.2;
/** A parity strip (index >= M) is preferred over a data strip only when this much faster: it costs a decode. */
export const readParityPenalty = 1.5;
/** A remote (NBD) strip is preferred over a local one only when this many times faster. */
export const readRemotePenalty = 4;
/** Longest single pause a rate-limited scrub takes, so it notices an abort promptly. */
export const scrubPauseMsMax = 1000;
/** Write-zeroes and trim proceed in pieces of this many blocks (bounded memory for any length). */
export const zeroPieceBlocks = 2048;
/** Largest single read or write request, in bytes. */
export const requestBytesMax = 64 * 1024 * 1024;

export type StripState = 'healthy' | 'stale' | 'missing' | 'failed';
/** As health() reports it: a stale strip being caught up by a running pass (scrub, rebuild, re-key) is rebuilding. */
export type StripHealthState = StripState | 'rebuilding';
export type VolumeState = 'healthy' | 'degraded' | 'rebuilding' | 'failed' | 'closed';

export interface StripHealth {
  readonly index: number;
  readonly state: StripHealthState;
  readonly reason?: string;
}

export interface RepairItem {
  readonly stripIndex: number;
  readonly address: number;
  readonly reason: ShareRejection['reason'];
}

export interface VolumeHealth {
  readonly state: VolumeState;
  readonly strips: readonly StripHealth[];
  /** Shares found bad by reads, each needing a rewrite. */
  readonly repair: readonly RepairItem[];
  /** More bad shares were seen than `repair` holds: scrub the whole volume. */
  readonly repairOverflow: boolean;
}

/** Hooks for whoever keeps volume state outside the strips (the metadata store). */
export interface VolumeHooks {
  /**
   * Atomically reserves `count` generations at or above `min` and above anything reserved before,
   * returning the exclusive end. With a shared store this keeps two openers' nonces apart.
   */
  allocateGenerations?(min: number, count: number): Promise<number>;
  onStripState?(index: number, state: StripState, reason: string | undefined): void | Promise<void>;
  /** Recovery replayed outstanding writes, or found a damaged record and stopped there. */
  onOwlRecovery?(report: OwlRecoveryReport): void | Promise<void>;
}

export interface OwlRecoveryReport {
  /** Records replayed onto the strips. */
  readonly replayed: number;
  /** Set when a record failed its checks: it and everything after it were not replayed. */
  readonly stoppedAt?: { readonly seq: number; readonly reason: string };
}

export interface ScrubOptions {
  /** Block to start at: where an interrupted scrub stopped (its report's nextBlock). */
  readonly fromBlock?: number;
  /** Primary bytes checked per second at most; absent or 0 means as fast as the strips allow. */
  readonly rateBytesPerSec?: number;
  /** Stops the scrub between chunks; the report says where to resume. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: ScrubProgress) => void;
}

export interface ScrubProgress {
  readonly blocksDone: number;
  readonly blocksTotal: number;
  /** Blocks rewritten because a share was corrupt, stale, torn or unreadable. */
  readonly blocksRepaired: number;
  /** Blocks with fewer than M good shares: reported, never rewritten with guessed data. */
  readonly blocksLost: number;
}

export interface ScrubReport extends ScrubProgress {
  /** First block not checked: blocksTotal when the pass finished. */
  readonly nextBlock: number;
  /** Addresses of lost blocks (at most repairListMax). */
  readonly lost: readonly number[];
  /** Strips that caught up during this pass and are no longer stale. */
  readonly caughtUp: readonly number[];
}

export interface CreateVolumeOptions {
  readonly id?: string;
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly sizeBytes: number;
  readonly blockBytes: number;
  /** One location per strip, in strip-index order. */
  readonly locations: readonly StripLocation[];
  /** Keys allowed to open the strips' headers (at least one). */
  readonly wrappers: readonly Wrapper[];
  /** Identifier of the appliance creating the volume, recorded in every label. */
  readonly originId?: Buffer;
  /** Set when the strip regions are known to read as zeros (freshly created sparse files). */
  readonly regionsZeroed?: boolean;
  readonly hooks?: VolumeHooks;
  /** Where seal/open batches run (a SplitPool to use every core); inline by default. */
  readonly runner?: SplitRunner;
  /** A strip operation taking longer fails that strip for the session (default stripIoTimeoutMsDefault). */
  readonly ioTimeoutMs?: number;
  /** Read local strips before remote (NBD) ones when both are about as fast (default true). */
  readonly preferLocalReads?: boolean;
  /** The volume's outstanding write list (an empty one); without it a crash mid-write can tear blocks. */
  readonly owl?: Owl;
  /** Bytes of recently written blocks kept in memory (default blockCacheBytesDefault; 0: none). */
  readonly cacheBytes?: number;
}

export interface OpenVolumeOptions {
  /** Where each strip should be, in strip-index order; null when its device is unavailable. */
  readonly locations: readonly (StripLocation | null)[];
  readonly wrappers: readonly Wrapper[];
  /** Refuse strips of any other volume. */
  readonly expectId?: string;
  readonly hooks?: VolumeHooks;
  /** The store's generation reservation, if it keeps one: the floor is the max of this and the strips'. */
  readonly generationFloor?: number;
  /** Strips the store knows missed writes (the strips' own headers may not all say so). */
  readonly staleStrips?: readonly number[];
  /** Where seal/open batches run (a SplitPool to use every core); inline by default. */
  readonly runner?: SplitRunner;
  /** A strip operation taking longer fails that strip for the session (default stripIoTimeoutMsDefault). */
  readonly ioTimeoutMs?: number;
  /** Read local strips before remote (NBD) ones when both are about as fast (default true). */
  readonly preferLocalReads?: boolean;
  /** The volume's outstanding write list: what it holds is replayed before the volume serves. */
  readonly owl?: Owl;
  /** Bytes of recently written blocks kept in memory (default blockCacheBytesDefault; 0: none). */
  readonly cacheBytes?: number;
}

interface Member {
  readonly index: number;
  strip: Strip | null;
  state: StripState;
  reason: string | undefined;
  /** Every generation below this is durably reserved in this strip's header: only those may be written to it. */
  durableReserved: number;
  /** Weighted mean read latency seen on this strip, ms (0: none yet). */
  latencyMs: number;
}

export function uuidToBytes(id: string): Buffer {
  const hex = id.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) fail(ErrorCode.InvalidArgument, `not a UUID: ${id}`);
  return Buffer.from(hex, 'hex');
}

export function bytesToUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Checks geometry, block size and volume size together, before anything is allocated or written. */
export function validateVolumeShape(v: { m: number; n: number; sizeBytes: number; blockBytes: number }): {
  m: number;
  n: number;
  blockBytes: number;
} {
  const { m, n } = validateGeometry(v.m, v.n);
  const blockBytes = validateBlockBytes(v.blockBytes);
  if (!Number.isSafeInteger(v.sizeBytes) || v.sizeBytes < blockBytes || v.sizeBytes % blockBytes !== 0) {
    fail(ErrorCode.InvalidArgument, `volume size ${v.sizeBytes} must be a positive multiple of the block size ${blockBytes}`);
  }
  return { m, n, blockBytes };
}

/** Bytes each strip of a volume with this geometry needs on its device. */
export function stripBytesForVolume(sizeBytes: number, blockBytes: number, m: number): number {
  return stripBytesFor(sizeBytes / blockBytes, blockBytes, m);
}

export class Volume {
  readonly id: string;
  readonly idBytes: Buffer;
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly blockBytes: number;
  readonly sizeBytes: number;
  readonly slotBytes: number;
  epoch: number;
  private readonly members: Member[];
  private readonly ledger: GenerationLedger;
  /**
   * A write holds its blocks until its shares are on the strips, which is after the journal's next
   * sync: while a request waits for one (a read or an overwrite of the same blocks, close), journal
   * syncs are not spaced by owlSyncIntervalMinMs.
   */
  private readonly lock = new RangeLock(() => this.owl?.urge());
  private readonly hooks: VolumeHooks;
  private readonly runner: SplitRunner;
  private readonly ioTimeoutMs: number;
  private readonly preferLocalReads: boolean;
  /** The keys that open this volume's strips: a replacement strip's header is wrapped under the same. */
  private wrappers: Wrapper[];
  private readonly repairs = new Map<string, RepairItem>();
  private repairOverflow = false;
  private closed = false;
  /** Set when close() starts: new requests are refused while in-flight ones drain. */
  private closing = false;
  /** Serialises header rewrites (reservations, stale marks): they rewrite the same header copies. */
  private headerWrites: Promise<void> = Promise.resolve();
  private readonly owl: Owl | null;
  private readonly cache: BlockCache;
  /** One retirement (strip flush + OWL superblock) at a time; later callers share the next. */
  private retiring: Promise<void> | null = null;
  /** Writes acknowledged at their journal record and still going out to the strips (see write()). */
  private readonly afterAck = new Set<Promise<void>>();
  /**
   * A write that failed after it was acknowledged. The client was told it succeeded, so reads of
   * older data or further writes would be wrong: every request fails until the volume is reopened
   * (its journal replay then finishes the write).
   */
  private lateFailure: StripvaultError | null = null;
  /** Scrub, rebuild or re-key passes running: stale strips being caught up show as rebuilding. */
  private passes = 0;
  /**
   * The journal records of one event-loop turn are written as groups (see TickBatcher): one
   * generation reservation, one seal (here or in one worker job), one strip-write job and one pass
   * of bookkeeping per group instead of per record. At a deep queue of 4 KiB writes, the per-record
   * promises, timers and device holds had cost more main-thread time than the NBD layer's whole
   * handling of a request.
   */
  private readonly recorder: TickBatcher<RecordWrite, void>;
  /** Blocks sealed on this thread since the current turn of the event loop began (see sealInlineBlocksMax). */
  private sealedInlineThisTurn = 0;
  /** Reads done by workers on the strips' descriptors, one turn's worth per message. */
  private readonly fdReader = new TickBatcher<FdReadItem, FdReadResult>({
    run: (items) => this.fdReadItems(items),
    weight: (item) => item.count,
    weightMax: blocksPerIoMax,
    weightMin: blocksPerMessageMin,
    parallelism: () => this.runner.parallelism,
    key: (item) => `${item.strips.map((s) => s.index).join(',')}/${item.stale.join(',')}`,
  });
  /** Slot writes done by workers on the strips' descriptors, one turn's worth per message. */
  private readonly fdWriter = new TickBatcher<FdWriteItem, (string | null)[]>({
    run: (items) => this.fdWriteItems(items),
    weight: (item) => item.writes.reduce((a, w) => a + w.data.length, 0),
    weightMax: fdWriteBytesPerJob,
    parallelism: () => this.runner.parallelism,
  });

  private constructor(
    first: Strip,
    members: Member[],
    epoch: number,
    floor: number,
    hooks: VolumeHooks,
    runner: SplitRunner,
    wrappers: readonly Wrapper[],
    ioTimeoutMs: number,
    preferLocalReads: boolean,
    owl: Owl | null,
    cacheBytes: number,
  ) {
    const label = first.label;
    this.idBytes = Buffer.from(label.volumeId);
    this.id = bytesToUuid(this.idBytes);
    this.name = first.header.body.info.name;
    this.m = label.m;
    this.n = label.n;
    this.blockBytes = label.blockBytes;
    this.sizeBytes = first.header.body.volumeBytes;
    this.slotBytes = label.slotBytes;
    this.epoch = epoch;
    this.members = members;
    this.hooks = hooks;
    this.runner = runner;
    // Our own copies: close() and wipeHeaders() zero them without touching the key manager's.
    this.wrappers = wrappers.map((w) => ({ id: Buffer.from(w.id), key: Buffer.from(w.key) }));
    this.ioTimeoutMs = ioTimeoutMs;
    this.preferLocalReads = preferLocalReads;
    this.ledger = new GenerationLedger(floor, (min, count) => this.reserveRange(min, count));
    this.owl = owl;
    // Weighed in journal bytes. A group's records are admitted to the ring together and none of
    // them completes before all are journalled, so a group must never need more of the ring than it
    // can get while it holds part of it: at most a quarter of the ring (with a wrap's skip, under
    // the half that appendAll allows), and at most blocksPerIoMax blocks (one seal job).
    const blockJournalBytes = this.n * this.slotBytes;
    this.recorder = new TickBatcher<RecordWrite, void>({
      run: (items) => this.writeGroup(items),
      weight: (item) => owlRecordBytes(item.count * blockJournalBytes),
      weightMax: Math.min(blocksPerIoMax * blockJournalBytes, owl === null ? Infinity : Math.floor(owl.ringBytes * owlGroupRingFractionMax)),
      // With the native seal, a turn of up to sealInlineBlocksMax one-block writes stays one group:
      // split "for the workers" it would still be sealed on this thread, only in two calls with two
      // journal runs and two strip-write jobs (randwrite 4k qd32: +3.5 %, 4 ABBA rounds). Without
      // it every group goes to a worker, and splitting a turn keeps them all busy.
      weightMin: nativeSeal.available ? sealInlineBlocksMax * owlRecordBytes(blockJournalBytes) : blocksPerMessageMin * blockJournalBytes,
      parallelism: () => this.runner.parallelism,
    });
    owl?.onFull(() => this.retireOwl());
    this.cache = new BlockCache(cacheBytes, this.blockBytes);
  }

  static async create(opts: CreateVolumeOptions): Promise<Volume> {
    const { m, n, blockBytes } = validateVolumeShape(opts);
    if (opts.locations.length !== n) fail(ErrorCode.InvalidArgument, `need ${n} strip locations, got ${opts.locations.length}`);
    if (new Set(opts.locations.map((l) => l.device)).size !== n) {
      fail(ErrorCode.InvalidArgument, 'every strip of a volume must be on a different storage device');
    }
    if (opts.wrappers.length < 1) fail(ErrorCode.InvalidArgument, 'a volume needs at least one wrapping key');
    const name = opts.name;
    if (typeof name !== 'string' || name.length < 1 || name.length > 200) fail(ErrorCode.InvalidArgument, 'bad volume name');
    const id = opts.id ?? randomUUID();
    const idBytes = uuidToBytes(id);
    assert(idBytes.length === volumeIdBytes, 'volume id length');
    const slotCount = opts.sizeBytes / blockBytes;
    const slotBytes = slotBytesFor(blockBytes, m);
    const stripBytes = stripBytesFor(slotCount, blockBytes, m);
    const sections = sectionCountFor(slotCount, slotBytes);
    // Checked before anything is written: a format that cannot finish must not start zeroing.
    if (slotCount - 1 > addressMax || sections > sectionsMax) {
      fail(ErrorCode.OutOfRange, `volume of ${opts.sizeBytes} bytes exceeds what a strip can address`, { slotCount, sections });
    }
    const originId = opts.originId ?? randomBytes(16);
    const createdAtMs = Date.now();
    const strips: Strip[] = [];
    for (let index = 0; index < n; index++) {
      const keys: SessionKeySlot[][] = [];
      for (let s = 0; s < sections; s++) keys.push(freshKeySlots());
      const header = newHeader(
        {
          volumeBytes: opts.sizeBytes,
          epoch: 1,
          generationReserved: 1,
          staleStrips: 0,
          sections: keys,
          info: { name, createdAt: new Date(createdAtMs).toISOString() },
        },
        opts.wrappers,
      );
      const label = { volumeId: idBytes, stripIndex: index, m, n, blockBytes, slotBytes, slotCount, stripBytes, dataOffset, originId, createdAtMs };
      const strip = await Strip.format(opts.locations[index]!, label, header, { zeroData: !opts.regionsZeroed });
      await strip.appendStatus(StatusCode.Created);
      strips.push(strip);
    }
    const members = strips.map((strip, index): Member => ({ index, strip, state: 'healthy', reason: undefined, durableReserved: 1, latencyMs: 0 }));
    if (opts.owl) {
      assert(opts.owl.volumeId.equals(idBytes) && opts.owl.outstanding.length === 0, 'a new volume gets an empty outstanding write list of its own');
    }
    return new Volume(
      strips[0]!,
      members,
      1,
      1,
      opts.hooks ?? {},
      opts.runner ?? inlineRunner,
      opts.wrappers,
      checkTimeout(opts.ioTimeoutMs),
      opts.preferLocalReads ?? true,
      opts.owl ?? null,
      checkCacheBytes(opts.cacheBytes),
    );
  }

  static async open(opts: OpenVolumeOptions): Promise<Volume> {
    const loaded: Array<{ index: number; strip: Strip | null; reason?: string }> = [];
    for (let index = 0; index < opts.locations.length; index++) {
      const loc = opts.locations[index];
      if (loc === null || loc === undefined) {
        loaded.push({ index, strip: null, reason: 'device unavailable' });
        continue;
      }
      try {
        const strip = await Strip.load(loc, opts.wrappers);
        const lab = strip.label;
        const body = strip.header.body;
        // The header is authentic, so a disagreement here is a writer's bug: keep the strip out.
        if (body.volumeBytes !== lab.slotCount * lab.blockBytes || body.sections.length !== sectionCountFor(lab.slotCount, lab.slotBytes)) {
          fail(ErrorCode.StripInconsistent, 'strip header disagrees with its label (volume size or key sections)');
        }
        loaded.push({ index, strip });
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        loaded.push({ index, strip: null, reason: `${e.code}: ${e.message}` });
      }
    }
    const present = loaded.filter((l) => l.strip !== null);
    if (present.length === 0) {
      fail(ErrorCode.VolumeUnavailable, 'no strip of the volume could be opened', { strips: loaded.map((l) => ({ index: l.index, reason: l.reason })) });
    }
    const first = present[0]!.strip!;
    const ref = first.label;
    const expectId = opts.expectId === undefined ? ref.volumeId : uuidToBytes(opts.expectId);
    for (const l of present) {
      const lab = l.strip!.label;
      const same =
        lab.volumeId.equals(expectId) &&
        lab.m === ref.m &&
        lab.n === ref.n &&
        lab.blockBytes === ref.blockBytes &&
        lab.slotCount === ref.slotCount &&
        lab.stripIndex === l.index;
      if (!same) {
        fail(ErrorCode.VolumeMismatch, `strip at position ${l.index} belongs to another volume or position`, {
          position: l.index,
          stripIndex: lab.stripIndex,
          volumeId: bytesToUuid(lab.volumeId),
        });
      }
    }
    if (opts.locations.length !== ref.n) fail(ErrorCode.VolumeMismatch, `volume has ${ref.n} strips, ${opts.locations.length} locations given`);
    if (present.length < ref.m) {
      fail(ErrorCode.VolumeUnavailable, `only ${present.length} of ${ref.n} strips available, need ${ref.m}`, {
        strips: loaded.map((l) => ({ index: l.index, reason: l.reason ?? 'ok' })),
      });
    }
    let stale = 0;
    for (const i of opts.staleStrips ?? []) stale |= 1 << i;
    let epoch = 0;
    let floor = opts.generationFloor ?? 0;
    for (const l of present) {
      const b = l.strip!.header.body;
      stale |= b.staleStrips;
      epoch = Math.max(epoch, b.epoch);
      floor = Math.max(floor, b.generationReserved);
    }
    if (opts.owl && !opts.owl.volumeId.equals(ref.volumeId)) fail(ErrorCode.OwlCorrupt, `${opts.owl.path} belongs to another volume`);
    // Replayed writes were reserved before they were journalled; recovery does not rely on it.
    for (const rec of opts.owl?.outstanding ?? []) floor = Math.max(floor, rec.generation + rec.count);
    const members = loaded.map((l): Member => {
      if (l.strip === null) return { index: l.index, strip: null, state: 'missing', reason: l.reason, durableReserved: 0, latencyMs: 0 };
      const isStale = (stale & (1 << l.index)) !== 0;
      return {
        index: l.index,
        strip: l.strip,
        state: isStale ? 'stale' : 'healthy',
        reason: isStale ? 'missed writes while absent' : undefined,
        durableReserved: l.strip.header.body.generationReserved,
        latencyMs: 0,
      };
    });
    const volume = new Volume(
      first,
      members,
      epoch,
      floor,
      opts.hooks ?? {},
      opts.runner ?? inlineRunner,
      opts.wrappers,
      checkTimeout(opts.ioTimeoutMs),
      opts.preferLocalReads ?? true,
      opts.owl ?? null,
      checkCacheBytes(opts.cacheBytes),
    );
    // A strip that cannot take even its status record is failed, not a reason to refuse the volume.
    for (const mem of members) if (mem.strip) await mem.strip.appendStatus(StatusCode.Opened).catch((e: unknown) => volume.markFailed(mem, e));
    if (volume.available().length < ref.m) volume.unavailable('open');
    if (opts.owl) await volume.replayOwl(opts.owl);
    // Reserve now, so a volume that is opened and immediately written never waits mid-request.
    await volume.ledger.take(1);
    return volume;
  }

  /**
   * Refuses new requests, waits for in-flight ones, flushes, and forgets the keys. Releases nothing
   * on the devices (the caller owns them).
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Every request holds a range lock: the whole volume, exclusively, means none is left running.
    const release = await this.lock.acquire(0, this.sizeBytes / this.blockBytes - 1, 'exclusive');
    try {
      await this.headerWrites;
      await this.retireOwl().catch(() => undefined);
      for (const mem of this.available()) await mem.strip!.appendStatus(StatusCode.Closed).catch(() => undefined);
      await this.flushStrips().catch(() => undefined);
      await this.owl?.close();
    } finally {
      this.closed = true;
      this.cache.clear();
      sharedBuffers.wipe();
      release();
    }
    for (const w of this.wrappers) w.key.fill(0);
    for (const mem of this.members) {
      if (mem.strip === null) continue;
      mem.strip.header.headerKey.fill(0);
      for (const section of mem.strip.header.body.sections) for (const slot of section) slot.key.fill(0);
    }
  }

  /** How full the outstanding write list is (null: the volume has none). */
  owlUsage(): ReturnType<Owl['usage']> | null {
    return this.owl?.usage() ?? null;
  }

  cacheStats(): BlockCacheStats {
    return this.cache.stats();
  }

  health(): VolumeHealth {
    const shown = (m: Member): StripHealthState => (m.state === 'stale' && this.passes > 0 ? 'rebuilding' : m.state);
    const strips = this.members.map((m) => ({ index: m.index, state: shown(m), ...(m.reason ? { reason: m.reason } : {}) }));
    const usable = this.members.filter((m) => m.state === 'healthy' || m.state === 'stale').length;
    const healthy = this.members.filter((m) => m.state === 'healthy').length;
    const rebuilding = strips.some((st) => st.state === 'rebuilding');
    const state: VolumeState = this.closed
      ? 'closed'
      : usable < this.m || this.lateFailure !== null
        ? 'failed'
        : healthy === this.n && this.repairs.size === 0 && !this.repairOverflow
          ? 'healthy'
          : rebuilding
            ? 'rebuilding'
            : 'degraded';
    return { state, strips, repair: [...this.repairs.values()], repairOverflow: this.repairOverflow };
  }

  /**
   * Reads and authenticates every share of every block (or from `fromBlock` on), rewrites each block
   * that has a bad, stale, torn or unreadable share at a new generation on every reachable strip, and,
   * after a whole pass with no lost block, clears the stale mark of strips that were present
   * throughout: they have caught up. Runs beside normal I/O, one locked chunk at a time.
   */
  async scrub(opts: ScrubOptions = {}): Promise<ScrubReport> {
    this.checkOpen();
    return this.pass(opts, false);
  }

  /**
   * Session key rotation, online: every key section of every strip in service gets a fresh active
   * session key (the old one turns "retiring": it still opens what it sealed, and seals nothing
   * new); a pass like a scrub re-seals every block that still has a share under a retiring key;
   * then the retiring keys are erased from the headers. Interrupted (crash, close, abort), it is
   * resumed by calling it again: blocks already re-sealed are skipped.
   */
  async rekey(opts: ScrubOptions = {}): Promise<ScrubReport & { readonly finished: boolean }> {
    this.checkOpen();
    if (!this.rekeyInProgress()) await this.rewriteHeaders((body) => startRekey(body));
    const report = await this.pass(opts, true);
    const finished = report.nextBlock === report.blocksTotal && report.blocksLost === 0 && (opts.fromBlock ?? 0) === 0;
    if (finished) {
      // Outstanding OWL records may hold shares sealed under a retiring key; retire them first, so a
      // replay never needs a key that is gone.
      await this.retireOwl();
      await this.rewriteHeaders((body) => finishRekey(body));
    }
    return { ...report, finished };
  }

  /** A rotation was started and not finished (some strip's header still holds a retiring key). */
  rekeyInProgress(): boolean {
    return this.available().some((m) => m.strip!.header.body.sections.some((slots) => slots.some((k) => k.state === KeySlotState.Retiring)));
  }

  private async pass(opts: ScrubOptions, rekeying: boolean): Promise<ScrubReport> {
    // Failed closed: a pass could rewrite blocks around an unreplayed journal record, and a re-key
    // could erase the key that record needs.
    if (this.lateFailure !== null) throw this.lateFailure;
    this.passes++;
    try {
      return await this.passChunks(opts, rekeying);
    } finally {
      this.passes--;
    }
  }

  private async passChunks(opts: ScrubOptions, rekeying: boolean): Promise<ScrubReport> {
    const total = this.sizeBytes / this.blockBytes;
    const from = opts.fromBlock ?? 0;
    if (!Number.isSafeInteger(from) || from < 0 || from > total) fail(ErrorCode.OutOfRange, `scrub start ${from} outside [0, ${total}]`);
    const rate = opts.rateBytesPerSec ?? 0;
    if (!Number.isFinite(rate) || rate < 0) fail(ErrorCode.InvalidArgument, `scrub rate ${rate} must be a non-negative number`);
    const presentThroughout = new Set(this.available().map((m) => m.index));
    const lost: number[] = [];
    let repaired = 0;
    let lostCount = 0;
    let at = from;
    const started = Date.now();
    const progress = (): ScrubProgress => ({ blocksDone: at, blocksTotal: total, blocksRepaired: repaired, blocksLost: lostCount });
    while (at < total && !opts.signal?.aborted) {
      const count = Math.min(blocksPerIoMax, total - at);
      const release = await this.lock.acquire(at, at + count - 1, 'exclusive');
      try {
        this.checkNotClosed();
        const r = await this.scrubChunk(at, count, rekeying);
        repaired += r.repaired;
        lostCount += r.lost.length;
        for (const a of r.lost) if (lost.length < repairListMax) lost.push(a);
      } finally {
        release();
      }
      for (const m of this.members) if (!(m.state === 'healthy' || m.state === 'stale')) presentThroughout.delete(m.index);
      at += count;
      opts.onProgress?.(progress());
      if (rate > 0) {
        const due = started + (((at - from) * this.blockBytes) / rate) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, scrubPauseMsMax)));
      }
    }
    const caughtUp: number[] = [];
    if (from === 0 && at === total && lostCount === 0) {
      const bits = this.members.filter((m) => m.state === 'stale' && presentThroughout.has(m.index)).reduce((acc, m) => acc | (1 << m.index), 0);
      if (bits !== 0) {
        await this.rewriteHeaders((body) => {
          body.staleStrips &= ~bits;
        });
        for (const m of this.members) {
          if ((bits & (1 << m.index)) === 0 || m.state !== 'stale') continue;
          m.state = 'healthy';
          m.reason = undefined;
          caughtUp.push(m.index);
          await this.hooks.onStripState?.(m.index, 'healthy', undefined);
        }
      }
      if (this.members.every((m) => m.state === 'healthy')) this.repairOverflow = false;
    }
    return { ...progress(), nextBlock: at, lost, caughtUp };
  }

  private async scrubChunk(first: number, count: number, rekeying = false): Promise<{ repaired: number; lost: number[] }> {
    const slotData = new Map<number, Buffer>();
    await this.readAll(this.available(), first, count, slotData);
    if (slotData.size < this.m) this.unavailable('scrub');
    const retiring = rekeying ? this.sharesUnderRetiringKeys(first, count, slotData) : new Set<number>();
    const stale = this.members.filter((m) => m.state === 'stale').map((m) => m.index);
    const result = await this.runnerFor(count).open({
      ...this.batchGeometry(first, count),
      slots: [...slotData],
      complete: slotData.size === this.n,
      stale,
      verifyAll: true,
    });
    const blocks = asBuffer(result.blocks);
    const bb = this.blockBytes;
    const lost: number[] = [];
    const toRewrite: number[] = [];
    for (const o of result.outcomes) {
      const address = first + o.i;
      if (o.failed !== undefined) {
        this.noteRejections(address, o.rejected);
        lost.push(address);
        continue;
      }
      toRewrite.push(o.i);
      retiring.delete(o.i);
      for (const r of o.rejected) this.repairs.delete(`${r.stripIndex}:${address}`);
    }
    if (retiring.size > 0) {
      const failed = new Set(lost.map((a) => a - first));
      for (const i of retiring) if (!failed.has(i)) toRewrite.push(i);
      toRewrite.sort((a, b) => a - b);
    }
    // Rewrite each bad block at a new generation, so every reachable strip then holds the same current
    // share whatever was wrong with the old ones; consecutive blocks go out as one run (a rebuild
    // rewrites whole chunks).
    for (let k = 0; k < toRewrite.length; ) {
      let end = k + 1;
      while (end < toRewrite.length && toRewrite[end] === toRewrite[end - 1]! + 1) end++;
      const i0 = toRewrite[k]!;
      const run = blocks.subarray(i0 * bb, (i0 + end - k) * bb);
      await this.writeBlocks(first + i0, run, (j) => isAllZero(run.subarray(j * bb, (j + 1) * bb)));
      k = end;
    }
    return { repaired: toRewrite.length, lost };
  }

  /** Blocks (offsets in the chunk) with a share sealed under a key its strip's header calls retiring. */
  private sharesUnderRetiringKeys(first: number, count: number, slotData: ReadonlyMap<number, Buffer>): Set<number> {
    const out = new Set<number>();
    for (const [index, data] of slotData) {
      const sections = this.members[index]!.strip!.header.body.sections;
      for (let i = 0; i < count; i++) {
        if (out.has(i)) continue;
        const share = decodeSlot(index, data.subarray(i * this.slotBytes, (i + 1) * this.slotBytes));
        // Generation 0: never written, nothing sealed.
        if (share.generation === 0) continue;
        const slot = sections[sectionOfSlot(first + i, this.slotBytes)]?.[share.keySlot];
        if (slot?.state === KeySlotState.Retiring) out.add(i);
      }
    }
    return out;
  }

  /**
   * Puts a new, empty strip in place of a missing or failed one (a replaced or wiped device): fresh
   * session keys and header key, the volume's label and state, marked stale. A scrub then fills it
   * and clears the mark. The caller records the new location (the store) before calling.
   */
  async replaceStrip(index: number, location: StripLocation, opts: { regionZeroed?: boolean } = {}): Promise<void> {
    this.checkOpen();
    if (this.lateFailure !== null) throw this.lateFailure;
    const mem = this.members[index];
    if (mem === undefined) fail(ErrorCode.OutOfRange, `volume ${this.name} has no strip ${index}`);
    if (mem.state === 'healthy' || mem.state === 'stale') {
      fail(ErrorCode.InvalidArgument, `strip ${index} of volume ${this.name} is in service (${mem.state}); only a missing or failed strip is replaced`);
    }
    const ref = this.available()[0];
    if (ref === undefined) this.unavailable('replace a strip');
    const refStrip = ref.strip!;
    const release = await this.lock.acquire(0, this.sizeBytes / this.blockBytes - 1, 'exclusive');
    try {
      await this.headerWrites;
      const reserved = Math.max(...this.members.map((m) => (m.strip ? m.strip.header.body.generationReserved : 0)));
      const sections = refStrip.header.body.sections.map(() => freshKeySlots());
      const header = newHeader(
        { ...refStrip.header.body, generationReserved: reserved, staleStrips: refStrip.header.body.staleStrips | (1 << index), sections },
        this.wrappers,
      );
      const label = { ...refStrip.label, stripIndex: index, createdAtMs: Date.now() };
      const strip = await Strip.format(location, label, header, { zeroData: opts.regionZeroed !== true });
      await strip.appendStatus(StatusCode.Created);
      mem.strip = strip;
      mem.state = 'stale';
      mem.reason = 'replaced; empty until a scrub fills it';
      mem.durableReserved = reserved;
      mem.latencyMs = 0;
      await this.markStale([mem]);
      await this.hooks.onStripState?.(index, 'stale', mem.reason);
    } finally {
      release();
    }
  }

  /** The strips, for tools that inspect them (scrub, verification); null where missing. */
  stripAt(index: number): Strip | null {
    return this.members[index]?.strip ?? null;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    if (length === 0) return Buffer.alloc(0);
    const first = Math.floor(offset / this.blockBytes);
    const last = Math.floor((offset + length - 1) / this.blockBytes);
    const release = await this.lock.acquire(first, last, 'shared');
    try {
      // Checked again under the lock: a write acknowledged before us may have failed meanwhile.
      if (this.lateFailure !== null) throw this.lateFailure;
      const blocks = await this.readBlocks(first, last - first + 1);
      const start = offset - first * this.blockBytes;
      return blocks.subarray(start, start + length);
    } finally {
      release();
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    const bb = this.blockBytes;
    if (offset % bb !== 0 || data.length % bb !== 0) {
      await this.modify(offset, data.length, (blocks, start) => blocks.set(data, start));
      return;
    }
    // Whole blocks: no read-modify-write and no copy; seal straight from the caller's bytes.
    const first = offset / bb;
    const count = data.length / bb;
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const release = await this.lock.acquire(first, first + count - 1, 'exclusive');
    // Acknowledged once every record of the write is in the journal file: from then on it survives
    // a crash of this process, as a write qemu-nbd has put in the page cache does, and a FLUSH (or
    // FUA) waits for the rest — the journal on disk, the shares on the strips. The range stays
    // locked until the shares are out, so nothing reads or overwrites these blocks in between.
    if (this.lateFailure !== null) {
      release();
      throw this.lateFailure;
    }
    const w = this.writePieces(first, buf, noZeroes);
    // Failed closed before the range is released: a request waiting for it must not see older data.
    // Out of afterAck once its work is done (in the handlers, not a finally: one promise less per write).
    const finished: Promise<void> = w.done.then(
      () => {
        this.afterAck.delete(finished);
        release();
      },
      (e: unknown) => {
        this.afterAck.delete(finished);
        if (w.status.wasAcked) this.failClosed(e);
        release();
      },
    );
    this.afterAck.add(finished);
    await w.acked;
  }

  /** An acknowledged write could not be completed: every request fails until the volume is reopened. */
  private failClosed(e: unknown): void {
    this.lateFailure ??=
      e instanceof StripvaultError && e.code === ErrorCode.VolumeUnavailable
        ? e
        : new StripvaultError(ErrorCode.VolumeUnavailable, `volume ${this.name}: an acknowledged write failed; reopen the volume to replay it: ${(e as Error)?.message ?? String(e)}`, {}, { cause: e });
  }

  /**
   * Zeroes a range of any length (no payload, so not bound by requestBytesMax). Whole blocks
   * become authenticated zero markers; the range is done in block-aligned pieces so memory stays
   * bounded however large it is.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length, this.sizeBytes);
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const pieceEnd = Math.min(end, (Math.floor(at / this.blockBytes) + zeroPieceBlocks) * this.blockBytes);
      const n = pieceEnd - at;
      await this.modify(at, n, (blocks, start) => blocks.fill(0, start, start + n), true);
      at = pieceEnd;
    }
  }

  /** Discards a range: stripvault stores nothing for it and reads it back as zeros. */
  trim(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  /** Makes every acknowledged write durable on the strips' storage. */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.settleAcknowledged();
    await this.retireOwl();
  }

  /**
   * Waits for every acknowledged write to reach its strips (not necessarily durably: that is
   * flush()); throws if one could not.
   */
  async settleAcknowledged(): Promise<void> {
    // Those writes reach their strips only after the journal's next sync: no spacing of syncs meanwhile.
    const calm = this.owl?.urge();
    try {
      if (this.afterAck.size > 0) await Promise.all([...this.afterAck]);
    } finally {
      calm?.();
    }
    if (this.lateFailure !== null) throw this.lateFailure;
  }

  /**
   * Flushes the strips, then retires the OWL entries that were complete before the flush began.
   * Concurrent callers share a retirement only if it had not started yet: one that began earlier
   * may not cover writes they completed.
   */
  private retireOwl(): Promise<void> {
    const owl = this.owl;
    if (owl === null) return this.flushStrips();
    const run = async (): Promise<void> => {
      const done = owl.completed();
      await this.flushStrips();
      await owl.retire(done);
      crashPoint('owl.retired');
    };
    const p = (this.retiring ?? Promise.resolve()).then(run, run);
    this.retiring = p;
    void p.finally(() => {
      if (this.retiring === p) this.retiring = null;
    }).catch(() => undefined);
    return p;
  }

  /**
   * Rolls every outstanding write forward: its shares, exactly as journalled (same generation, so
   * the same nonce meets the same plaintext), go to every strip that should have them; strips that
   * cannot take them are marked stale. Each record is authenticated share by share first; a record
   * that fails ends the replay, as it and everything after it were never sent to a strip.
   */
  private async replayOwl(owl: Owl): Promise<void> {
    let replayed = 0;
    let stoppedAt: { seq: number; reason: string } | undefined;
    for (const rec of owl.outstanding) {
      const problem = await this.replayRecord(owl, rec);
      if (problem !== null) {
        stoppedAt = { seq: rec.seq, reason: problem };
        break;
      }
      replayed++;
      crashPoint('owl.recovery-replayed');
    }
    const found = owl.outstanding.length;
    if (found > 0) await this.flushStrips();
    // Always, even with nothing found: sequence numbers must move past whatever an unfinished
    // group may have left in the ring, or a later chain could pick such a record up.
    await owl.retireOutstanding();
    if (found > 0) await this.hooks.onOwlRecovery?.({ replayed, ...(stoppedAt ? { stoppedAt } : {}) });
  }

  /** Null when replayed, else why the record cannot be trusted. */
  private async replayRecord(owl: Owl, rec: Owl['outstanding'][number]): Promise<string | null> {
    const blocks = this.sizeBytes / this.blockBytes;
    if (rec.slotBytes !== this.slotBytes || rec.first + rec.count > blocks || rec.targets.some((t) => t >= this.n)) {
      return 'record does not fit the volume';
    }
    const payload = await owl.readPayload(rec);
    const span = rec.count * rec.slotBytes;
    const shares = new Map(rec.targets.map((t, p) => [t, payload.subarray(p * span, (p + 1) * span)] as const));
    // Only strips in service can judge their shares. A missing strip gets nothing (and is marked
    // stale); a stale one whose keys reject its share (replaced: new keys) is skipped likewise. A
    // healthy strip rejecting its share, or a block that does not open, means the record is damaged.
    const present = this.available().filter((mem) => shares.has(mem.index));
    const check = openBatch({
      ...this.batchGeometry(rec.first, rec.count),
      slots: present.map((mem) => [mem.index, shares.get(mem.index)!] as const),
      complete: false,
      verifyAll: true,
    });
    const skipped = new Set<number>();
    for (const o of check.outcomes) {
      if (o.failed !== undefined) return `block ${rec.first + o.i}: ${o.failed.message}`;
      for (const r of o.rejected) {
        if (this.members[r.stripIndex]!.state === 'healthy') return `block ${rec.first + o.i}: strip ${r.stripIndex} ${r.reason}`;
        skipped.add(r.stripIndex);
      }
    }
    const targets = present.filter((mem) => !skipped.has(mem.index));
    const results = await Promise.allSettled(targets.map((t) => this.deadline(t.strip!.writeSlots(rec.first, shares.get(t.index)!), t, 'write')));
    let ok = 0;
    for (let p = 0; p < targets.length; p++) {
      const r = results[p]!;
      if (r.status === 'fulfilled') ok++;
      else await this.markFailed(targets[p]!, r.reason);
    }
    if (ok < this.m) this.unavailable('outstanding write replay');
    const written = new Set(targets.filter((_, p) => results[p]!.status === 'fulfilled').map((t) => t.index));
    await this.markStale(this.members.filter((mem) => !written.has(mem.index)));
    return null;
  }

  private flushStrips(): Promise<void> {
    return this.onEachAvailable((strip) => strip.flush(), 'flush');
  }

  private async modify(
    offset: number,
    length: number,
    apply: (blocks: Buffer, start: number) => void,
    zeroes = false,
  ): Promise<void> {
    const bb = this.blockBytes;
    const first = Math.floor(offset / bb);
    const last = Math.floor((offset + length - 1) / bb);
    const count = last - first + 1;
    const release = await this.lock.acquire(first, last, 'exclusive');
    try {
      if (this.lateFailure !== null) throw this.lateFailure;
      const start = offset - first * bb;
      const headPartial = start !== 0;
      const tailPartial = (offset + length) % bb !== 0;
      const blocks = Buffer.alloc(count * bb);
      // Read-modify-write only the partial edge blocks.
      if (headPartial) (await this.readBlocks(first, 1)).copy(blocks, 0);
      if (tailPartial && (count > 1 || !headPartial)) (await this.readBlocks(last, 1)).copy(blocks, (count - 1) * bb);
      apply(blocks, start);
      const zeroMask = zeroes
        ? (i: number) => !(i === 0 && headPartial) && !(i === count - 1 && tailPartial)
        : () => false;
      for (let done = 0; done < count; done += blocksPerIoMax) {
        const n = Math.min(blocksPerIoMax, count - done);
        await this.writeBlocks(first + done, blocks.subarray(done * bb, (done + n) * bb), (i) => zeroMask(done + i));
      }
    } finally {
      release();
    }
  }

  /** Writes blocks and waits until they are on their strips (partial blocks, zeroes, scrub and re-key passes). */
  private async writeBlocks(first: number, blocks: Buffer, isZero: (i: number) => boolean): Promise<void> {
    // The strips get the shares after the journal's next sync: the caller waits for it, so no spacing.
    const calm = this.owl?.urge();
    try {
      await this.writePieces(first, blocks, isZero).done;
    } finally {
      calm?.();
    }
  }

  /**
   * Writes blocks as journal records of at most owlBlocksPerRecord (and requests of blocksPerIoMax).
   * `acked` settles once every piece's record is in the journal file (or, without a journal, when
   * the write is done); `done` once every piece is on its strips. A piece starts when the one before
   * it is journalled, so a large write streams instead of waiting for each piece's strip writes.
   */
  private writePieces(first: number, blocks: Buffer, isZero: (i: number) => boolean): { acked: Promise<void>; done: Promise<void>; status: { wasAcked: boolean } } {
    const count = blocks.length / this.blockBytes;
    const per = Math.min(blocksPerIoMax, owlBlocksPerRecord(this.slotBytes, this.n));
    let resolveAck!: () => void;
    let rejectAck!: (e: unknown) => void;
    // A flag, not a named closure: tsx keeps function names with an Object.defineProperty per
    // closure made, which per 4 KiB write was measurable (see anonymous callbacks below too).
    const status = { wasAcked: false };
    const acked = new Promise<void>((resolve, reject) => {
      resolveAck = resolve;
      rejectAck = reject;
    });
    if (count <= per) {
      // One record (every small write): acknowledged from its journalled callback, without the
      // loop's promises, race and allSettled, which were a good part of what a 4 KiB write allocated.
      // As below, a record that settles without ever being journalled (no journal) acknowledges by
      // settling, and one that fails first is never acknowledged: `acked` takes whichever comes
      // first (what Promise.race([acked, done]) did, without its array, iterator and extra promise).
      const done = this.writeRecord(first, blocks, isZero, () => {
        status.wasAcked = true;
        resolveAck();
      });
      done.then(resolveAck, rejectAck);
      return { acked: observed(acked), done, status };
    }
    const done = (async () => {
      const pieces: Promise<void>[] = [];
      let failure: { error: unknown } | null = null;
      try {
        for (let at = 0; at < count; at += per) {
          const n = Math.min(per, count - at);
          let journaled!: () => void;
          const inJournal = new Promise<void>((resolve) => (journaled = resolve));
          const piece = this.writeRecord(first + at, blocks.subarray(at * this.blockBytes, (at + n) * this.blockBytes), (i) => isZero(at + i), journaled);
          pieces.push(piece);
          await Promise.race([inJournal, piece]);
        }
      } catch (e) {
        failure = { error: e };
      }
      if (failure === null) {
        status.wasAcked = true;
        resolveAck();
      }
      // The range is released only after every piece started has settled, whatever happened.
      const settled = await Promise.allSettled(pieces);
      if (failure !== null) throw failure.error;
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    })();
    return { acked: observed(Promise.race([acked, done])), done, status };
  }

  private async writeRecord(first: number, blocks: Buffer, isZero: (i: number) => boolean, journaled?: () => void): Promise<void> {
    const count = blocks.length / this.blockBytes;
    const appended: OwlEntry[] = [];
    let cached = false;
    try {
      // Cached when acknowledged: the caller may reuse its buffer once the write is acknowledged.
      await this.sealAndWrite(first, blocks, isZero, appended, () => {
        this.cache.putRun(first, blocks);
        cached = true;
        crashPoint('owl.acknowledged');
        journaled?.();
      });
    } catch (e) {
      // Some strips may hold the new shares and some not: only the strips can say what reads back.
      this.cache.invalidate(first, count);
      // Journalled but not known to be on the strips: only a replay (at the next open) can settle
      // it, and retirement cannot pass it until then. Refuse further writes rather than stall them.
      for (const entry of appended) if (entry.state === 'journaled') this.owl!.abandon(entry, e);
      throw e;
    }
    if (!cached) this.cache.putRun(first, blocks);
  }

  /** Not async: one promise (the recorder's) per write instead of two; a throw here reaches writeRecord's catch all the same. */
  private sealAndWrite(first: number, blocks: Buffer, isZero: (i: number) => boolean, appended: OwlEntry[] = [], journaled?: () => void): Promise<void> {
    this.checkNotClosed();
    if (this.availableCount() < this.m) this.unavailable('write');
    const count = blocks.length / this.blockBytes;
    let zero: Uint8Array | null = null;
    for (let i = 0; i < count; i++) {
      if (!isZero(i)) continue;
      zero ??= new Uint8Array(count);
      zero[i] = 1;
    }
    // A literal of one shape (no conditional spread): spreads took a slow path on this per-write line.
    return this.recorder.add({ first, count, blocks, zero, appended, journaled });
  }

  /**
   * Writes a group of records (disjoint ranges, each under its writer's range lock): consecutive
   * generations from one reservation, sealed together (here or in one job), each journalled, then
   * every share out to its strip in one job. The records share their fate: targets, failures and
   * health verdicts are the group's, as they were already the turn's (one journal group, one worker
   * message).
   */
  private async writeGroup(items: readonly RecordWrite[]): Promise<void[]> {
    this.checkNotClosed();
    if (this.availableCount() < this.m) this.unavailable('write');
    const total = items.reduce((a, it) => a + it.count, 0);
    const generation = await this.ledger.take(total);
    // Chosen after the reservation: only strips whose header durably covers these generations may
    // take them, or a strip reopened without the others could see the same nonce again.
    const targets = this.available().filter((t) => t.durableReserved >= generation + total);
    if (targets.length < this.m) this.unavailable('write');
    const epoch = this.epoch;
    const targetIndices = targets.map((t) => t.index);
    let next = generation;
    const seals = items.map((it): SealItem => {
      const run: SealRun = { first: it.first, count: it.count, generation: next, epoch, zero: it.zero, targets: targetIndices };
      next += it.count;
      return { run, blocks: it.blocks };
    });
    const sealed = await this.sealItems(seals);
    let results: PromiseSettledResult<void>[] = [];
    let entries: readonly OwlEntry[] = [];
    try {
      // Journalled durably before any share goes out: a crash from here on is rolled forward.
      if (this.owl) entries = await this.appendGroup(this.owl, items, seals, sealed);
      results = await this.writeShares(
        items.map((it, k) => ({ first: it.first, out: sealed[k]!.shares })),
        targets,
      );
    } finally {
      // The journal's writev has settled and, if every strip write succeeded, nothing reads the
      // shares any more. After a failure a timed-out write may still read them: not reused then.
      const clean = results.length === targets.length && results.every((r) => r.status === 'fulfilled');
      for (const x of sealed) x.release(clean);
    }
    let ok = 0;
    for (let p = 0; p < targets.length; p++) {
      const r = results[p]!;
      if (r.status === 'fulfilled') ok++;
      else await this.markFailed(targets[p]!, r.reason);
    }
    // Below M the entries stay outstanding: the next open replays them onto the strips that return.
    if (ok < this.m) this.unavailable('write');
    for (let k = 0; k < items.length; k++) crashPoint('volume.shares-written');
    // Strips that were not written now hold older data: record that on the ones that were.
    const missed = this.members.filter((mem) => mem.state === 'missing' || mem.state === 'failed');
    await this.markStale(missed);
    for (const e of entries) this.owl!.complete(e);
    return items.map(() => undefined);
  }

  /**
   * Journals the records of a group, each acknowledged through its own `journaled` once in the
   * file; resolves once all are durable. A failure is reported only once every record has settled:
   * no writev may still be reading the shares when the caller lets go of them.
   */
  private async appendGroup(owl: Owl, items: readonly RecordWrite[], seals: readonly SealItem[], sealed: readonly Sealed[]): Promise<readonly OwlEntry[]> {
    const entries = await owl.appendAll(
      seals.map(({ run: { first, count, generation, epoch, targets } }, k) => ({ first, count, epoch, generation, targets, slotBytes: this.slotBytes, shares: sealed[k]!.shares })),
      items.map((it) => it.journaled),
    );
    // Each writer abandons its entries if the group fails from here on (see writeRecord).
    entries.forEach((e, k) => items[k]!.appended.push(e));
    for (let k = 0; k < items.length; k++) crashPoint('owl.appended');
    return entries;
  }

  /**
   * Writes a group's shares to its target strips. Where every target's device is a descriptor a
   * worker can write (file or block device) and the runner has workers, the writes go out in one
   * worker message (with the rest of this turn's); a target whose worker write failed or did not
   * finish in time is written again through its device (the same shares, so the same bytes), which
   * also decides its health. One result per target.
   */
  private async writeShares(records: readonly ShareRecord[], targets: readonly Member[]): Promise<PromiseSettledResult<void>[]> {
    // A target's records go to its device concurrently (a remote strip keeps its queue depth); the
    // target's verdict waits for all of them, so none is still in flight when the caller moves on.
    const slow = async (t: Member, p: number): Promise<void> => {
      const done = await Promise.allSettled(
        records.map(async (r) => {
          await this.deadline(t.strip!.writeSlots(r.first, asBuffer(r.out[p]!)), t, 'write');
          crashPoint('volume.strip-written');
        }),
      );
      const failed = done.find((x): x is PromiseRejectedResult => x.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    };
    const io = this.runner.writeSlots ? targets.map(ioStrip) : [];
    if (io.length === 0 || io.some((s) => s === null)) return Promise.allSettled(targets.map(slow));
    const writes: SlotWrite[] = [];
    for (const r of records) {
      for (let p = 0; p < io.length; p++) writes.push({ fd: io[p]!.fd, offset: io[p]!.dataOffset + r.first * this.slotBytes, data: r.out[p]!, group: 0 });
    }
    const item: FdWriteItem = { writes, cancel: null };
    const job = this.fdWriter.add(item);
    for (const t of targets) (t.strip!.device as HandleDevice).hold(job);
    const errors = await orAfter(
      job.catch(() => null),
      Math.min(this.ioTimeoutMs, fdIoTimeoutMs),
      null,
    );
    // A target is done only if every one of its writes is (row k·targets + p is record k, target p).
    const targetFailed = (p: number): boolean => {
      if (errors === null) return true;
      for (let k = p; k < errors.length; k += targets.length) if (errors[k] !== null) return true;
      return false;
    };
    if (errors !== null && targets.every((_, p) => !targetFailed(p))) {
      for (let i = 0; i < records.length * targets.length; i++) crashPoint('volume.strip-written');
      return targets.map(() => fulfilled);
    }
    // Given up on (or failed): what the worker has not started must not land after our own rewrite.
    if (errors === null) item.cancel?.();
    const results = await Promise.allSettled(
      targets.map(async (t, p) => {
        if (targetFailed(p)) return slow(t, p);
        for (let k = 0; k < records.length; k++) crashPoint('volume.strip-written');
      }),
    );
    if (errors === null) {
      // A worker pwrite already under way cannot be cancelled. It writes the very bytes just rewritten,
      // so it is harmless unless it lands after a *newer* write to these slots: keep this write (and its
      // range lock) until it has settled. If it never does, its strips cannot be trusted: failed.
      const settled = await orAfter(
        job.then(
          () => true,
          // A worker abandoned as stuck has not finished its pwrite; any other failure has.
          (e: unknown) => !(e instanceof StripvaultError && e.message === workerStuckMessage),
        ),
        this.ioTimeoutMs,
        false,
      );
      if (!settled) {
        // Counted as failed writes too: the caller then needs M others, or refuses the write.
        return Promise.all(
          targets.map(async (t): Promise<PromiseSettledResult<void>> => {
            const reason = new StripvaultError(ErrorCode.DeviceIo, `strip ${t.index}: a worker write did not finish within ${this.ioTimeoutMs} ms`, { strip: t.index, errno: 'ETIMEDOUT' });
            await this.markFailed(t, reason);
            return { status: 'rejected', reason };
          }),
        );
      }
    }
    return results;
  }

  /**
   * Seals a group's writes into one reusable shared buffer, here (a small group, within this turn's
   * sealInlineBlocksMax) or in one runner batch; per item, one share buffer per target and a
   * release. The buffer is reused once every item has released it cleanly.
   */
  private async sealItems(items: readonly SealItem[]): Promise<Sealed[]> {
    const runs = items.map((it) => it.run);
    const { offsets, bytes } = sealedRunOffsets(runs, this.slotBytes);
    const packed = sharedBuffers.take(bytes);
    const total = runs.reduce((a, r) => a + r.count, 0);
    if (nativeSeal.available && this.sealedInlineThisTurn + total <= sealInlineBlocksMax) {
      if (this.sealedInlineThisTurn === 0) setImmediate(() => (this.sealedInlineThisTurn = 0));
      this.sealedInlineThisTurn += total;
      // No worker is involved: the buffer goes back to the pool whatever happens.
      try {
        sealRuns(this.sealRunsBatch(runs, items.map((it) => it.blocks), packed));
      } catch (e) {
        sharedBuffers.give(packed);
        throw e;
      }
    } else if (items.every((it) => it.blocks.buffer instanceof SharedArrayBuffer)) {
      // Not given back if the job fails: a worker that is being replaced may still be writing into it.
      // Already in shared memory (NBD payloads received there): the worker reads them in place.
      await this.runner.sealRuns(this.sealRunsBatch(runs, items.map((it) => it.blocks), packed));
    } else {
      // Packed straight into shared memory: the one copy the blocks make on their way to a worker.
      const blocks = sharedBuffers.take(items.reduce((a, it) => a + it.blocks.length, 0));
      try {
        let at = 0;
        for (const it of items) {
          copyBytes(blocks, at, it.blocks);
          at += it.blocks.length;
        }
        await this.runner.sealRuns(this.sealRunsBatch(runs, blocks, packed));
      } finally {
        // The job has settled: no worker reads these any more (one abandoned mid-job may, harmlessly).
        sharedBuffers.give(blocks);
      }
    }
    const holders = new SealedHolders(packed, items.length);
    return runs.map((r, k) => {
      const span = r.count * this.slotBytes;
      return {
        shares: r.targets.map((_, p) => packed.subarray(offsets[k]! + p * span, offsets[k]! + (p + 1) * span)),
        release: holders.release(),
      };
    });
  }

  private async fdReadItems(items: readonly FdReadItem[]): Promise<FdReadResult[]> {
    // Field by field, as sealRunsBatch: no spread of batchShape per read job.
    const shape = this.batchShape(items);
    const r = await this.runner.readOpen!({
      volumeId: shape.volumeId,
      m: shape.m,
      n: shape.n,
      blockBytes: shape.blockBytes,
      slotBytes: shape.slotBytes,
      keys: shape.keys,
      strips: items[0]!.strips,
      runs: items.map(({ first, count }) => ({ first, count })),
      stale: items[0]!.stale,
    });
    if (!r.ok) return items.map(() => null);
    const all = asBuffer(r.blocks);
    let at = 0;
    return items.map((it, k) => {
      const blocks = all.subarray(at, at + it.count * this.blockBytes);
      at += it.count * this.blockBytes;
      return { blocks, outcomes: r.outcomes[k]! };
    });
  }

  private async fdWriteItems(items: readonly FdWriteItem[]): Promise<(string | null)[][]> {
    const cancel = new Int32Array(new SharedArrayBuffer(items.length * Int32Array.BYTES_PER_ELEMENT));
    items.forEach((item, group) => {
      item.cancel = () => Atomics.store(cancel, group, 1);
    });
    // Field by field, not `{ ...w, group }`: three of these per 4 KiB write, and the spread is slow.
    const writes: SlotWrite[] = [];
    items.forEach((item, group) => {
      for (const w of item.writes) writes.push({ fd: w.fd, offset: w.offset, data: w.data, group });
    });
    const flat = await this.runner.writeSlots!({ writes, cancel });
    let at = 0;
    return items.map((item) => {
      at += item.writes.length;
      return flat.slice(at - item.writes.length, at);
    });
  }

  /**
   * A seal job for runs: batchShape's fields one by one, not spread (a spread of them took a slow
   * path, about 1 % of the CPU at 4 KiB random writes, profiled).
   */
  private sealRunsBatch(runs: readonly SealRun[], blocks: Uint8Array | readonly Uint8Array[], out: Uint8Array): SealRunsBatch {
    const s = this.batchShape(runs);
    return { volumeId: s.volumeId, m: s.m, n: s.n, blockBytes: s.blockBytes, slotBytes: s.slotBytes, keys: s.keys, blocks, runs, out };
  }

  /** Geometry and keys for a batch of runs: the key table covers every section they touch. */
  private batchShape(runs: readonly { first: number; count: number }[]): BatchShape {
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of runs) {
      lo = Math.min(lo, r.first);
      hi = Math.max(hi, r.first + r.count - 1);
    }
    return { volumeId: this.idBytes, m: this.m, n: this.n, blockBytes: this.blockBytes, slotBytes: this.slotBytes, keys: this.keyTable(lo, hi - lo + 1) };
  }

  /**
   * Reads and opens a chunk on a worker, straight from the first M healthy strips' descriptors.
   * Null when that cannot be done (stale or non-file strips, no workers) or did not give every
   * block: the caller then reads through the devices, with hedging, fallbacks and repair.
   */
  private async readChunkByWorker(first: number, count: number): Promise<Buffer | null> {
    if (!this.runner.readOpen) return null;
    const healthy = this.readOrder().filter((m) => m.state === 'healthy').slice(0, this.m);
    if (healthy.length < this.m) return null;
    const strips = healthy.map(ioStrip);
    if (strips.some((s) => s === null)) return null;
    const stale = this.members.filter((m) => m.state === 'stale').map((m) => m.index);
    const job = this.fdReader.add({ first, count, strips: strips as IoStrip[], stale });
    for (const mem of healthy) (mem.strip!.device as HandleDevice).hold(job);
    const r = await orAfter(
      job.catch(() => null),
      Math.min(this.ioTimeoutMs, fdIoTimeoutMs),
      null,
    );
    if (r === null || r.outcomes.some((o) => o.failed !== undefined)) return null;
    for (const o of r.outcomes) this.noteRejections(first + o.i, o.rejected);
    return r.blocks;
  }

  /** Reads and opens `count` blocks from `first`; returns count × blockBytes bytes. */
  private async readBlocks(first: number, count: number): Promise<Buffer> {
    this.checkNotClosed();
    const cached = this.cache.getRun(first, count);
    if (cached) return cached;
    if (count <= blocksPerIoMax) return this.readChunk(first, count);
    const out = Buffer.allocUnsafe(count * this.blockBytes);
    for (let done = 0; done < count; done += blocksPerIoMax) {
      const n = Math.min(blocksPerIoMax, count - done);
      (await this.readChunk(first + done, n)).copy(out, done * this.blockBytes);
    }
    return out;
  }

  private async readChunk(first: number, count: number): Promise<Buffer> {
    const fast = await this.readChunkByWorker(first, count);
    if (fast !== null) return fast;
    const slotData = new Map<number, Buffer>();
    const readFrom = (members: Member[]) => this.readAll(members, first, count, slotData);
    const order = this.readOrder();
    // Healthy strips got every acknowledged write, so M of them suffice. With fewer than M healthy,
    // stale strips are in the read set and only the newest authentic generation across every
    // reachable strip is the right answer: read them all.
    const healthy = order.filter((m) => m.state === 'healthy').length;
    let next = order.length;
    if (healthy < this.m) await readFrom(order);
    else next = await this.readFastest(order, first, count, slotData);
    if (slotData.size < this.m) this.unavailable('read');
    const stale = this.members.filter((m) => m.state === 'stale').map((m) => m.index);
    // Rolling back past a newer share is only ever considered when every one of the N strips answered.
    const complete = () => slotData.size === this.n;
    const result = await this.runnerFor(count).open({ ...this.batchGeometry(first, count), slots: [...slotData], complete: complete(), stale });
    const out = asBuffer(result.blocks);
    const failed = result.outcomes.filter((o) => o.failed !== undefined);
    for (const o of result.outcomes) if (o.failed === undefined) this.noteRejections(first + o.i, o.rejected);
    if (failed.length === 0) return out;

    // Inconsistent or too few good shares for some blocks: bring in every remaining strip once,
    // then open just those blocks again from everything there is.
    if (next < order.length || slotData.size < order.length) {
      // Only strips still in service: one that failed during this read stays out for the session.
      const rest = order.filter((m) => !slotData.has(m.index) && (m.state === 'healthy' || m.state === 'stale'));
      if (failed.some((o) => o.failed!.needMore)) await readFrom(rest);
    }
    for (const o of failed) {
      const address = first + o.i;
      const single = openBatch({
        ...this.batchGeometry(address, 1),
        slots: [...slotData].map(([strip, data]) => [strip, data.subarray(o.i * this.slotBytes, (o.i + 1) * this.slotBytes)] as const),
        complete: complete(),
        stale,
      });
      const again = single.outcomes[0];
      if (again) this.noteRejections(address, again.rejected);
      if (again?.failed) throw new NotEnoughSharesError(again.failed.message, again.rejected, false, address);
      out.set(single.blocks, o.i * this.blockBytes);
    }
    return out;
  }

  /**
   * Cheapest strips first: healthy before stale, then by observed latency, with the data-fragment
   * strips (index < M, no decoding needed) and local strips favoured unless they are clearly slower.
   */
  private readOrder(): Member[] {
    const remote = (m: Member) => this.preferLocalReads && m.strip!.device.kind === 'nbd';
    const cost = (m: Member) => Math.max(m.latencyMs, latencyFloorMs) * (m.index < this.m ? 1 : readParityPenalty) * (remote(m) ? readRemotePenalty : 1);
    return this.available().sort((a, b) => rank(a) - rank(b) || cost(a) - cost(b) || Number(remote(a)) - Number(remote(b)) || a.index - b.index);
  }

  /**
   * Reads slots from the fastest M strips: starts M reads, starts another whenever one fails, and
   * hedges — starts the next strip too — when the M have not all answered within a few typical
   * latencies. Resolves as soon as M have answered; slower reads finish in the background and
   * only update the latency estimates. Returns how many strips of `order` were asked.
   */
  private readFastest(order: Member[], first: number, count: number, into: Map<number, Buffer>): Promise<number> {
    return new Promise((resolve) => {
      let next = 0;
      let pending = 0;
      let done = false;
      const waiting = new Set<Member>();
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(next);
      };
      const check = () => {
        if (done) return;
        if (into.size >= this.m) return finish();
        while (into.size + pending < this.m && next < order.length) launch();
        if (pending === 0) finish();
      };
      const launch = () => {
        const mem = order[next++]!;
        pending++;
        waiting.add(mem);
        this.timedRead(mem, first, count).then(
          (buf) => {
            waiting.delete(mem);
            pending--;
            if (!done) into.set(mem.index, buf);
            check();
          },
          (e: unknown) => {
            waiting.delete(mem);
            pending--;
            void this.markFailed(mem, e).finally(check);
          },
        );
      };
      const hedge = () => {
        if (done) return;
        // A strip that has not answered is at least this slow: later reads should rank it so,
        // even if this read of it never comes back.
        const delay = this.hedgeDelayMs();
        for (const mem of waiting) mem.latencyMs = Math.max(mem.latencyMs, delay * hedgeLatencyFactor);
        if (next < order.length) launch();
        if (next < order.length) timer = setTimeout(hedge, this.hedgeDelayMs());
      };
      check();
      if (!done && next < order.length) timer = setTimeout(hedge, this.hedgeDelayMs());
    });
  }

  /** Reads the slots from every one of `members` (bounded by the I/O deadline); a strip that fails is taken out. */
  private async readAll(members: readonly Member[], first: number, count: number, into: Map<number, Buffer>): Promise<void> {
    const results = await Promise.allSettled(members.map((mem) => this.timedRead(mem, first, count)));
    for (let i = 0; i < members.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') into.set(members[i]!.index, r.value);
      else await this.markFailed(members[i]!, r.reason);
    }
  }

  /** A strip read that also feeds the strip's latency estimate (an exponentially weighted mean). */
  private async timedRead(mem: Member, first: number, count: number): Promise<Buffer> {
    const started = performance.now();
    const buf = await this.deadline(mem.strip!.readSlots(first, count), mem, 'read');
    const ms = performance.now() - started;
    mem.latencyMs = mem.latencyMs === 0 ? ms : mem.latencyMs + latencyWeight * (ms - mem.latencyMs);
    return buf;
  }

  /**
   * Bounds one strip operation: a strip that does not answer within ioTimeoutMs is failed for the
   * session (and, for writes, marked stale), so one hung device never stalls the volume. The late
   * operation may still finish; it only ever touches generations its header covers.
   */
  private deadline<T>(op: Promise<T>, mem: Member, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StripvaultError(ErrorCode.DeviceIo, `strip ${mem.index}: ${what} did not finish within ${this.ioTimeoutMs} ms`, { strip: mem.index, errno: 'ETIMEDOUT' })),
        this.ioTimeoutMs,
      );
    });
    op.catch(() => undefined);
    return Promise.race([op, expired]).finally(() => clearTimeout(timer));
  }

  /** How long the M fastest may take before another strip is asked too. */
  private hedgeDelayMs(): number {
    const seen = this.available().map((m) => m.latencyMs).filter((ms) => ms > 0).sort((a, b) => a - b);
    const typical = seen.length ? seen[Math.min(seen.length - 1, this.m - 1)]! : hedgeDelayMsMax;
    return Math.min(hedgeDelayMsMax, Math.max(hedgeDelayMsMin, typical * hedgeLatencyFactor));
  }

  private runnerFor(count: number): SplitRunner {
    // A worker round trip costs more than sealing a few blocks here.
    return count >= poolBlocksMin ? this.runner : inlineRunner;
  }

  private batchGeometry(first: number, count: number): BatchGeometry {
    return {
      volumeId: this.idBytes,
      m: this.m,
      n: this.n,
      blockBytes: this.blockBytes,
      slotBytes: this.slotBytes,
      first,
      count,
      keys: this.keyTable(first, count),
    };
  }

  /** The session keys of every open strip for the sections blocks [first, first+count) fall in. */
  private keyTable(first: number, count: number): KeyTable {
    const sectionFirst = sectionOfSlot(first, this.slotBytes);
    const sectionLast = sectionOfSlot(first + count - 1, this.slotBytes);
    const keys: Array<Array<Array<Uint8Array | null>> | null> = [];
    const active: Array<number[] | null> = [];
    for (const mem of this.members) {
      if (mem.strip === null) {
        keys.push(null);
        active.push(null);
        continue;
      }
      const sections = mem.strip.header.body.sections.slice(sectionFirst, sectionLast + 1);
      keys.push(sections.map((slots) => slots.map((k) => (k.state === KeySlotState.Empty ? null : k.key))));
      active.push(sections.map((slots) => slots.findIndex((k) => k.state === KeySlotState.Active)));
    }
    return { sectionFirst, keys, active };
  }

  private noteRejections(address: number, rejected: readonly ShareRejection[]): void {
    for (const r of rejected) {
      const key = `${r.stripIndex}:${address}`;
      if (this.repairs.has(key)) continue;
      if (this.repairs.size >= repairListMax) {
        this.repairOverflow = true;
        return;
      }
      this.repairs.set(key, { stripIndex: r.stripIndex, address, reason: r.reason });
    }
  }

  available(): Member[] {
    return this.members.filter(isAvailable);
  }

  /** available().length without the array (checked on every write). */
  private availableCount(): number {
    let n = 0;
    for (const m of this.members) if (isAvailable(m)) n++;
    return n;
  }

  private async onEachAvailable(op: (strip: Strip, mem: Member) => Promise<void>, what: string): Promise<void> {
    const targets = this.available();
    const results = await Promise.allSettled(targets.map((t) => this.deadline(op(t.strip!, t), t, what)));
    let ok = 0;
    for (let i = 0; i < targets.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') ok++;
      else await this.markFailed(targets[i]!, r.reason);
    }
    if (ok < this.m) this.unavailable(what);
  }

  /**
   * Tells the store (the hook) about a strip's state. Advisory: the strip headers carry what
   * matters for correctness, so a store hiccup must not fail (or stall) the write that noticed.
   */
  private async noteStripState(index: number, state: StripState, reason: string | undefined): Promise<void> {
    try {
      await this.hooks.onStripState?.(index, state, reason);
    } catch {
      // The next open recomputes strip states from the headers.
    }
  }

  /** Takes a strip out of service for this session (its device erred). */
  async markFailed(mem: Member, cause: unknown): Promise<void> {
    if (mem.state === 'failed') return;
    mem.state = 'failed';
    mem.reason = cause instanceof StripvaultError ? `${cause.code}: ${cause.message}` : String(cause);
    await this.noteStripState(mem.index, 'failed', mem.reason);
  }

  /** Records in every reachable header that these strips missed writes (once per strip). */
  private async markStale(missed: Member[]): Promise<void> {
    const bits = missed.reduce((acc, m) => acc | (1 << m.index), 0);
    if (bits === 0) return;
    const targets = this.available();
    // Too few strips to record it on is not "already recorded": the caller's write cannot stand.
    if (targets.length < this.m) this.unavailable('stale mark');
    if (targets.every((t) => (t.strip!.header.body.staleStrips & bits) === bits)) return;
    await this.rewriteHeaders((body) => {
      body.staleStrips |= bits;
    });
    for (const m of missed) await this.noteStripState(m.index, 'stale', 'missed writes while absent');
  }

  /**
   * Reserves a generation range: from the store when there is one (atomic across appliances), then
   * durably in the header of every reachable strip. Only then may the range be used, and only on
   * strips whose header write succeeded.
   */
  private async reserveRange(min: number, count: number): Promise<GenerationRange> {
    const end = this.hooks.allocateGenerations ? await this.hooks.allocateGenerations(min, count) : min + count;
    assert(Number.isSafeInteger(end) && end >= min + count, 'store returned a bad generation range');
    await this.rewriteHeaders(
      (body) => {
        body.generationReserved = Math.max(body.generationReserved, end);
      },
      (mem) => {
        mem.durableReserved = Math.max(mem.durableReserved, end);
      },
    );
    return { start: end - count, end };
  }

  /**
   * Applies `edit` to every reachable strip's header and makes it durable on at least M of them;
   * `durable` runs for each strip whose header is on stable storage.
   */
  private rewriteHeaders(edit: (body: Strip['header']['body']) => void, durable?: (mem: Member) => void): Promise<void> {
    const run = async (): Promise<void> => {
      await this.onEachAvailable(async (strip, mem) => {
        edit(strip.header.body);
        await strip.writeHeader();
        durable?.(mem);
      }, 'header update');
    };
    const p = this.headerWrites.then(run, run);
    this.headerWrites = p.catch(() => undefined);
    return p;
  }

  private checkRange(offset: number, length: number, lengthMax = requestBytesMax): void {
    this.checkOpen();
    if (this.lateFailure !== null) throw this.lateFailure;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      fail(ErrorCode.OutOfRange, `range [${offset}, +${length}) outside volume of ${this.sizeBytes} bytes`, { offset, length });
    }
    if (length > lengthMax) fail(ErrorCode.OutOfRange, `request of ${length} bytes exceeds ${lengthMax}`, { length });
  }

  /** For new requests: refused as soon as close() starts. */
  private checkOpen(): void {
    if (this.closed || this.closing) fail(ErrorCode.VolumeClosed, `volume ${this.name} is closed`);
  }

  /** For steps of requests already admitted: they may finish while close() drains them. */
  private checkNotClosed(): void {
    if (this.closed) fail(ErrorCode.VolumeClosed, `volume ${this.name} is closed`);
  }

  /** Ids (hex) of the keys wrapping the header key of any strip in service. */
  wrapperIds(): string[] {
    const ids = new Set<string>();
    for (const mem of this.available()) for (const w of mem.strip!.header.wraps) ids.add(w.wrapperId.toString('hex'));
    return [...ids].sort();
  }

  /**
   * Lets another key (a COI's workgroup key) open this volume: its wrap of each strip's header key
   * is added to the headers of every strip in service (the patent's many-to-one). Online.
   */
  async addWrapper(wrapper: Wrapper): Promise<void> {
    this.checkOpen();
    await this.rewriteStripHeaders((header) => addWrapper(header, wrapper));
    if (!this.wrappers.some((w) => w.id.equals(wrapper.id))) this.wrappers.push({ id: Buffer.from(wrapper.id), key: Buffer.from(wrapper.key) });
  }

  /**
   * Takes a key's wraps out of every strip header in service; the last key is never removed. While
   * a strip is out of service its header cannot change, and if the key were then destroyed the strip
   * could never be opened again: refused, unless `force` (a crypto-shred accepts rebuilding it).
   */
  async removeWrapper(wrapperId: Buffer, opts: { force?: boolean } = {}): Promise<void> {
    this.checkOpen();
    const remaining = this.wrapperIds().filter((id) => id !== wrapperId.toString('hex'));
    if (remaining.length === 0) fail(ErrorCode.StoreConflict, `volume ${this.name}: cannot remove the last key that opens it`);
    const away = this.members.filter((m) => m.state === 'missing' || m.state === 'failed').map((m) => m.index);
    if (away.length > 0 && opts.force !== true) {
      fail(ErrorCode.VolumeUnavailable, `volume ${this.name}: strip(s) ${away.join(', ')} out of service still need this key; retry once they are back or rebuilt`, { strips: away });
    }
    await this.rewriteStripHeaders((header) => removeWrapper(header, wrapperId));
    this.wrappers = this.wrappers.filter((w) => !w.id.equals(wrapperId));
  }

  /**
   * Crypto-shred: waits for requests in flight, then zeroes both header copies of every strip it
   * can reach and closes. Returns the strip indices wiped and those it could not reach (their old
   * headers open only with keys the caller destroys).
   */
  async wipeHeaders(): Promise<{ wiped: number[]; unreachable: number[] }> {
    this.closing = true;
    const release = await this.lock.acquire(0, this.sizeBytes / this.blockBytes - 1, 'exclusive');
    const wiped: number[] = [];
    const unreachable: number[] = [];
    try {
      await this.headerWrites;
      for (const mem of this.members) {
        if (mem.strip === null) {
          unreachable.push(mem.index);
          continue;
        }
        try {
          await this.deadline(mem.strip.wipeHeaders(), mem, 'header wipe');
          wiped.push(mem.index);
        } catch {
          unreachable.push(mem.index);
        }
      }
      await this.owl?.close();
    } finally {
      this.closed = true;
      this.cache.clear();
      sharedBuffers.wipe();
      for (const w of this.wrappers) w.key.fill(0);
      this.wrappers = [];
      release();
    }
    return { wiped, unreachable };
  }

  /** Like rewriteHeaders, for edits of the header itself (its wraps) rather than its body. */
  private rewriteStripHeaders(edit: (header: StripHeader) => void): Promise<void> {
    const run = async (): Promise<void> => {
      await this.onEachAvailable(async (strip) => {
        edit(strip.header);
        await strip.writeHeader();
      }, 'header update');
    };
    const p = this.headerWrites.then(run, run);
    this.headerWrites = p.catch(() => undefined);
    return p;
  }

  unavailable(what: string): never {
    fail(ErrorCode.VolumeUnavailable, `volume ${this.name}: ${what} needs ${this.m} of ${this.n} strips, fewer are reachable`, {
      strips: this.members.map((m) => ({ index: m.index, state: m.state, reason: m.reason })),
    });
  }
}

const noZeroes = (): boolean => false;

/**
 * A promise some callers never await (writeBlocks waits for `done` only), marked as handled: its
 * rejection repeats `done`'s, which they do see. Unmarked, a failed partial-block write left an
 * unhandled rejection behind, and Node ends the process on one.
 */
function isAvailable(m: Member): boolean {
  return m.strip !== null && (m.state === 'healthy' || m.state === 'stale');
}

function observed<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

interface SealItem {
  readonly run: SealRun;
  readonly blocks: Buffer;
}

/** One write's sealed shares, in memory shared with the rest of its turn's batch. */
interface Sealed {
  /** One buffer per target, count × slotBytes. */
  readonly shares: readonly Uint8Array[];
  /**
   * Called once nothing will read the shares any more (clean), or when that cannot be known (a
   * write abandoned on a timeout may still read them later): the memory is reused only when every
   * write of the batch released it cleanly.
   */
  release(clean: boolean): void;
}

/**
 * The items sealed into one shared buffer: it goes back to the pool once every item has released
 * it cleanly (a strip write that failed or was given up on may still read it: then never).
 */
class SealedHolders {
  #left: number;
  #reusable = true;
  constructor(
    private readonly packed: Buffer,
    holders: number,
  ) {
    this.#left = holders;
  }

  /** One item's release, idempotent. (Returned anonymous: a named closure per item costs a defineProperty under tsx.) */
  release(): (clean: boolean) => void {
    let released = false;
    return (clean) => {
      if (released) return;
      released = true;
      this.#reusable &&= clean;
      if (--this.#left === 0 && this.#reusable) sharedBuffers.give(this.packed);
    };
  }
}

/** One journal record on its way through writeGroup. */
interface RecordWrite {
  readonly first: number;
  readonly count: number;
  readonly blocks: Buffer;
  /** 1 where a block is all zeros (sealed as a zero marker), or null for none. */
  readonly zero: Uint8Array | null;
  /** Receives the record's journal entry once it is journalled. */
  readonly appended: OwlEntry[];
  /** Called once the record is in the journal file (the write may be acknowledged). */
  readonly journaled: (() => void) | undefined;
}

/** One record's shares, one buffer per target in the group's target order. */
interface ShareRecord {
  readonly first: number;
  readonly out: readonly Uint8Array[];
}

const fulfilled: PromiseFulfilledResult<void> = Object.freeze({ status: 'fulfilled', value: undefined });

interface FdWriteItem {
  readonly writes: readonly SlotWrite[];
  /** Set once the item is in a worker batch: stops its writes not yet started. */
  cancel: (() => void) | null;
}

interface FdReadItem {
  readonly first: number;
  readonly count: number;
  readonly strips: readonly IoStrip[];
  readonly stale: readonly number[];
}

/** Null: the worker's I/O failed or timed out; the read is redone through the devices. */
type FdReadResult = { readonly blocks: Buffer; readonly outcomes: readonly BlockOutcome[] } | null;

/** A strip whose device a worker can do positional I/O on: its descriptor and where slot 0 is. */
function ioStrip(mem: Member): IoStrip | null {
  const strip = mem.strip;
  if (strip === null || !(strip.device instanceof HandleDevice)) return null;
  const fd = strip.device.rawFd();
  return fd === null ? null : { index: mem.index, fd, dataOffset: strip.base + strip.label.dataOffset };
}

/** Resolves with `op`'s value, or with `fallback` once `ms` have passed. */
function orAfter<T>(op: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([op, late]).finally(() => clearTimeout(timer));
}

function checkCacheBytes(bytes: number | undefined): number {
  if (bytes === undefined) return blockCacheBytesDefault;
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > blockCacheBytesMax) fail(ErrorCode.InvalidArgument, `cacheBytes must be in [0, ${blockCacheBytesMax}]`);
  return bytes;
}

function checkTimeout(ms: number | undefined): number {
  if (ms === undefined) return stripIoTimeoutMsDefault;
  if (!Number.isSafeInteger(ms) || ms < 1 || ms > stripIoTimeoutMsMax) fail(ErrorCode.InvalidArgument, `ioTimeoutMs must be in [1, ${stripIoTimeoutMsMax}]`);
  return ms;
}

/** Per section: a fresh active session key in a free slot; the old active one turns retiring. */
function startRekey(body: Strip['header']['body']): void {
  for (const slots of body.sections) {
    if (slots.some((k) => k.state === KeySlotState.Retiring)) continue;
    const active = slots.findIndex((k) => k.state === KeySlotState.Active);
    const free = slots.findIndex((k) => k.state === KeySlotState.Empty);
    if (active < 0 || free < 0) fail(ErrorCode.StripInconsistent, 'no active or free session key slot to rotate into');
    slots[free] = { state: KeySlotState.Active, serial: slots[active]!.serial + 1, key: randomBytes(sessionKeyBytes) };
    slots[active]!.state = KeySlotState.Retiring;
  }
}

/** Erases every retiring key: nothing is sealed under them any more. */
function finishRekey(body: Strip['header']['body']): void {
  for (const slots of body.sections) {
    for (let k = 0; k < slots.length; k++) {
      if (slots[k]!.state !== KeySlotState.Retiring) continue;
      slots[k]!.key.fill(0);
      slots[k] = { state: KeySlotState.Empty, serial: 0, key: Buffer.alloc(sessionKeyBytes) };
    }
  }
}

/** One section's key slots for a new strip: a fresh active session key, the rest spare. */
function freshKeySlots(): SessionKeySlot[] {
  const slots: SessionKeySlot[] = [{ state: KeySlotState.Active, serial: 1, key: randomBytes(sessionKeyBytes) }];
  while (slots.length < keySlotsPerSection) slots.push({ state: KeySlotState.Empty, serial: 0, key: Buffer.alloc(sessionKeyBytes) });
  return slots;
}

const zeroBlock = Buffer.alloc(1 << 20);

function isAllZero(b: Buffer): boolean {
  return b.equals(zeroBlock.subarray(0, b.length));
}

function asBuffer(a: Uint8Array): Buffer {
  return Buffer.isBuffer(a) ? a : Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function rank(m: Member): number {
  return m.state === 'healthy' ? 0 : 1;
}
