/**
 * One strip on one storage device: format, load, and slot/header/status I/O. Knows the byte layout
 * only through layout.ts, label.ts, header.ts and status-log.ts.
 */
import type { StorageDevice } from '../device/device.ts';
import { ErrorCode, StripvaultError, fail } from '../errors.ts';
import { decodeHeader, encodeHeader, headerWrapperIds, type StripHeader, type Wrapper } from './header.ts';
import { decodeLabel, encodeLabel, type StripLabel } from './label.ts';
import { headerBytes, headerCopies, headerOffset, labelBytes, statusLogBytes, statusLogOffset } from './layout.ts';
import { decodeStatusLog, encodeStatusRecord, statusRecordOffset, type StatusCode, type StatusRecord } from './status-log.ts';

/** Zeroing a data area goes in chunks of this size, so formatting a large strip holds little memory. */
export const zeroChunkBytes = 4 * 1024 * 1024;

export interface StripLocation {
  readonly device: StorageDevice;
  /** Byte offset of the strip on the device. */
  readonly base: number;
}

export class Strip {
  readonly device: StorageDevice;
  readonly base: number;
  readonly label: StripLabel;
  readonly labelBytes: Buffer;
  header: StripHeader;
  private statusSequence: number;

  private constructor(loc: StripLocation, labelBuf: Buffer, label: StripLabel, header: StripHeader, statusSequence: number) {
    this.device = loc.device;
    this.base = loc.base;
    this.labelBytes = labelBuf;
    this.label = label;
    this.header = header;
    this.statusSequence = statusSequence;
  }

  /**
   * Writes a new strip: label, both header copies, an empty status log, and (unless the caller
   * knows the region reads as zeros, e.g. a freshly created sparse file) a zeroed data area, since
   * an all-zero slot is how "never written" is recognised.
   */
  static async format(loc: StripLocation, label: StripLabel, header: StripHeader, opts: { zeroData: boolean }): Promise<Strip> {
    checkFits(loc, label.stripBytes);
    const labelBuf = encodeLabel(label);
    const dev = loc.device;
    if (opts.zeroData) {
      const dataBytes = label.slotCount * label.slotBytes;
      const zeros = Buffer.alloc(Math.min(zeroChunkBytes, dataBytes));
      for (let done = 0; done < dataBytes; done += zeros.length) {
        const n = Math.min(zeros.length, dataBytes - done);
        await dev.write(loc.base + label.dataOffset + done, n === zeros.length ? zeros : zeros.subarray(0, n));
      }
    }
    await dev.write(loc.base + statusLogOffset, Buffer.alloc(statusLogBytes));
    header.sequence = 1;
    for (let copy = 0; copy < headerCopies; copy++) {
      await dev.write(loc.base + headerOffset + copy * headerBytes, encodeHeader(labelBuf, header));
    }
    // The label goes last: a strip interrupted while formatting has no label and is not taken for one.
    await dev.write(loc.base, labelBuf);
    await dev.flush();
    return new Strip(loc, labelBuf, label, header, 0);
  }

  /** Reads just the label (no key needed): what volume, which strip, which geometry. */
  static async readLabel(loc: StripLocation): Promise<StripLabel> {
    checkFits(loc, labelBytes);
    return decodeLabel(await loc.device.read(loc.base, labelBytes));
  }

  static async load(loc: StripLocation, wrappers: readonly Wrapper[]): Promise<Strip> {
    checkFits(loc, labelBytes);
    const labelBuf = await loc.device.read(loc.base, labelBytes);
    const label = decodeLabel(labelBuf);
    checkFits(loc, label.stripBytes);
    let best: StripHeader | null = null;
    let firstError: unknown = null;
    for (let copy = 0; copy < headerCopies; copy++) {
      try {
        const h = decodeHeader(labelBuf, await loc.device.read(loc.base + headerOffset + copy * headerBytes, headerBytes), wrappers);
        if (best === null || h.sequence > best.sequence) best = h;
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        firstError ??= e;
      }
    }
    if (best === null) throw firstError;
    const status = decodeStatusLog(await loc.device.read(loc.base + statusLogOffset, statusLogBytes));
    const lastSeq = status.length ? status[status.length - 1]!.sequence : 0;
    return new Strip(loc, labelBuf, label, best, lastSeq);
  }

