/**
 * The crash guarantee as a model (DESIGN.md §5): after a crash at any instant, each block reads
 * back as its last flushed content or a later write — never an error, never a mix of two writes,
 * never older data.
 *
 * Per 4 KiB block the model keeps every version written to it in order (a workload never has two
 * writes touching one block in flight, so the order is the order the server applied them) and a
 * floor: the newest version a FLUSH or FUA made durable. The candidates after a crash are the
 * floor and every version after it, acknowledged or not.
 */
import { ErrorCode, assert, fail } from '../../appliance/errors.ts';
import { digest, readStamp } from './crash-patterns.ts';

/** Version id of a block's content before the workload touched it. */
export const initialVersion = -1;

/** Sectors are the unit a "mix" report is broken down to. */
const sectorBytes = 512;

interface Version {
  readonly write: number;
  readonly digest: string;
  /** Dropped once below the floor: only candidates need their bytes. */
  content: Buffer | null;
  acked: boolean;
}

interface BlockState {
  readonly versions: Version[];
  floor: number;
}

export interface WriteTicket {
  readonly write: number;
  readonly offset: number;
  readonly length: number;
  readonly fua: boolean;
  readonly first: number;
  readonly last: number;
}

export interface FlushTicket {
  readonly flush: number;
  /** Per touched block, the newest version acknowledged when the FLUSH was sent. */
  readonly covers: ReadonlyMap<number, number>;
}

export interface Mismatch {
  readonly block: number;
  readonly seed: number;
  /** What the block held: "write #k (stale: …)", "mix of …", "unknown …". */
  readonly found: string;
  /** What it could have held. */
  readonly expected: string;
}

export interface CrashModelOptions {
  readonly seed: number;
  readonly blockBytes: number;
  /** Content of a block no write has touched yet. */
  readonly initial: (block: number) => Buffer;
  /**
   * The crash kills the server process only (SIGKILL), so the kernel's page cache survives and an
   * acknowledged write must too (stripvault acknowledges a write once its journal record, and
   * every one before it, is in the file). A power loss would keep only flushed writes.
   */
  readonly acknowledgedSurvives?: boolean;
}

export class CrashModel {
  readonly seed: number;
  readonly blockBytes: number;
  readonly #initial: (block: number) => Buffer;
  readonly #acknowledgedSurvives: boolean;
  readonly #blocks = new Map<number, BlockState>();
  readonly #busy = new Set<number>();
  #writes = 0;
  #flushes = 0;

  constructor(opts: CrashModelOptions) {
    this.seed = opts.seed;
    this.blockBytes = opts.blockBytes;
    this.#initial = opts.initial;
    this.#acknowledgedSurvives = opts.acknowledgedSurvives === true;
  }

  get writes(): number {
    return this.#writes;
  }

  get flushes(): number {
    return this.#flushes;
  }

  /** The write number the next beginWrite will use (its bytes are derived from it). */
  get nextWrite(): number {
    return this.#writes;
  }

