/**
 * A volume: N strips with an M-of-N redundancy, read and written as a byte-addressed disk.
 * Splits byte ranges into primary blocks, serialises overlapping operations, reads the cheapest M
 * strips first and the rest only when needed, writes every reachable strip, keeps generations
 * unique (generation-ledger.ts), and keeps serving while at least M strips answer.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, StripvaultError, assert, fail } from '../errors.ts';
import { validateBlockBytes, validateGeometry } from '../split/geometry.ts';
import { volumeIdBytes } from '../split/share-binding.ts';
import {
  NotEnoughSharesError,
  openBlock,
  sealBlock,
  sessionKeyBytes,
  type ShareCandidate,
  type ShareRejection,
} from '../split/split.ts';
import { KeySlotState, newHeader, type SessionKeySlot, type Wrapper } from '../strip/header.ts';
import { dataOffset, keySlotsPerSection, sectionCountFor, sectionOfSlot, slotBytesFor, stripBytesFor } from '../strip/layout.ts';
import { decodeSlot, encodeSlot } from '../strip/slot.ts';
import { StatusCode } from '../strip/status-log.ts';
import { Strip, type StripLocation } from '../strip/strip.ts';
import { GenerationLedger } from './generation-ledger.ts';
import { RangeLock } from './range-lock.ts';

/** Blocks sealed or opened per device request: bounds memory per step and lets the event loop breathe. */
export const blocksPerIoMax = 256;
/** Individual shares remembered as needing repair; past this the volume asks for a full scrub instead. */
export const repairListMax = 4096;
/** Write-zeroes and trim proceed in pieces of this many blocks (bounded memory for any length). */
export const zeroPieceBlocks = 2048;
/** Largest single read or write request, in bytes. */
export const requestBytesMax = 64 * 1024 * 1024;

export type StripState = 'healthy' | 'stale' | 'missing' | 'failed';
export type VolumeState = 'healthy' | 'degraded' | 'failed' | 'closed';

export interface StripHealth {
  readonly index: number;
  readonly state: StripState;
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
  onGenerationReserved?(reservedUpTo: number): Promise<void>;
  onStripState?(index: number, state: StripState, reason: string | undefined): void | Promise<void>;
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
}

interface Member {
  readonly index: number;
  strip: Strip | null;
  state: StripState;
  reason: string | undefined;
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
  private readonly lock = new RangeLock();
  private readonly hooks: VolumeHooks;
  private readonly repairs = new Map<string, RepairItem>();
  private repairOverflow = false;
  private closed = false;
  /** Serialises header rewrites (reservations, stale marks): they rewrite the same header copies. */
  private headerWrites: Promise<void> = Promise.resolve();

  private constructor(first: Strip, members: Member[], epoch: number, floor: number, hooks: VolumeHooks) {
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
    this.ledger = new GenerationLedger(floor, (upTo) => this.persistReservation(upTo));
  }