  /**
   * Makes the in-memory header durable in both copies, one after the other with a flush between:
   * a crash tears at most the copy being written while the other holds either the previous or the
   * new header, and once this returns no copy is older than what the caller goes on to rely on (a
   * generation reservation must never be lost to a damaged newest copy).
   */
  async writeHeader(): Promise<void> {
    for (let i = 0; i < headerCopies; i++) {
      this.header.sequence += 1;
      const copy = this.header.sequence % headerCopies;
      await this.device.write(this.base + headerOffset + copy * headerBytes, encodeHeader(this.labelBytes, this.header));
      await this.device.flush();
    }
  }

  /**
   * Crypto-shred of this strip: both header copies (every wrapped header key, and the encrypted
   * session keys) are overwritten with zeros and flushed. The shares in the slots stay, unreadable.
   */
  async wipeHeaders(): Promise<void> {
    await this.device.write(this.base + headerOffset, Buffer.alloc(headerCopies * headerBytes));
    await this.device.flush();
    this.header.headerKey.fill(0);
    for (const section of this.header.body.sections) for (const slot of section) slot.key.fill(0);
    this.header.wraps = [];
  }

  /** wipeHeaders for a strip that is not (or cannot be) loaded: no key needed to destroy keys. */
  static async wipeHeadersAt(loc: StripLocation): Promise<void> {
    await loc.device.write(loc.base + headerOffset, Buffer.alloc(headerCopies * headerBytes));
    await loc.device.flush();
  }

  /** Ids (hex) of the keys either header copy at `loc` is wrapped under; read without keys. */
  static async wrapperIdsAt(loc: StripLocation): Promise<string[]> {
    const bytes = await loc.device.read(loc.base + headerOffset, headerCopies * headerBytes);
    const ids = new Set<string>();
    for (let c = 0; c < headerCopies; c++) for (const id of headerWrapperIds(bytes.subarray(c * headerBytes, (c + 1) * headerBytes))) ids.add(id);
    return [...ids].sort();
  }

  /** True when both header copies at `loc` are all zeros (what wipeHeaders leaves). */
  static async headersWiped(loc: StripLocation): Promise<boolean> {
    const bytes = await loc.device.read(loc.base + headerOffset, headerCopies * headerBytes);
    return bytes.every((b) => b === 0);
  }

  /** Raw bytes of `count` consecutive slots starting at slot `first`. */
  async readSlots(first: number, count: number): Promise<Buffer> {
    this.checkSlots(first, count);
    return this.device.read(this.slotOffset(first), count * this.label.slotBytes);
  }

  async writeSlots(first: number, data: Buffer): Promise<void> {
    const count = data.length / this.label.slotBytes;
    if (!Number.isInteger(count)) fail(ErrorCode.InvalidArgument, 'slot data is not a whole number of slots');
    this.checkSlots(first, count);
    await this.device.write(this.slotOffset(first), data);
  }

  async appendStatus(code: StatusCode, arg: Buffer = Buffer.alloc(0)): Promise<void> {
    const sequence = ++this.statusSequence;
    const record = encodeStatusRecord({ sequence, atMs: Date.now(), code, arg });
    await this.device.write(this.base + statusLogOffset + statusRecordOffset(sequence), record);
  }

  async statusLog(): Promise<StatusRecord[]> {
    return decodeStatusLog(await this.device.read(this.base + statusLogOffset, statusLogBytes));
  }

  flush(): Promise<void> {
    return this.device.flush();
  }

  private slotOffset(slot: number): number {
    return this.base + this.label.dataOffset + slot * this.label.slotBytes;
  }

  private checkSlots(first: number, count: number): void {
    if (!Number.isInteger(first) || !Number.isInteger(count) || first < 0 || count < 1 || first + count > this.label.slotCount) {
      fail(ErrorCode.OutOfRange, `slots [${first}, ${first + count}) outside [0, ${this.label.slotCount})`, { first, count });
    }
  }
}

function checkFits(loc: StripLocation, bytes: number): void {
  if (!Number.isSafeInteger(loc.base) || loc.base < 0 || loc.base + bytes > loc.device.sizeBytes) {
    fail(ErrorCode.DeviceTooSmall, `strip at ${loc.base} of ${bytes} bytes does not fit device ${loc.device.id} (${loc.device.sizeBytes} bytes)`, {
      device: loc.device.id,
      base: loc.base,
      bytes,
    });
  }
}