  /** Whether a write in flight touches any block of [first, last]. */
  busy(first: number, last: number): boolean {
    for (let b = first; b <= last; b++) if (this.#busy.has(b)) return true;
    return false;
  }

  /** Records a write about to be sent; `data` must be the write's bytes and not change after. */
  beginWrite(offset: number, data: Buffer, fua = false): WriteTicket {
    const bb = this.blockBytes;
    if (data.length === 0) fail(ErrorCode.InvalidArgument, 'model write of zero bytes');
    const first = Math.floor(offset / bb);
    const last = Math.floor((offset + data.length - 1) / bb);
    if (this.busy(first, last)) fail(ErrorCode.InvalidArgument, `model write over blocks ${first}..${last} overlaps a write in flight`);
    const write = this.#writes++;
    for (let b = first; b <= last; b++) {
      const start = Math.max(offset, b * bb);
      const end = Math.min(offset + data.length, (b + 1) * bb);
      let content: Buffer;
      if (start === b * bb && end === (b + 1) * bb) content = data.subarray(start - offset, end - offset);
      else {
        content = Buffer.from(this.latest(b));
        data.copy(content, start - b * bb, start - offset, end - offset);
      }
      this.#state(b).versions.push({ write, digest: digest(content), content, acked: false });
      this.#busy.add(b);
    }
    return { write, offset, length: data.length, fua, first, last };
  }

  /** The server answered the write successfully. */
  ackWrite(t: WriteTicket): void {
    for (let b = t.first; b <= t.last; b++) {
      const s = this.#state(b);
      const at = s.versions.length - 1;
      const v = s.versions[at]!;
      assert(v.write === t.write && !v.acked, 'acknowledged write is the newest version of its blocks');
      v.acked = true;
      this.#busy.delete(b);
      if (t.fua || this.#acknowledgedSurvives) this.#raiseFloor(s, at);
    }
  }

  /** The write failed (the server died): its blocks may hold it or not; nothing more goes there. */
  abandonWrite(t: WriteTicket): void {
    for (let b = t.first; b <= t.last; b++) this.#busy.delete(b);
  }

  beginFlush(): FlushTicket {
    const covers = new Map<number, number>();
    for (const [b, s] of this.#blocks) {
      let at = s.versions.length - 1;
      if (!s.versions[at]!.acked) at--;
      if (at > s.floor) covers.set(b, at);
    }
    return { flush: this.#flushes++, covers };
  }

  ackFlush(f: FlushTicket): void {
    for (const [b, at] of f.covers) this.#raiseFloor(this.#state(b), at);
  }

  /** Blocks some write touched. */
  touched(): number[] {
    return [...this.#blocks.keys()].filter((b) => this.#blocks.get(b)!.versions.length > 1).sort((a, b) => a - b);
  }

  /** Content of the newest version of a block (what a read sees while nothing is in flight). */
  latest(block: number): Buffer {
    const s = this.#state(block);
    return s.versions[s.versions.length - 1]!.content!;
  }

  /** How many versions a block may legitimately read back as now. */
  candidateCount(block: number): number {
    const s = this.#blocks.get(block);
    return s === undefined ? 1 : s.versions.length - s.floor;
  }

  /** null if `found` is exactly one candidate of `block`; otherwise what it was instead. */
  check(block: number, found: Buffer): Mismatch | null {
    const s = this.#state(block);
    const candidates = s.versions.slice(s.floor);
    const d = digest(found);
    if (found.length === this.blockBytes && candidates.some((v) => v.digest === d)) return null;
    const expected = `one of ${candidates.map(name).join(', ')} (flushed: ${name(s.versions[s.floor]!)})`;
    const mismatch = (what: string): Mismatch => ({ block, seed: this.seed, found: what, expected });
    if (found.length !== this.blockBytes) return mismatch(`${found.length} bytes instead of ${this.blockBytes}`);
    const older = s.versions.slice(0, s.floor).reverse().find((v) => v.digest === d);
    if (older) return mismatch(`${name(older)} — older than the flushed ${name(s.versions[s.floor]!)}`);
    // Break it down by sector: all sectors known but from different candidates is a torn write.
    const from = new Set<string>();
    let unknownSectors = 0;
    for (let at = 0; at < this.blockBytes; at += sectorBytes) {
      const piece = found.subarray(at, at + sectorBytes);
      const v = candidates.find((c) => c.content?.subarray(at, at + sectorBytes).equals(piece));
      if (v) from.add(name(v));
      else unknownSectors++;
    }
    const st = readStamp(found);
    const hint = st ? `; stamp says seed ${st.seed} write #${st.write} block ${st.block}` : '';
    if (unknownSectors === 0) return mismatch(`mix of ${[...from].join(' and ')}${hint}`);
    const zero = found.every((x) => x === 0) ? ' (all zeros)' : '';
    return mismatch(`unknown content${zero}: ${unknownSectors} of ${this.blockBytes / sectorBytes} sectors match no candidate${from.size ? `, others from ${[...from].join(', ')}` : ''}${hint}`);
  }

  #raiseFloor(s: BlockState, at: number): void {
    if (at <= s.floor) return;
    s.floor = at;
    for (let i = 0; i < at; i++) s.versions[i]!.content = null;
  }

  #state(block: number): BlockState {
    let s = this.#blocks.get(block);
    if (s === undefined) {
      const content = this.#initial(block);
      assert(content.length === this.blockBytes, 'initial content is one block');
      s = { versions: [{ write: initialVersion, digest: digest(content), content, acked: true }], floor: 0 };
      this.#blocks.set(block, s);
    }
    return s;
  }
}

function name(v: Version): string {
  return v.write === initialVersion ? 'the initial content' : `write #${v.write}${v.acked ? '' : ' (unacknowledged)'}`;
}

/** One line per mismatch, at most `max`, with the seed to rerun. */
export function describeMismatches(mismatches: readonly Mismatch[], max = 20): string {
  const lines = mismatches.slice(0, max).map((m) => `block ${m.block}: found ${m.found}; expected ${m.expected} [seed ${m.seed}]`);
  if (mismatches.length > max) lines.push(`… and ${mismatches.length - max} more`);
  return lines.join('\n');
}