  static async create(opts: CreateVolumeOptions): Promise<Volume> {
    const { m, n } = validateGeometry(opts.m, opts.n);
    const blockBytes = validateBlockBytes(opts.blockBytes);
    if (!Number.isSafeInteger(opts.sizeBytes) || opts.sizeBytes < blockBytes || opts.sizeBytes % blockBytes !== 0) {
      fail(ErrorCode.InvalidArgument, `volume size ${opts.sizeBytes} must be a positive multiple of the block size ${blockBytes}`);
    }
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
    const originId = opts.originId ?? randomBytes(16);
    const createdAtMs = Date.now();
    const strips: Strip[] = [];
    for (let index = 0; index < n; index++) {
      const keys: SessionKeySlot[][] = [];
      for (let s = 0; s < sections; s++) {
        const slots: SessionKeySlot[] = [{ state: KeySlotState.Active, serial: 1, key: randomBytes(sessionKeyBytes) }];
        while (slots.length < keySlotsPerSection) slots.push({ state: KeySlotState.Empty, serial: 0, key: Buffer.alloc(sessionKeyBytes) });
        keys.push(slots);
      }
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
    const members = strips.map((strip, index): Member => ({ index, strip, state: 'healthy', reason: undefined }));
    return new Volume(strips[0]!, members, 1, 1, opts.hooks ?? {});
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
        loaded.push({ index, strip: await Strip.load(loc, opts.wrappers) });
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
    let epoch = 0;
    let floor = opts.generationFloor ?? 0;
    for (const l of present) {
      const b = l.strip!.header.body;
      stale |= b.staleStrips;
      epoch = Math.max(epoch, b.epoch);
      floor = Math.max(floor, b.generationReserved);
    }
    const members = loaded.map((l): Member => {
      if (l.strip === null) return { index: l.index, strip: null, state: 'missing', reason: l.reason };
      const isStale = (stale & (1 << l.index)) !== 0;
      return { index: l.index, strip: l.strip, state: isStale ? 'stale' : 'healthy', reason: isStale ? 'missed writes while absent' : undefined };
    });
    const volume = new Volume(first, members, epoch, floor, opts.hooks ?? {});
    for (const mem of members) if (mem.strip) await mem.strip.appendStatus(StatusCode.Opened);
    // Reserve now, so a volume that is opened and immediately written never waits mid-request.
    await volume.ledger.take(1);
    return volume;
  }

  /** Releases nothing on the devices (the caller owns them); flushes and refuses further I/O. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush().catch(() => undefined);
    for (const mem of this.available()) await mem.strip!.appendStatus(StatusCode.Closed).catch(() => undefined);
    await this.flush().catch(() => undefined);
    this.closed = true;
  }

  health(): VolumeHealth {
    const strips = this.members.map((m) => ({ index: m.index, state: m.state, ...(m.reason ? { reason: m.reason } : {}) }));
    const usable = this.members.filter((m) => m.state === 'healthy' || m.state === 'stale').length;
    const healthy = this.members.filter((m) => m.state === 'healthy').length;
    const state: VolumeState = this.closed ? 'closed' : usable < this.m ? 'failed' : healthy === this.n && this.repairs.size === 0 && !this.repairOverflow ? 'healthy' : 'degraded';
    return { state, strips, repair: [...this.repairs.values()], repairOverflow: this.repairOverflow };
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
    await this.modify(offset, data.length, (blocks, start) => {
      blocks.set(data, start);
    });
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
    await this.onEachAvailable((strip) => strip.flush(), 'flush');
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

  private async writeBlocks(first: number, blocks: Buffer, isZero: (i: number) => boolean): Promise<void> {
    this.checkOpen();
    const targets = this.available();
    if (targets.length < this.m) this.unavailable('write');
    const bb = this.blockBytes;
    const count = blocks.length / bb;
    const generation = await this.ledger.take(count);
    const out = targets.map(() => Buffer.allocUnsafe(count * this.slotBytes));
    const position = new Map(targets.map((t, i) => [t.index, i]));
    const targetSet = new Set(position.keys());
    for (let i = 0; i < count; i++) {
      const address = first + i;
      const shares = sealBlock({
        volumeId: this.idBytes,
        m: this.m,
        n: this.n,
        blockBytes: bb,
        address,
        generation: generation + i,
        epoch: this.epoch,
        block: isZero(i) ? null : blocks.subarray(i * bb, (i + 1) * bb),
        sessionKey: (stripIndex) => this.activeKey(stripIndex, address, targetSet),
      });
      for (const share of shares) {
        const p = position.get(share.stripIndex);
        if (p !== undefined) encodeSlot(share, out[p]!.subarray(i * this.slotBytes, (i + 1) * this.slotBytes));
      }
    }
    const results = await Promise.allSettled(targets.map((t, p) => t.strip!.writeSlots(first, out[p]!)));
    let ok = 0;
    for (let p = 0; p < targets.length; p++) {
      const r = results[p]!;
      if (r.status === 'fulfilled') ok++;
      else await this.markFailed(targets[p]!, r.reason);
    }
    if (ok < this.m) this.unavailable('write');
    // Strips that were not written now hold older data: record that on the ones that were.
    const missed = this.members.filter((mem) => mem.state === 'missing' || mem.state === 'failed');
    await this.markStale(missed);
  }

  /** Reads and opens `count` blocks from `first`; returns count × blockBytes bytes. */
  private async readBlocks(first: number, count: number): Promise<Buffer> {
    this.checkOpen();
    const out = Buffer.allocUnsafe(count * this.blockBytes);
    for (let done = 0; done < count; done += blocksPerIoMax) {
      const n = Math.min(blocksPerIoMax, count - done);
      (await this.readChunk(first + done, n)).copy(out, done * this.blockBytes);
    }
    return out;
  }

  private async readChunk(first: number, count: number): Promise<Buffer> {
    const bb = this.blockBytes;
    const slotData = new Map<number, Buffer>();
    const readFrom = async (members: Member[]): Promise<void> => {
      const results = await Promise.allSettled(members.map((mem) => mem.strip!.readSlots(first, count)));
      for (let i = 0; i < members.length; i++) {
        const r = results[i]!;
        if (r.status === 'fulfilled') slotData.set(members[i]!.index, r.value);
        else await this.markFailed(members[i]!, r.reason);
      }
    };
    // The cheapest M: healthy strips first, data-fragment strips (index < M) first among them, since
    // the systematic code then needs no decoding. Stale strips only if nothing else is left.
    const order = this.available().sort((a, b) => rank(a) - rank(b) || a.index - b.index);
    let next = 0;
    while (slotData.size < this.m && next < order.length) {
      const batch = order.slice(next, next + (this.m - slotData.size));
      next += batch.length;
      await readFrom(batch);
    }
    if (slotData.size < this.m) this.unavailable('read');
    const out = Buffer.allocUnsafe(count * bb);
    for (let i = 0; i < count; i++) {
      const address = first + i;
      let result;
      for (;;) {
        const complete = next >= order.length;
        try {
          result = openBlock({
            volumeId: this.idBytes,
            m: this.m,
            n: this.n,
            blockBytes: bb,
            address,
            shares: this.candidates(slotData, i),
            sessionKey: (stripIndex, keySlot) => this.keyFor(stripIndex, address, keySlot),
            complete,
          });
          break;
        } catch (e) {
          if (!(e instanceof NotEnoughSharesError)) throw e;
          if (!e.needMore || complete) {
            this.noteRejections(address, e.rejected);
            throw e;
          }
          // Inconsistent or too few good shares: bring in every remaining strip once for this chunk.
          const rest = order.slice(next);
          next = order.length;
          await readFrom(rest);
        }
      }
      this.noteRejections(address, result.rejected);
      result.block.copy(out, i * bb);
    }
    return out;
  }

  private candidates(slotData: Map<number, Buffer>, i: number): ShareCandidate[] {
    const list: ShareCandidate[] = [];
    for (const [index, data] of slotData) {
      list.push(decodeSlot(index, data.subarray(i * this.slotBytes, (i + 1) * this.slotBytes)));
    }
    return list;
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

  private activeKey(stripIndex: number, address: number, targets: ReadonlySet<number>): { key: Buffer; keySlot: number } | null {
    const strip = this.members[stripIndex]!.strip;
    if (strip === null || !targets.has(stripIndex)) return null;
    const slots = strip.header.body.sections[sectionOfSlot(address, this.slotBytes)]!;
    const keySlot = slots.findIndex((s) => s.state === KeySlotState.Active);
    assert(keySlot >= 0, 'section without an active session key');
    return { key: slots[keySlot]!.key, keySlot };
  }

  private keyFor(stripIndex: number, address: number, keySlot: number): Buffer | undefined {
    const strip = this.members[stripIndex]?.strip;
    if (!strip) return undefined;
    const slot = strip.header.body.sections[sectionOfSlot(address, this.slotBytes)]?.[keySlot];
    return slot && slot.state !== KeySlotState.Empty ? slot.key : undefined;
  }

  private available(): Member[] {
    return this.members.filter((m) => m.strip !== null && (m.state === 'healthy' || m.state === 'stale'));
  }

  private async onEachAvailable(op: (strip: Strip) => Promise<void>, what: string): Promise<void> {
    const targets = this.available();
    const results = await Promise.allSettled(targets.map((t) => op(t.strip!)));
    let ok = 0;
    for (let i = 0; i < targets.length; i++) {
      const r = results[i]!;
      if (r.status === 'fulfilled') ok++;
      else await this.markFailed(targets[i]!, r.reason);
    }
    if (ok < this.m) this.unavailable(what);
  }

  private async markFailed(mem: Member, cause: unknown): Promise<void> {
    if (mem.state === 'failed') return;
    mem.state = 'failed';
    mem.reason = cause instanceof StripvaultError ? `${cause.code}: ${cause.message}` : String(cause);
    await this.hooks.onStripState?.(mem.index, 'failed', mem.reason);
  }

  /** Records in every reachable header that these strips missed writes (once per strip). */
  private async markStale(missed: Member[]): Promise<void> {
    const bits = missed.reduce((acc, m) => acc | (1 << m.index), 0);
    const targets = this.available();
    if (bits === 0 || targets.every((t) => (t.strip!.header.body.staleStrips & bits) === bits)) return;
    await this.rewriteHeaders((body) => {
      body.staleStrips |= bits;
    });
    for (const m of missed) await this.hooks.onStripState?.(m.index, 'stale', 'missed writes while absent');
  }

  private async persistReservation(upTo: number): Promise<void> {
    await this.rewriteHeaders((body) => {
      body.generationReserved = Math.max(body.generationReserved, upTo);
    });
    await this.hooks.onGenerationReserved?.(upTo);
  }

  /** Applies `edit` to every reachable strip's header and makes it durable on at least M of them. */
  private rewriteHeaders(edit: (body: Strip['header']['body']) => void): Promise<void> {
    const run = async (): Promise<void> => {
      await this.onEachAvailable(async (strip) => {
        edit(strip.header.body);
        await strip.writeHeader();
        await strip.flush();
      }, 'header update');
    };
    const p = this.headerWrites.then(run, run);
    this.headerWrites = p.catch(() => undefined);
    return p;
  }

  private checkRange(offset: number, length: number, lengthMax = requestBytesMax): void {
    this.checkOpen();
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      fail(ErrorCode.OutOfRange, `range [${offset}, +${length}) outside volume of ${this.sizeBytes} bytes`, { offset, length });
    }
    if (length > lengthMax) fail(ErrorCode.OutOfRange, `request of ${length} bytes exceeds ${lengthMax}`, { length });
  }

  private checkOpen(): void {
    if (this.closed) fail(ErrorCode.VolumeClosed, `volume ${this.name} is closed`);
  }

  private unavailable(what: string): never {
    fail(ErrorCode.VolumeUnavailable, `volume ${this.name}: ${what} needs ${this.m} of ${this.n} strips, fewer are reachable`, {
      strips: this.members.map((m) => ({ index: m.index, state: m.state, reason: m.reason })),
    });
  }
}

function rank(m: Member): number {
  return m.state === 'healthy' ? 0 : 1;
}
