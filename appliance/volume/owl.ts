/**
 * The outstanding write list (OWL) of one volume: a ring journal of the sealed shares of every
 * write, made durable before any of its shares goes out to a strip, and retired once the strips
 * hold them durably. After a crash, replaying what is outstanding rolls every torn write forward,
 * so each block is whole: its last flushed content or a later write. Design: docs/owl.md; byte
 * layout: owl-format.ts.
 *
 * - Group commit: appends that arrive while a sync is under way share the next one.
 * - Records form a chain of consecutive sequence numbers from the superblock's tail. Replay stops
 *   at the first gap: a record after a gap belongs to a group whose sync never finished, so none of
 *   its shares was ever sent to a strip.
 * - Sequence numbers never repeat, also across recoveries (see skipAfterRecovery), so a record
 *   from an unfinished group can never be mistaken for a later one.
 * - Space is reused only after the superblock that retires it is durable. When the ring is full,
 *   appends wait (back-pressure) while `makeRoom` flushes the strips and retires.
 * - A failed journal write breaks the list for the session: later records could not be found
 *   behind the hole, so every later append is refused (fail closed) until the volume is reopened.
 */
import { writevSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, StripvaultError, assert, fail } from '../errors.ts';
import {
  decodeOwlRecordHeader,
  decodeOwlSuperblock,
  encodeOwlRecordHeader,
  encodeOwlSuperblock,
  owlRecordAlign,
  owlRecordBytes,
  owlRecordHeaderBytes,
  owlRecordPayloadBytesMax,
  owlRingBytesDefault,
  owlRingBytesMax,
  owlRingOffset,
  owlRingRecordsMin,
  owlSuperBytes,
  type OwlRecordHeader,
  type OwlSuperblock,
} from './owl-format.ts';

export const owlFileMode = 0o600;

export interface OwlAppend {
  readonly first: number;
  readonly count: number;
  readonly epoch: number;
  readonly generation: number;
  /** Strip indices, ascending, one share buffer each in `shares`. */
  readonly targets: readonly number[];
  readonly slotBytes: number;
  readonly shares: readonly Uint8Array[];
}

/** A record found outstanding when the list was opened: to be replayed before serving. */
export interface OwlOutstanding extends OwlRecordHeader {
  readonly pos: number;
}

export interface OwlEntry {
  readonly seq: number;
  readonly pos: number;
  /** Ring bytes the entry holds, including padding skipped before it at the ring's end. */
  readonly bytes: number;
  state: 'journaling' | 'journaled' | 'completed' | 'durable';
}

export interface OwlUsage {
  readonly ringBytes: number;
  readonly usedBytes: number;
  readonly entries: number;
}

/**
 * Once the ring is this full, a retirement (strip flush) starts in the background, so appends rarely
 * have to wait for one: the flush overlaps the writes instead of stalling them.
 */
export const owlRetireEarlyFraction = 0.5;
/**
 * Journal groups being written at once (each a writev). Their syncs are shared: one fdatasync
 * covers every group written before it began (see #syncAfterNow). A group counts until its writev
 * returns, not until its sync: a slow fdatasync must not hold back the writes (and the
 * acknowledgements) of the groups behind it — when it did, every sync's latency became NBD latency.
 */
export const owlGroupsInFlightMax = 8;
/**
 * Least time between the starts of two journal fdatasyncs while nobody waits for durability.
 * Each sync walks the file's dirty pages; at 4 KiB random writes, qd32, syncs back to back (~570 a
 * second) were about a tenth of the machine's CPU (perf, Linux ext4); spacing them by 5 ms, with
 * the change above, gave +6 % IOPS (4 ABBA rounds; 10 and 20 ms were far worse while groups still
 * waited for syncs). Acknowledgements never wait for a sync. Whoever waits for one — a FLUSH or FUA
 * write, close, a full ring, a request for blocks still being written, a partial-block, zeroing or
 * scrub write that waits for its strips — turns the spacing off while it waits (urge(), hurry()).
 */
