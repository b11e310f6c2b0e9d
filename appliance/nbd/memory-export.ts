/**
 * An in-memory NbdExport for tests: a sparse map of fixed-size chunks, so a
 * large export costs only what was written. Unwritten and trimmed chunks are
 * holes that read as zeroes, which makes base:allocation observable.
 */
import { ErrorCode, fail } from '../errors.ts';
import type { NbdExport } from './backend.ts';
import { isZero } from './is-zero.ts';
import { StateFlag, requestBytesMax } from './protocol.ts';

export interface MemoryExportOptions {
  name: string;
  sizeBytes: number;
  description?: string;
  blockSizeMin?: number;
  blockSizePreferred?: number;
  blockSizeMax?: number;
  readOnly?: boolean;
  multiConn?: boolean;
  /** Allocation granularity; also the granularity of reported holes. */
  chunkBytes?: number;
}

const chunkBytesDefault = 4096;

export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description: string | undefined;
  readonly sizeBytes: number;
  readonly blockSizeMin: number;
  readonly blockSizePreferred: number;
  readonly blockSizeMax: number;
  readonly readOnly: boolean;
  readonly multiConn: boolean;
  readonly chunkBytes: number;
  /** Counters tests use to see which backend calls a client caused. */
  readonly calls = { read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0, cache: 0, blockStatus: 0, fua: 0 };
  readonly #chunks = new Map<number, Buffer>();

  constructor(opts: MemoryExportOptions) {
    this.name = opts.name;
    this.description = opts.description;
    this.sizeBytes = opts.sizeBytes;
    this.blockSizeMin = opts.blockSizeMin ?? 1;
    this.blockSizePreferred = opts.blockSizePreferred ?? 4096;
    this.blockSizeMax = opts.blockSizeMax ?? requestBytesMax;
    this.readOnly = opts.readOnly ?? false;
    this.multiConn = opts.multiConn ?? true;
    this.chunkBytes = opts.chunkBytes ?? chunkBytesDefault;
    if (!Number.isSafeInteger(this.sizeBytes) || this.sizeBytes < 0) fail(ErrorCode.InvalidArgument, 'size must be a non-negative integer');
    if (!Number.isSafeInteger(this.chunkBytes) || this.chunkBytes <= 0) fail(ErrorCode.InvalidArgument, 'chunk size must be positive');
  }

  /** Chunks holding data: what a sparse backend would have allocated. */
  get allocatedChunks(): number {
    return this.#chunks.size;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#check(offset, length);
    this.calls.read++;
    const out = Buffer.alloc(length);
    this.#each(offset, length, (index, from, to, at) => {
      this.#chunks.get(index)?.copy(out, at, from, to);
    });
    return out;
  }

  async write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> {
    this.#check(offset, data.length);
    this.#checkWritable();
    this.calls.write++;
    if (opts.fua) this.calls.fua++;
    this.#each(offset, data.length, (index, from, to, at) => {
      data.copy(this.#chunk(index), from, at, at + (to - from));
    });
  }

  async flush(): Promise<void> {
    this.calls.flush++;
  }

  async trim(offset: number, length: number, opts: { fua: boolean }): Promise<void> {
    this.#check(offset, length);
    this.#checkWritable();
    this.calls.trim++;
    if (opts.fua) this.calls.fua++;
    this.#zero(offset, length, false);
  }

  async writeZeroes(offset: number, length: number, opts: { fua: boolean; noHole: boolean }): Promise<void> {
    this.#check(offset, length);
    this.#checkWritable();
    this.calls.writeZeroes++;
    if (opts.fua) this.calls.fua++;
    this.#zero(offset, length, opts.noHole);
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#check(offset, length);
    this.calls.cache++;
  }

  async blockStatus(offset: number, length: number): Promise<Array<{ length: number; flags: number }>> {
    this.#check(offset, length);
    this.calls.blockStatus++;
    const extents: Array<{ length: number; flags: number }> = [];
    this.#each(offset, length, (index, from, to) => {
      const c = this.#chunks.get(index);
      const flags = c === undefined ? StateFlag.Hole | StateFlag.Zero : isZero(c.subarray(from, to)) ? StateFlag.Zero : 0;
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.length += to - from;
      else extents.push({ length: to - from, flags });
    });
    return extents;
  }

  #check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      fail(ErrorCode.OutOfRange, 'range outside the export', { offset, length, sizeBytes: this.sizeBytes });
    }
  }

  #checkWritable(): void {
    if (this.readOnly) fail(ErrorCode.InvalidArgument, 'export is read-only', { export: this.name });
  }

  #chunk(index: number): Buffer {
    let c = this.#chunks.get(index);
    if (c === undefined) {
      c = Buffer.alloc(this.chunkBytes);
      this.#chunks.set(index, c);
    }
    return c;
  }

  /** Whole chunks become holes unless noHole; partial chunks are zeroed in place. */
  #zero(offset: number, length: number, noHole: boolean): void {
    this.#each(offset, length, (index, from, to) => {
      const whole = from === 0 && to === this.chunkBytes;
      if (whole) {
        if (noHole) this.#chunks.set(index, Buffer.alloc(this.chunkBytes));
        else this.#chunks.delete(index);
      } else if (noHole) {
        this.#chunk(index).fill(0, from, to);
      } else {
        this.#chunks.get(index)?.fill(0, from, to);
      }
    });
  }

  /** Visits the chunks overlapping [offset, offset+length): chunk index, byte range inside it, position in the request. */
  #each(offset: number, length: number, visit: (index: number, from: number, to: number, at: number) => void): void {
    let at = 0;
    while (at < length) {
      const pos = offset + at;
      const index = Math.floor(pos / this.chunkBytes);
      const from = pos - index * this.chunkBytes;
      const to = Math.min(this.chunkBytes, from + (length - at));
      visit(index, from, to, at);
      at += to - from;
    }
  }
}

export function createMemoryExport(opts: MemoryExportOptions): MemoryExport {
  return new MemoryExport(opts);
}
