/**
 * Verifies the audit log: recomputes the hash chain in the store and in the file, and compares
 * them entry by entry. Both are streamed (store pages, file lines of bounded length), so memory
 * stays bounded however long the log grows.
 *
 * What a pass means: both sinks hold one unbroken chain from entry 1; they agree wherever both
 * hold an entry; the file holds at least every entry the store says it durably held (its sink
 * mark); the store holds at least as much as the file. A file may end before the store — other
 * appliances append to the store too, and a file catches up at its writer's next append — and
 * its last line may be a torn or in-progress write of the next entry, above the mark.
 *
 * What no hash chain can show alone: that BOTH sinks lost the same newest entries. Anchor the
 * head (seq and hash) somewhere else if that matters.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import { auditListMax } from '../appliance/store/audit.ts';
import type { Store } from '../appliance/store/store.ts';
import { auditGenesisHash, auditHashMatches, auditLine, auditLineBytesMax, parseAuditLine, sameAuditRecord, type AuditRecord } from './audit-entry.ts';
import { defaultAuditSinkName } from './audit-file.ts';

export const auditVerifyPageRows = auditListMax;
export const auditReadChunkBytes = 64 * 1024;

export type AuditSinkKind = 'store' | 'file' | 'both';

export interface AuditVerification {
  readonly ok: boolean;
  /** Store entries checked and found good, before the first problem. */
  readonly entries: number;
  /** File entries checked and found good, before the first problem. */
  readonly fileEntries: number;
  /** The lowest seq at which something is wrong, which sink it is in, and what. */
  readonly firstBad?: { readonly seq: number; readonly sink: AuditSinkKind; readonly reason: string };
}

export interface VerifyAuditOptions {
  readonly store: Store;
  readonly filePath: string;
  /** As given to the AuditLog that writes this file; the same default. */
  readonly sinkName?: string;
}

type FileLine =
  | { readonly kind: 'line'; readonly number: number; readonly text: string }
  | { readonly kind: 'partial'; readonly number: number; readonly bytes: Buffer }
  | { readonly kind: 'bad'; readonly number: number; readonly reason: string };

function unreadable(what: string, cause: unknown): never {
  if (isStripvaultError(cause, ErrorCode.AuditUnavailable)) throw cause;
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  fail(ErrorCode.AuditUnavailable, `cannot verify the audit log: ${what} cannot be read${code === undefined ? '' : ` (${code})`}`, { errno: code }, cause);
}

/** Lines without their "\n"; a missing file has none. Stops after a bad or partial line. */
async function* readLines(path: string): AsyncGenerator<FileLine> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    unreadable(`audit file ${path}`, e);
  }
  try {
    const chunk = Buffer.alloc(auditReadChunkBytes);
    const decoder = new TextDecoder('utf-8', { fatal: true });
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let number = 0;
    let position = 0;
    for (;;) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(chunk, 0, chunk.length, position));
      } catch (e) {
        unreadable(`audit file ${path}`, e);
      }
      if (bytesRead === 0) break;
      position += bytesRead;
      const data = chunk.subarray(0, bytesRead);
      let from = 0;
      for (let nl = data.indexOf(0x0a, from); nl !== -1; nl = data.indexOf(0x0a, from)) {
        const piece = data.subarray(from, nl);
        number += 1;
        if (pendingBytes + piece.length > auditLineBytesMax) {
          yield { kind: 'bad', number, reason: 'longer than any entry' };
          return;
        }
        const line = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
        pending = [];
        pendingBytes = 0;
        let text: string;
        try {
          text = decoder.decode(line);
        } catch {
          yield { kind: 'bad', number, reason: 'not UTF-8' };
          return;
        }
        yield { kind: 'line', number, text };
        from = nl + 1;
      }
      if (from < data.length) {
        // The chunk buffer is reused: keep a copy.
        pending.push(Buffer.from(data.subarray(from)));
        pendingBytes += data.length - from;
        if (pendingBytes > auditLineBytesMax) {
          yield { kind: 'bad', number: number + 1, reason: 'longer than any entry' };
          return;
        }
      }
    }
    if (pendingBytes > 0) yield { kind: 'partial', number: number + 1, bytes: Buffer.concat(pending) };
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Store rows in seq order, a page at a time. Reaching the end is not final: asked again, it
 * looks again, so a row committed while we read the file is still found.
 */