export const owlSyncIntervalMinMs = 5;
/**
 * A journal run up to this size is written from the event loop itself (writevSync), larger ones on
 * the thread pool. A small run is a memory copy into the page cache; handing it to a pool thread
 * costs more than that — waking a sleeping thread took tens of microseconds of the loop's time on
 * the 2-core VMs we measure on, and random 4 KiB writes gained 10 % without it. A sequential
 * write's runs of megabytes stay on the pool, so the loop keeps serving while they are copied.
 */
export const owlLoopWriteBytesMax = 256 * 1024;
/**
 * A buffered write can still block (dirty-page throttling, a page under writeback). A loop write
 * that took longer than this sends every run to the thread pool for owlLoopWritePauseMs, so a
 * throttled disk stalls the pool, not the event loop (NBD, heartbeats, timers), again and again.
 */
export const owlLoopWriteStallMs = 10;
export const owlLoopWritePauseMs = 1000;
/** Buffers per journal writev (Linux IOV_MAX is 1024). */
const iovMax = 1024;

interface Queued {
  readonly entry: OwlEntry;
  /** Bytes of the record itself (header, shares, padding), from entry.pos. */
  readonly recordBytes: number;
  readonly buffers: readonly Uint8Array[];
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
  readonly written: (() => void) | undefined;
}

export interface OwlOptions {
  /** Journal runs up to this many bytes are written from the event loop (default owlLoopWriteBytesMax; 0: all on the thread pool). */
  readonly loopWriteBytesMax?: number;
  /** The synchronous writev used for them (tests inject failures here). */
  readonly writevSync?: typeof writevSync;
  /** Least milliseconds between journal syncs' starts unless hurried (default owlSyncIntervalMinMs). */
  readonly syncIntervalMinMs?: number;
}

/** The largest record a volume of this shape can need (one block on every strip), to size the ring. */
export function owlRingBytesFor(slotBytes: number, n: number, ringBytes = owlRingBytesDefault): number {
  const oneBlock = owlRecordBytes(slotBytes * n);
  assert(slotBytes * n <= owlRecordPayloadBytesMax, 'one block of shares fits an OWL record');
  return Math.min(owlRingBytesMax, Math.max(ringBytes, owlRingRecordsMin * owlRecordBytes(owlRecordPayloadBytesMax), owlRingRecordsMin * oneBlock));
}

/** Blocks per record so a record's payload stays within owlRecordPayloadBytesMax. */
export function owlBlocksPerRecord(slotBytes: number, n: number): number {
  return Math.max(1, Math.floor(owlRecordPayloadBytesMax / (slotBytes * n)));
}

export class Owl {
  readonly path: string;
  readonly volumeId: Buffer;
  readonly ringBytes: number;
  /** Records found at open, in sequence order; empty once replayed and retired. */
  outstanding: readonly OwlOutstanding[];
  readonly #fh: FileHandle;
  readonly #loopWriteBytesMax: number;
  readonly #writevSync: typeof writevSync;
  /** Journal writevs under way on the thread pool; while any is, runs do not take the loop path. */
  #poolWrites = 0;
  /** performance.now() before which every run goes to the thread pool (after a slow loop write). */
  #loopWritesPausedUntil = 0;
  #counter: number;
  #retired: number;
  #nextSeq: number;
  /** Ring offset where the next record goes (if it fits before the end). */
  #head: number;
  #used = 0;
  readonly #live: OwlEntry[] = [];
  #queue: Queued[] = [];
  /** The newest group in flight (it settles after every earlier one), or null. */
  #writing: Promise<void> | null = null;
  #groups = 0;
  readonly #syncIntervalMinMs: number;
  /** When the last journal sync began (performance.now()), for owlSyncIntervalMinMs. */
  #lastSyncStart = Number.NEGATIVE_INFINITY;
  /** hurry() was called since the last sync began: the next one does not wait. */
  #hurried = false;
  /** Callers of urge() still waiting for durability: while any are, syncs are not spaced at all. */
  #urgent = 0;
  /** Ends the current wait between syncs early, while there is one. */
  #cutGap: (() => void) | null = null;
  /** True once every group started so far is in the file (false for ever after one failed). */
  #inFile: Promise<boolean> = Promise.resolve(true);
  /** The fdatasync under way (or the last one), and the one queued to start after it. */
  #runningSync: Promise<void> = Promise.resolve();
  #nextSync: Promise<void> | null = null;
  #kickPending = false;
  #admission: Promise<void> = Promise.resolve();
  #superWrites: Promise<void> = Promise.resolve();
  #broken: StripvaultError | null = null;
  #closed = false;
  #makeRoom: (() => Promise<void>) | null = null;
  /** A background retirement started by complete(), if one is running. */
  #early: Promise<void> | null = null;
  #roomWaiters: Array<() => void> = [];

