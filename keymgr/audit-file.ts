/**
 * The audit file: one canonical JSON line per entry, in seq order from 1, appended and
 * fdatasync'd. It mirrors the store's chain and only ever receives entries the store has
 * committed; every write happens while the writer holds the store's audit lock, so several
 * writers (instances, processes, appliances) never interleave or duplicate lines.
 *
 * Before extending the file the writer checks its tail against the store: a last line the
 * store does not have, or has differently, means the file was tampered with (or belongs to
 * another store) and nothing more is written. A partial last line that is a prefix of the
 * store's next entry is a write torn by a crash; it is cut off and written again.
 */
import { constants, type Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import type { AuditHead, AuditTransaction } from '../appliance/store/audit.ts';
import { auditGenesisHash, auditHashMatches, auditLine, auditLineBytesMax, parseAuditLine, sameAuditRecord } from './audit-entry.ts';

/** Store rows fetched per batch while catching a lagging file up. */
export const auditCatchUpRows = 500;
export const auditFileMode = 0o600;

function unavailable(path: string, what: string, cause: unknown): never {
  if (isStripvaultError(cause)) throw cause;
  const code = (cause as NodeJS.ErrnoException | null)?.code;
  fail(ErrorCode.AuditUnavailable, `audit file ${path}: cannot ${what}${code === undefined ? '' : ` (${code})`}`, { path, errno: code }, cause);
}

/** `seq` 0 when the line is unreadable and its entry unknown. */
function tampered(path: string, seq: number, reason: string): never {
  const at = seq > 0 ? ` at entry ${seq}` : '';
  fail(ErrorCode.AuditTampered, `audit file ${path} disagrees with the metadata store${at}: ${reason}; refusing to extend it`, { path, seq });
}

/** Unique per appliance and file, so appliances sharing a store keep separate marks. */
export function defaultAuditSinkName(filePath: string): string {
  return `${hostname()}:${resolve(filePath)}`;
}

async function syncDirectory(path: string): Promise<void> {
  const dir = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** An append position in one audit file, for one writer. Use only under the store's audit lock. */
export class AuditFileSink {
  readonly path: string;
  /** The store records, under this name, how far the file was durably written. */
  readonly sinkName: string;
  #fh: FileHandle | null = null;
  #ino = 0;
  #dev = 0;
  #head: AuditHead = { seq: 0, hash: auditGenesisHash };

  constructor(path: string, sinkName: string) {
    this.path = path;
    this.sinkName = sinkName;
  }

  /** Brings the file up to `target` (committed store entries), durably. Returns the file's head. */
  async catchUp(tx: AuditTransaction, target: number): Promise<AuditHead> {
    try {
      await this.#reconcile(tx);
      while (this.#head.seq < target) {
        const rows = await tx.listAfter(this.#head.seq, Math.min(auditCatchUpRows, target - this.#head.seq));
        if (rows.length === 0) fail(ErrorCode.AuditTampered, `metadata store has no audit entry ${this.#head.seq + 1} (expected up to ${target})`);
        let prev = this.#head;
        for (const row of rows) {
          // Copying a store row that does not chain would launder tampering into the file.
          if (row.seq !== prev.seq + 1 || row.prevHash !== prev.hash || !auditHashMatches(row)) {
            fail(ErrorCode.AuditTampered, `metadata store audit entry ${prev.seq + 1} does not chain; refusing to copy it`, { seq: prev.seq + 1 });
          }
          prev = { seq: row.seq, hash: row.hash };
        }
        await this.#append(Buffer.from(rows.map(auditLine).join(''), 'utf8'));
        this.#head = prev;
        // Only after fdatasync: the mark promises what the file durably holds.
        await tx.raiseSinkMark(this.sinkName, prev.seq);
      }
      return this.#head;
    } catch (e) {
      // After any failure the file's state is unknown: read it afresh next time.
      await this.close();
      unavailable(this.path, 'be written', e);
    }
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = null;
    await fh?.close().catch(() => {});
  }

  async #append(data: Buffer): Promise<void> {
    const fh = this.#fh;
    if (fh === null) fail(ErrorCode.AuditUnavailable, `audit file ${this.path} is not open`);
    let offset = 0;
    while (offset < data.length) {
      const { bytesWritten } = await fh.write(data, offset, data.length - offset);
      if (bytesWritten === 0) fail(ErrorCode.AuditUnavailable, `audit file ${this.path}: write made no progress`);
      offset += bytesWritten;
    }
    await fh.datasync();
  }

  async #open(): Promise<void> {
    let fh: FileHandle;
    let created = false;
    try {
      fh = await open(this.path, constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_EXCL, auditFileMode);
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') unavailable(this.path, 'be created', e);
      try {
        fh = await open(this.path, constants.O_RDWR | constants.O_APPEND);
      } catch (e2) {
        unavailable(this.path, 'be opened', e2);
      }
    }
    try {
      const st = await fh.stat();
      // A device or pipe cannot be read back and verified.
      if (!st.isFile()) fail(ErrorCode.AuditUnavailable, `audit file ${this.path} is not a regular file`, { path: this.path });
      if (created) await syncDirectory(this.path);
      this.#fh = fh;
      this.#ino = st.ino;
      this.#dev = st.dev;
    } catch (e) {
      await fh.close().catch(() => {});
      unavailable(this.path, 'be opened', e);
    }
  }

  /** Makes #head the file's last entry, checked against the store; opens or reopens as needed. */
  async #reconcile(tx: AuditTransaction): Promise<void> {
    let onDisk: Stats | null = null;
    try {
      onDisk = await stat(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') unavailable(this.path, 'be examined', e);
    }
    // Replaced, renamed away or deleted: follow the path, as a verifier reading it would.
    if (this.#fh !== null && (onDisk === null || onDisk.ino !== this.#ino || onDisk.dev !== this.#dev)) await this.close();
    if (this.#fh === null) await this.#open();
    const fh = this.#fh;
    if (fh === null) fail(ErrorCode.AuditUnavailable, `audit file ${this.path} is not open`);
    // Read every time, not only when the size changed: an edit in place keeps the size.
    await this.#readTail(tx, fh, (await fh.stat()).size);
    // Recreating or refilling a deleted or shortened file from the store would erase the one
    // witness that could contradict an edited store.
    const mark = await tx.sinkMark(this.sinkName);
    if (this.#head.seq < mark) tampered(this.path, this.#head.seq + 1, `it ends at entry ${this.#head.seq} but durably held entries up to ${mark}`);
  }

  async #readTail(tx: AuditTransaction, fh: FileHandle, size: number): Promise<void> {
    // The last complete line and a possible partial one after it both fit in twice the line bound.
    const window = Math.min(size, 2 * auditLineBytesMax + 2);
    const start = size - window;
    const buf = Buffer.alloc(window);
    let got = 0;
    while (got < window) {
      const { bytesRead } = await fh.read(buf, got, window - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    const tail = buf.subarray(0, got);
    const lastNewline = tail.lastIndexOf(0x0a);
    const completeEnd = lastNewline + 1; // 0 when there is no complete line in the window
    const partial = tail.subarray(completeEnd);
    // (A negative offset would make lastIndexOf count from the end.)
    const prevNewline = lastNewline > 0 ? tail.lastIndexOf(0x0a, lastNewline - 1) : -1;
    const lineStart = prevNewline + 1;
    // Both a whole entry line and a torn one fit in the window, so a line reaching past its
    // start is longer than any entry we write.
    if ((lastNewline < 0 || prevNewline < 0) && start > 0) tampered(this.path, 0, 'it holds a line longer than any entry');

    let head: AuditHead = { seq: 0, hash: auditGenesisHash };
    if (lastNewline >= 0) {
      let text: string;
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(tail.subarray(lineStart, lastNewline));
      } catch {
        tampered(this.path, 0, 'its last line is not UTF-8');
      }
      const record = parseAuditLine(text);
      if ('error' in record) tampered(this.path, 0, `its last line is ${record.error}`);
      if (!auditHashMatches(record)) tampered(this.path, record.seq, 'its last line was altered');
      const stored = await tx.get(record.seq);
      if (stored === null) tampered(this.path, record.seq, 'the store has no such entry');
      if (!sameAuditRecord(stored, record)) tampered(this.path, record.seq, 'the entries differ');
      head = { seq: record.seq, hash: record.hash };
    }

    if (partial.length > 0) {
      const next = await tx.get(head.seq + 1);
      const expected = next === null ? null : Buffer.from(auditLine(next), 'utf8');
      if (expected === null || partial.length >= expected.length || !expected.subarray(0, partial.length).equals(partial)) {
        tampered(this.path, head.seq + 1, 'it ends in a partial line that is not a torn write of the next entry');
      }
      await fh.truncate(start + completeEnd);
      await fh.datasync();
    }
    this.#head = head;
  }
}
