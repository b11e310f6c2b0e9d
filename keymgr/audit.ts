/**
 * The audit log, fail-closed (DESIGN §4.7): every key and access-control operation is recorded
 * in a hash chain, in the metadata store AND in a local file, before it takes effect. append()
 * resolves only when both sinks hold the entry durably; otherwise it throws and the caller must
 * refuse the operation — audited() does exactly that.
 *
 * One append is two transactions under the store's cluster-wide audit lock:
 *   1. check the file's tail against the store and catch the file up to the store's head (so a
 *      broken or tampered file refuses the operation before anything is recorded), then insert
 *      entry head+1 and commit;
 *   2. write the entry (and any others appended meanwhile) to the file, fdatasync, and record
 *      the file's new mark.
 * The file therefore only ever holds committed entries, in order. If step 2 fails the entry
 * stays in the store, reading as "attempted": an entry records intent, not success (the
 * operation itself may still fail after it). The file picks it up at the next append.
 *
 * Entries mean "about to do", never "done"; details never carry keys or secrets (audit-entry.ts).
 */
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import type { Store } from '../appliance/store/store.ts';
import { checkAuditEntry, sealAuditRecord, type AuditEntry, type AuditRecord } from './audit-entry.ts';
import { AuditFileSink, defaultAuditSinkName } from './audit-file.ts';

export { auditGenesisHash, auditEntryDetailBytesMax, auditHash, auditLine, isSecretPropertyName, parseAuditLine } from './audit-entry.ts';
export type { AuditEntry, AuditRecord } from './audit-entry.ts';
export { defaultAuditSinkName } from './audit-file.ts';
export { verifyAudit } from './audit-verify.ts';
export type { AuditSinkKind, AuditVerification, VerifyAuditOptions } from './audit-verify.ts';
export { canonicalJson } from './audit-canonical.ts';

export interface AuditLogOptions {
  readonly store: Store;
  /** The local audit file; created (mode 0600) if missing. Not rotatable: it mirrors the whole chain. */
  readonly filePath: string;
  /** Names this file in the store (its durable mark); default `<hostname>:<absolute path>`. */
  readonly sinkName?: string;
  /** Clock for `at`. */
  readonly now?: () => Date;
}

/** Store and other unexpected failures become SV_AUDIT_UNAVAILABLE; the cause is kept. */
function refusal(sink: string, e: unknown): never {
  if (isStripvaultError(e, ErrorCode.AuditUnavailable) || isStripvaultError(e, ErrorCode.AuditTampered)) throw e;
  const message = e instanceof Error ? e.message : String(e);
  fail(ErrorCode.AuditUnavailable, `audit log unavailable (${sink}): ${message}`, { sink }, e);
}

export class AuditLog {
  readonly #store: Store;
  readonly #file: AuditFileSink;
  readonly #now: () => Date;
  readonly #inFlight = new Set<Promise<unknown>>();
  #closed = false;

  constructor(options: AuditLogOptions) {
    const { store, filePath } = options;
    if (typeof filePath !== 'string' || filePath.length === 0) fail(ErrorCode.InvalidArgument, 'audit.filePath must be a non-empty path', { field: 'audit.filePath' });
    this.#store = store;
    this.#file = new AuditFileSink(filePath, options.sinkName ?? defaultAuditSinkName(filePath));
    this.#now = options.now ?? (() => new Date());
  }

  get filePath(): string {
    return this.#file.path;
  }

  get sinkName(): string {
    return this.#file.sinkName;
  }

  /**
   * Records `entry` in both sinks and resolves with it once both hold it durably. Throws
   * SV_INVALID_ARGUMENT for a bad entry (nothing recorded), SV_AUDIT_UNAVAILABLE when a sink
   * cannot be written, SV_AUDIT_TAMPERED when the file disagrees with the store. On any throw
   * the caller must not perform the operation.
   */
  append(entry: AuditEntry): Promise<AuditRecord> {
    return this.#track(this.#append(entry));
  }

  /** Catches the file up with the store's head (e.g. at start); returns the file's last seq. */
  sync(): Promise<number> {
    return this.#track(this.#sync());
  }

  /** Waits for appends in flight, then closes the file. The store stays open (it is not ours). */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    await this.#file.close();
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#inFlight.add(work);
    const forget = (): void => {
      this.#inFlight.delete(work);
    };
    work.then(forget, forget);
    return work;
  }

  async #sync(): Promise<number> {
    if (this.#closed) fail(ErrorCode.AuditUnavailable, 'audit log is closed');
    try {
      const head = await this.#store.auditTransaction(async (tx) => await this.#file.catchUp(tx, (await tx.head()).seq));
      return head.seq;
    } catch (e) {
      refusal('file', e);
    }
  }

  async #append(entry: AuditEntry): Promise<AuditRecord> {
    if (this.#closed) fail(ErrorCode.AuditUnavailable, 'audit log is closed');
    const body = checkAuditEntry(entry);
    let record: AuditRecord;
    try {
      record = await this.#store.auditTransaction(async (tx) => {
        const head = await tx.head();
        await this.#file.catchUp(tx, head.seq);
        const next = sealAuditRecord(head, body, this.#now());
        await tx.insert(next);
        return next;
      });
    } catch (e) {
      refusal('store', e);
    }
    try {
      await this.#store.auditTransaction((tx) => this.#file.catchUp(tx, record.seq));
    } catch (e) {
      refusal('file', e);
    }
    return record;
  }
}

/**
 * Appends `entry`, then runs `operation` — only if the append succeeded. An audit failure
 * rejects with the audit error and the operation never starts.
 */
export async function audited<T>(log: AuditLog, entry: AuditEntry, operation: (record: AuditRecord) => Promise<T> | T): Promise<T> {
  const record = await log.append(entry);
  return await operation(record);
}