  private constructor(path: string, fh: FileHandle, sb: OwlSuperblock, outstanding: OwlOutstanding[], head: number, opts: OwlOptions) {
    this.path = path;
    this.#fh = fh;
    this.#loopWriteBytesMax = opts.loopWriteBytesMax ?? owlLoopWriteBytesMax;
    assert(Number.isSafeInteger(this.#loopWriteBytesMax) && this.#loopWriteBytesMax >= 0, 'OWL loop write limit');
    this.#writevSync = opts.writevSync ?? writevSync;
    this.#syncIntervalMinMs = opts.syncIntervalMinMs ?? owlSyncIntervalMinMs;
    assert(Number.isFinite(this.#syncIntervalMinMs) && this.#syncIntervalMinMs >= 0, 'OWL sync interval');
    this.volumeId = sb.volumeId;
    this.ringBytes = sb.ringBytes;
    this.#counter = sb.counter;
    this.#retired = sb.retired;
    this.outstanding = outstanding;
    const last = outstanding.at(-1);
    this.#nextSeq = (last?.seq ?? sb.retired) + 1;
    this.#head = head % sb.ringBytes;
  }

  /** Creates an empty list (refuses to replace an existing file). */
  static async create(path: string, volumeId: Buffer, ringBytes = owlRingBytesDefault, opts: OwlOptions = {}): Promise<Owl> {
    assert(volumeId.length === 16, 'volume id');
    if (!Number.isSafeInteger(ringBytes) || ringBytes % owlRecordAlign !== 0 || ringBytes > owlRingBytesMax) {
      fail(ErrorCode.InvalidArgument, `OWL ring size ${ringBytes} must be a multiple of ${owlRecordAlign} up to ${owlRingBytesMax}`);
    }
    const fh = await open(path, 'wx+', owlFileMode);
    try {
      const sb: OwlSuperblock = { volumeId, ringBytes, counter: 1, retired: 0, tail: 0 };
      await fh.truncate(owlRingOffset + ringBytes);
      await fh.write(encodeOwlSuperblock(sb), 0, owlSuperBytes, 0);
      await fh.sync();
      // The directory entry too: a journal that vanishes after a power cut protects nothing.
      const dir = await open(dirname(path), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
      return new Owl(path, fh, sb, [], 0, opts);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Opens a list and finds what is outstanding (see `outstanding`). */
  static async open(path: string, volumeId: Buffer, opts: OwlOptions = {}): Promise<Owl> {
    const fh = await open(path, 'r+');
    try {
      const both = Buffer.alloc(2 * owlSuperBytes);
      await fh.read(both, 0, both.length, 0);
      const copies = [decodeOwlSuperblock(both.subarray(0, owlSuperBytes)), decodeOwlSuperblock(both.subarray(owlSuperBytes))].filter(
        (s): s is OwlSuperblock => s !== null,
      );
      const sb = copies.sort((a, b) => b.counter - a.counter)[0];
      if (!sb) fail(ErrorCode.OwlCorrupt, `${path}: no valid outstanding write list superblock`);
      if (!sb.volumeId.equals(volumeId)) fail(ErrorCode.OwlCorrupt, `${path} belongs to another volume`);
      const size = (await fh.stat()).size;
      // A tail exactly at the ring's end (written before heads wrapped there) means its start.
      if (sb.ringBytes % owlRecordAlign !== 0 || sb.ringBytes < 1 || sb.tail > sb.ringBytes || size < owlRingOffset + sb.ringBytes) {
        fail(ErrorCode.OwlCorrupt, `${path}: superblock does not match the file`, { ringBytes: sb.ringBytes, tail: sb.tail, size });
      }
      const { records, head } = await scanChain(fh, sb.tail === sb.ringBytes ? { ...sb, tail: 0 } : sb);
      return new Owl(path, fh, sb, records, head, opts);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Called when an append finds the ring full: flush the strips and retire (the volume provides it). */
  onFull(makeRoom: () => Promise<void>): void {
    this.#makeRoom = makeRoom;
  }

  usage(): OwlUsage {
    return { ringBytes: this.ringBytes, usedBytes: this.#used, entries: this.#live.length };
  }

  async readPayload(rec: OwlOutstanding): Promise<Buffer> {
    const buf = Buffer.alloc(rec.payloadBytes);
    const { bytesRead } = await this.#fh.read(buf, 0, buf.length, owlRingOffset + rec.pos + owlRecordHeaderBytes);
    if (bytesRead !== buf.length) fail(ErrorCode.OwlCorrupt, `${this.path}: record ${rec.seq} is truncated`);
    return buf;
  }

  /**
   * Journals one write's shares; resolves once they are durable. Only then may any of them be
   * written to a strip. `written` is called earlier, once the record is in the file (the page
   * cache, not yet the disk): from then on the write survives a crash of this process, which is
   * when the volume acknowledges it (a FLUSH waits for the rest).
   */
  async append(a: OwlAppend, opts: { written?: () => void } = {}): Promise<OwlEntry> {
    const [entry] = await this.appendAll([a], opts.written ? [opts.written] : []);
    return entry!;
  }

  /**
   * Journals several writes' records, in order, as append() does each (`written[k]` for record
   * k). Resolves with their entries once every one is durable, or rejects once every one has
   * settled (no writev is still reading the shares then). One admission and one promise for
   * them all: a group of small writes pays the bookkeeping once.
   */
  appendAll(list: readonly OwlAppend[], written: readonly ((() => void) | undefined)[] = []): Promise<OwlEntry[]> {
    try {
      this.#check();
      let total = 0;
      for (const a of list) {
        assert(a.targets.length === a.shares.length && a.targets.length >= 1, 'OWL append targets');
        assert(a.targets.length * a.count * a.slotBytes <= owlRecordPayloadBytesMax, 'OWL record payload too large');
        for (const sh of a.shares) assert(sh.length === a.count * a.slotBytes, 'OWL share buffer length');
        total += owlRecordBytes(a.targets.length * a.count * a.slotBytes);
      }
      // None of a list's records completes before all are journalled: a list that, with a wrap's
      // skip, could need more than the whole ring would wait for room only it can free.
      assert(total * owlRingRecordsMin <= this.ringBytes, 'OWL list larger than half the ring');
    } catch (e) {
      return Promise.reject(e);
    }
    if (list.length === 0) return Promise.resolve([]);
    return new Promise<OwlEntry[]>((resolve, reject) => {
      const entries: OwlEntry[] = [];
      let pending = list.length;
      let failure: { error: unknown } | null = null;
      const settle = (error?: { error: unknown }): void => {
        if (error !== undefined) failure ??= error;
        if (--pending > 0) return;
        if (failure !== null) reject(failure.error);
        else resolve(entries);
      };
      // Made once per list, not per record: under tsx every named closure costs a defineProperty.
      const recordDone = (): void => settle();
      const recordFailed = (e: unknown): void => settle({ error: e });
      // Admission in arrival order: a large write waiting for room is not overtaken for ever by small ones.
      let k = 0;
      const admitted = this.#admission.then(async () => {
        for (; k < list.length; k++) {
          const a = list[k]!;
          const payloadBytes = a.targets.length * a.count * a.slotBytes;
          const recordBytes = owlRecordBytes(payloadBytes);
          if (!this.#fits(recordBytes)) await this.#waitForRoom(recordBytes);
          this.#check();
          // Encoded before the list changes: a header that cannot be made leaves no hole in the chain.
          // Field by field, not a spread of `a`: the spread took a slow path (about 5 µs a record,
          // profiled at 4 KiB random writes), a literal of fixed shape does not.
          const header = encodeOwlRecordHeader({
            seq: this.#nextSeq,
            volumeId: this.volumeId,
            first: a.first,
            count: a.count,
            epoch: a.epoch,
            generation: a.generation,
            targets: a.targets,
            slotBytes: a.slotBytes,
            payloadBytes,
          });
          let pos = this.#head;
          let bytes = recordBytes;
          if (pos + recordBytes > this.ringBytes) {
            bytes += this.ringBytes - pos;
            pos = 0;
          }
          const entry: OwlEntry = { seq: this.#nextSeq++, pos, bytes, state: 'journaling' };
          this.#head = (pos + recordBytes) % this.ringBytes;
          this.#used += bytes;
          this.#live.push(entry);
          entries.push(entry);
          const pad = recordBytes - owlRecordHeaderBytes - payloadBytes;
          const shares = joinAdjacent(a.shares);
          const buffers = pad > 0 ? [header, ...shares, zeroPad.subarray(0, pad)] : [header, ...shares];
          this.#queue.push({ entry, recordBytes, buffers, resolve: recordDone, reject: recordFailed, written: written[k] });
          this.#kick();
        }
      });
      // This record and every later one of the list are refused; earlier ones are queued and settle as
      // written. Those can never complete (the caller sees the list fail), so nothing could retire past
      // them: unless the list is already broken or closed, it is broken now (fail closed, replay at reopen).
      this.#admission = admitted.catch((e: unknown) => {
        if (k > 0 && this.#broken === null && !this.#closed) {
          this.#broken = new StripvaultError(ErrorCode.VolumeUnavailable, `outstanding write list ${this.path}: a group was admitted only in part: ${(e as Error)?.message ?? String(e)}`, { path: this.path }, { cause: e });
          this.#wakeRoomWaiters();
        }
        for (; k < list.length; k++) settle({ error: e });
      });
    });
  }

  /** Every target strip has the entry's shares (not necessarily durably yet). */
  complete(entry: OwlEntry): void {
    assert(entry.state === 'journaled', 'OWL entry completed twice or before it was journaled');
    entry.state = 'completed';
    this.#wakeRoomWaiters();
    if (this.#early === null && this.#makeRoom !== null && !this.#closed && this.#used >= this.ringBytes * owlRetireEarlyFraction) {
      const early = this.#makeRoom().catch(() => undefined);
      this.#early = early;
      void early.finally(() => {
        if (this.#early === early) this.#early = null;
      });
    }
  }

  /**
   * The write behind a journalled entry failed and its shares may be on some strips only. The entry
   * stays for replay at the next open; until then nothing can retire past it, so the list refuses
   * further appends (fail closed) instead of letting writes wait for room that never comes.
   */
  abandon(entry: OwlEntry, cause: unknown): void {
    assert(entry.state === 'journaled', 'only a journaled entry is abandoned');
    this.#broken ??= new StripvaultError(
      ErrorCode.VolumeUnavailable,
      `a journalled write (seq ${entry.seq}) failed; the volume must be reopened to replay it: ${(cause as Error)?.message ?? String(cause)}`,
      { seq: entry.seq },
      { cause },
    );
    this.#wakeRoomWaiters();
  }

  /** Entries whose shares are on the strips but maybe not durable: snapshot before a strip flush. */
  completed(): OwlEntry[] {
    return this.#live.filter((e) => e.state === 'completed');
  }

  /**
   * After a strip flush that began after `entries` completed: they are durable on the strips.
   * Retires the oldest durable run and makes that durable before its space is reused.
   */
  async retire(entries: readonly OwlEntry[]): Promise<void> {
    for (const e of entries) if (e.state === 'completed') e.state = 'durable';
    let n = 0;
    while (n < this.#live.length && this.#live[n]!.state === 'durable') n++;
    if (n === 0) return;
    const last = this.#live[n - 1]!;
    const nextLive = this.#live[n];
    await this.#writeSuper(last.seq, nextLive ? nextLive.pos : this.#head);
    // Entries may have been retired by a concurrent call meanwhile: free only what is still ours.
    // One splice, not a shift per entry: thousands of small records can retire at once.
    let drop = 0;
    while (drop < this.#live.length && this.#live[drop]!.seq <= last.seq) this.#used -= this.#live[drop++]!.bytes;
    this.#live.splice(0, drop);
    this.#wakeRoomWaiters();
  }

  /**
   * After every outstanding record has been replayed and the strips flushed: retires them and skips
   * sequence numbers past any record of an unfinished group that may still sit in the ring.
   */
  async retireOutstanding(): Promise<void> {
    assert(this.#live.length === 0, 'recovery retires before any new write');
    const skip = this.ringBytes / owlRecordAlign + 1;
    this.#nextSeq += skip;
    await this.#writeSuper(this.#nextSeq - 1, this.#head);
    this.outstanding = [];
  }

  /** Waits for journal writes in flight; the file is closed. Outstanding entries stay in the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.hurry();
    await this.#admission;
    // Appends already admitted are journaled now, not at a next turn that finds the file closed.
    this.#startGroups();
    while (this.#writing) await this.#writing;
    await this.#early;
    await this.#superWrites;
    await this.#fh.close();
  }

  #check(): void {
    if (this.#broken) throw this.#broken;
    if (this.#closed) fail(ErrorCode.VolumeClosed, 'outstanding write list is closed');
  }

  #fits(recordBytes: number): boolean {
    const need = this.#head + recordBytes > this.ringBytes ? this.ringBytes - this.#head + recordBytes : recordBytes;
    return this.ringBytes - this.#used >= need;
  }

  async #waitForRoom(recordBytes: number): Promise<void> {
    assert(recordBytes * owlRingRecordsMin <= this.ringBytes, 'OWL ring too small for its records');
    if (this.#fits(recordBytes)) return;
    // Room comes from retiring entries, which must be journaled first: no spacing of syncs meanwhile.
    const calm = this.urge();
    try {
      await this.#waitForRoomUrged(recordBytes);
    } finally {
      calm();
    }
  }

  async #waitForRoomUrged(recordBytes: number): Promise<void> {
    while (!this.#fits(recordBytes)) {
      this.#check();
      const woken = new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
      // Entries still being written cannot be retired yet; their completion wakes us to try again.
      const oldest = this.#live[0]?.state;
      if (this.#makeRoom && (oldest === 'completed' || oldest === 'durable')) {
        await this.#makeRoom();
      } else {
        await woken;
      }
    }
  }

  #wakeRoomWaiters(): void {
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Starts a group with whatever is queued, once per turn of the event loop (so one turn's appends
   * share a writev). A group's records are in the file — and its writes acknowledged — as soon as
   * its writev returns, without waiting for anyone's sync; durability comes from a shared
   * fdatasync that began after the writev (group commit). Groups still become journaled strictly
   * in order — a group is resolved only after every earlier one — so no share reaches a strip while
   * an earlier record could still be missing (replay stops at the first gap).
   */
  #kick(): void {
    if (this.#kickPending) return;
    this.#kickPending = true;
    setImmediate(() => {
      this.#kickPending = false;
      this.#startGroups();
    });
  }

  #startGroups(): void {
    while (this.#queue.length > 0 && this.#groups < owlGroupsInFlightMax) {
      const batch = this.#queue;
      this.#queue = [];
      this.#groups++;
      const wrote: Promise<void> = this.#broken
        ? Promise.reject(this.#broken)
        : (async () => {
            // Records of a group sit back to back in the ring (but for a wrap): one writev per run.
            // Settled, not raced: no writev may still be reading the shares when the group fails.
            const runs = await Promise.allSettled(
              contiguousRuns(batch).map(async (run) => {
                const expected = run.buffers.reduce((n, b) => n + b.length, 0);
                const bytesWritten = this.#onLoop(expected) ? this.#writeOnLoop(run.buffers, run.pos) : await this.#writeOnPool(run.buffers, run.pos);
                // A short write (a full disk on the ring's first lap: the file is sparse) is a failed one.
                if (bytesWritten !== expected) throw new Error(`short write: ${bytesWritten} of ${expected} bytes`);
              }),
            );
            const failed = runs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
            if (failed !== undefined) throw failed.reason;
          })();
      // A record is acknowledged only once it and every record before it are in the file: after a
      // crash of the process the replay follows the chain from the tail and stops at the first gap.
      const inFile = Promise.all([this.#inFile, wrote.then(() => true, () => false)]).then(([before, mine]) => before && mine);
      this.#inFile = inFile;
      void inFile.then((ok) => {
        if (ok && this.#broken === null) for (const q of batch) q.written?.();
      });
      const synced = wrote.then(() => this.#syncAfterNow());
      const previous = this.#writing ?? Promise.resolve();
      const settled: Promise<void> = (async () => {
        let error: unknown = null;
        try {
          await synced;
        } catch (e) {
          error = e;
        }
        await previous;
        if (error !== null && this.#broken === null) {
          this.#broken = new StripvaultError(ErrorCode.DeviceIo, `outstanding write list ${this.path} cannot be written: ${(error as Error).message}`, { path: this.path }, { cause: error });
        }
        if (this.#broken !== null) {
          // Also a group that synced after an earlier one failed: it sits behind a hole.
          for (const q of batch) q.reject(this.#broken);
          this.#wakeRoomWaiters();
          return;
        }
        for (const q of batch) {
          q.entry.state = 'journaled';
          q.resolve();
        }
      })();
      this.#writing = settled;
      // The slot is free once the writev has returned (see owlGroupsInFlightMax).
      void wrote.then(noop, noop).then(() => {
        this.#groups--;
        if (this.#queue.length > 0) this.#startGroups();
      });
      void settled.finally(() => {
        if (this.#writing === settled) this.#writing = null;
      });
    }
  }

  /**
   * Whether a run of this size is written from the event loop: small, no pool write of this file
   * under way (the loop would wait on the file's lock while a pool thread copies megabytes), and no
   * recent stall.
   */
  #onLoop(bytes: number): boolean {
    return bytes <= this.#loopWriteBytesMax && this.#poolWrites === 0 && performance.now() >= this.#loopWritesPausedUntil;
  }

  #writeOnLoop(buffers: readonly Uint8Array[], pos: number): number {
    const started = performance.now();
    try {
      return this.#writevSync(this.#fh.fd, buffers as Uint8Array[], owlRingOffset + pos);
    } finally {
      const now = performance.now();
      if (now - started > owlLoopWriteStallMs) this.#loopWritesPausedUntil = now + owlLoopWritePauseMs;
    }
  }

  async #writeOnPool(buffers: readonly Uint8Array[], pos: number): Promise<number> {
    this.#poolWrites++;
    try {
      return (await this.#fh.writev(buffers as Uint8Array[], owlRingOffset + pos)).bytesWritten;
    } finally {
      this.#poolWrites--;
    }
  }

  /**
   * An fdatasync that begins after this call, shared: callers arriving while one runs all wait for
   * the single next one, so a disk that takes a millisecond per sync still commits every group
   * written meanwhile in one.
   */
  #syncAfterNow(): Promise<void> {
    if (this.#nextSync === null) {
      const next: Promise<void> = this.#runningSync
        .catch(() => undefined)
        .then(() => this.#spaced())
        .then(() => {
          this.#nextSync = null;
          this.#hurried = false;
          this.#lastSyncStart = performance.now();
          this.#runningSync = this.#fh.datasync();
          return this.#runningSync;
        });
      this.#nextSync = next;
    }
    return this.#nextSync;
  }

  /** Resolves once owlSyncIntervalMinMs has passed since the last sync began, or at once if hurried. */
  #spaced(): Promise<void> | undefined {
    const wait = this.#lastSyncStart + this.#syncIntervalMinMs - performance.now();
    if (this.#hurried || this.#urgent > 0 || this.#closed || wait <= 0) return undefined;
    return new Promise<void>((resolve) => {
      const go = (): void => {
        clearTimeout(timer);
        this.#cutGap = null;
        resolve();
      };
      const timer = setTimeout(go, wait);
      this.#cutGap = go;
    });
  }

  /**
   * A one-off wait for durability (close; urge() is the form for callers that wait a while): the
   * next journal sync starts as soon as the running one (if any) ends, without waiting out
   * owlSyncIntervalMinMs.
   */
  hurry(): void {
    this.#hurried = true;
    this.#cutGap?.();
  }

  /**
   * As hurry(), for as long as the caller waits (until it calls the function returned): every sync
   * meanwhile starts without spacing. A one-shot hurry can be used up by a sync that began before
   * the caller's record was in the file, and a chain of waiters would pay the spacing per link.
   */
  urge(): () => void {
    this.#urgent++;
    this.hurry();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#urgent--;
    };
  }

  #writeSuper(retired: number, tail: number): Promise<void> {
    const run = async (): Promise<void> => {
      if (retired <= this.#retired) return;
      const counter = this.#counter + 1;
      const sb = encodeOwlSuperblock({ volumeId: this.volumeId, ringBytes: this.ringBytes, counter, retired, tail });
      // Alternate copies: a torn superblock write leaves the other, older one valid.
      await this.#fh.write(sb, 0, owlSuperBytes, (counter % 2) * owlSuperBytes);
      await this.#fh.datasync();
      this.#counter = counter;
      this.#retired = retired;
    };
    const p = this.#superWrites.then(run);
    this.#superWrites = p.catch(() => undefined);
    return p;
  }
}

/** Padding to a record's alignment; never written to (only ever a writev source). */
const zeroPad = Buffer.alloc(owlRecordAlign);

/**
 * One view for shares that lie back to back in one buffer (the seal output lays a write's targets
 * out so): fewer pieces for writev to gather.
 */
function joinAdjacent(views: readonly Uint8Array[]): Uint8Array[] {
  const first = views[0];
  if (first === undefined) return [];
  let end = first.byteOffset + first.byteLength;
  for (let i = 1; i < views.length; i++) {
    const v = views[i]!;
    if (v.buffer !== first.buffer || v.byteOffset !== end) return [...views];
    end += v.byteLength;
  }
  return [new Uint8Array(first.buffer, first.byteOffset, end - first.byteOffset)];
}

/** Queued records grouped into runs that are contiguous in the ring, each at most iovMax buffers. */
function contiguousRuns(batch: readonly Queued[]): Array<{ pos: number; buffers: Uint8Array[] }> {
  const runs: Array<{ pos: number; end: number; buffers: Uint8Array[] }> = [];
  for (const q of batch) {
    const last = runs.at(-1);
    if (last !== undefined && last.end === q.entry.pos && last.buffers.length + q.buffers.length <= iovMax) {
      last.buffers.push(...q.buffers);
      last.end += q.recordBytes;
    } else {
      runs.push({ pos: q.entry.pos, end: q.entry.pos + q.recordBytes, buffers: [...q.buffers] });
    }
  }
  return runs;
}

/**
 * Follows the chain of records from the superblock's tail: seq retired+1, retired+2, … each either
 * right after the previous one or, if it did not fit there, at the start of the ring.
 */
async function scanChain(fh: FileHandle, sb: OwlSuperblock): Promise<{ records: OwlOutstanding[]; head: number }> {
  const records: OwlOutstanding[] = [];
  const header = Buffer.alloc(owlRecordHeaderBytes);
  let pos = sb.tail;
  let seq = sb.retired + 1;
  let scanned = 0;
  const at = async (p: number): Promise<OwlRecordHeader | null> => {
    if (p + owlRecordHeaderBytes > sb.ringBytes) return null;
    const { bytesRead } = await fh.read(header, 0, owlRecordHeaderBytes, owlRingOffset + p);
    if (bytesRead !== owlRecordHeaderBytes) return null;
    const h = decodeOwlRecordHeader(header);
    if (h === null || h.seq !== seq || !h.volumeId.equals(sb.volumeId) || p + owlRecordBytes(h.payloadBytes) > sb.ringBytes) return null;
    return h;
  };
  while (scanned < sb.ringBytes) {
    let h = await at(pos);
    if (h === null && pos !== 0) {
      const wrapped = await at(0);
      if (wrapped !== null) {
        scanned += sb.ringBytes - pos;
        pos = 0;
        h = wrapped;
      }
    }
    if (h === null) break;
    records.push({ ...h, pos });
    const bytes = owlRecordBytes(h.payloadBytes);
    pos += bytes;
    scanned += bytes;
    seq++;
  }
  return { records, head: pos };
}

function noop(): void {}