class StoreRows {
  readonly #store: Store;
  #page: AuditRecord[] = [];
  #after = 0;

  constructor(store: Store) {
    this.#store = store;
  }

  async next(): Promise<AuditRecord | null> {
    if (this.#page.length === 0) {
      try {
        this.#page = await this.#store.listAudit(this.#after, auditVerifyPageRows);
      } catch (e) {
        unreadable('the metadata store', e);
      }
    }
    const row = this.#page.shift() ?? null;
    if (row !== null) this.#after = row.seq;
    return row;
  }
}

/** A finding is a result, not an error; SV_AUDIT_UNAVAILABLE only when a sink cannot be read at all. */
export async function verifyAudit(options: VerifyAuditOptions): Promise<AuditVerification> {
  const { store, filePath } = options;
  let mark: number;
  try {
    mark = await store.getAuditSinkMark(options.sinkName ?? defaultAuditSinkName(filePath));
  } catch (e) {
    unreadable('the metadata store', e);
  }
  const storeRows = new StoreRows(store);
  const fileLines = readLines(filePath);
  let entries = 0;
  let fileEntries = 0;
  const bad = (seq: number, sink: AuditSinkKind, reason: string): AuditVerification => ({ ok: false, entries, fileEntries, firstBad: { seq, sink, reason } });
  try {
    let storePrev = auditGenesisHash;
    let filePrev = auditGenesisHash;
    let fileDone = false;
    for (let seq = 1; ; seq++) {
      // The file line before the store row: a line is written only after its row committed, so
      // reading in this order never mistakes an append in progress for a missing store row.
      let line: FileLine | null = null;
      if (!fileDone) {
        const next = await fileLines.next();
        line = next.done === true ? null : next.value;
        if (line === null || line.kind === 'partial') fileDone = true;
      }
      const s = await storeRows.next();
      if (s !== null) {
        if (s.seq !== seq) return bad(seq, 'store', `entry ${seq} is missing from the store (the next is ${s.seq})`);
        if (s.prevHash !== storePrev) return bad(seq, 'store', 'does not link to the entry before it (an entry deleted, inserted or reordered)');
        if (!auditHashMatches(s)) return bad(seq, 'store', 'its contents do not match its hash (entry edited)');
      }
      let f: AuditRecord | null = null;
      if (line?.kind === 'bad') return bad(seq, 'file', `line ${line.number} is ${line.reason}`);
      if (line?.kind === 'partial') {
        // Above the mark a partial line may be a write in progress or one torn by a crash; at
        // or below it, the file was cut.
        const expected = s === null ? null : Buffer.from(auditLine(s), 'utf8');
        const torn = seq > mark && expected !== null && line.bytes.length < expected.length && expected.subarray(0, line.bytes.length).equals(line.bytes);
        if (!torn) return bad(seq, 'file', `the file ends in a partial line ${line.number} (truncated or altered)`);
      }
      if (line?.kind === 'line') {
        const parsed = parseAuditLine(line.text);
        if ('error' in parsed) return bad(seq, 'file', `line ${line.number} is ${parsed.error}`);
        f = parsed;
        if (f.seq !== seq) {
          return bad(seq, 'file', f.seq > seq ? `entry ${seq} is missing from the file (the next is ${f.seq})` : `the file repeats or reorders entry ${f.seq}`);
        }
        if (f.prevHash !== filePrev) return bad(seq, 'file', 'does not link to the entry before it (an entry deleted, inserted or reordered)');
        if (!auditHashMatches(f)) return bad(seq, 'file', 'its contents do not match its hash (entry edited)');
      }
      if (s === null && f === null) break;
      if (s === null) return bad(seq, 'store', 'the file holds this entry but the store does not (store truncated, or the file is from another store)');
      if (f !== null && !sameAuditRecord(s, f)) return bad(seq, 'both', 'the store and the file hold different entries');
      if (f === null && seq <= mark) return bad(seq, 'file', `the file ends before this entry but durably held entries up to ${mark} (file truncated)`);
      entries += 1;
      storePrev = s.hash;
      if (f !== null) {
        fileEntries += 1;
        filePrev = f.hash;
      }
    }
    if (entries < mark) return bad(entries + 1, 'store', `the store ends at entry ${entries} but the file durably held entries up to ${mark} (store truncated)`);
    return { ok: true, entries, fileEntries };
  } finally {
    await fileLines.return(undefined);
  }
}
