/**
 * The embedded default: PGlite (PostgreSQL compiled to WASM, in this process), its data
 * directory on disk or in memory. PGlite serialises queries and transactions itself, and a
 * plain query waits for a running transaction instead of joining it.
 */
import { PGlite } from '@electric-sql/pglite';
import { ErrorCode, fail } from '../errors.ts';
import { acquireDataDirLock, type DataDirLock } from './data-dir-lock.ts';
import { mapDatabaseError, TransactionSql, type Sql, type SqlParam, type SqlPool } from './sql.ts';

class PgliteSql implements SqlPool {
  #db: PGlite;
  #lock: DataDirLock | null;
  #closed = false;

  constructor(db: PGlite, lock: DataDirLock | null) {
    this.#db = db;
    this.#lock = lock;
  }

  #checkOpen(): void {
    if (this.#closed) fail(ErrorCode.StoreUnavailable, 'metadata store is closed');
  }

  async query<T>(text: string, params: readonly SqlParam[] = []): Promise<T[]> {
    this.#checkOpen();
    try {
      return (await this.#db.query<T>(text, [...params])).rows;
    } catch (e) {
      throw mapDatabaseError(e, false);
    }
  }

  async transaction<R>(fn: (sql: Sql) => Promise<R>): Promise<R> {
    this.#checkOpen();
    try {
      return await this.#db.transaction(async (tx) => {
        const handle = new TransactionSql(async (text, params) => {
          try {
            return (await tx.query(text, [...params])).rows;
          } catch (e) {
            throw mapDatabaseError(e, false);
          }
        }, 1);
        try {
          return await fn(handle);
        } finally {
          handle.end();
        }
      });
    } catch (e) {
      throw mapDatabaseError(e, false);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#db.close();
    } finally {
      this.#lock?.release();
      this.#lock = null;
    }
  }
}

/** `dataDir` null keeps everything in memory (tests); otherwise it is created if missing. */
export async function openPgliteSql(dataDir: string | null): Promise<SqlPool> {
  const lock = dataDir === null ? null : acquireDataDirLock(dataDir);
  try {
    const db = lock === null ? await PGlite.create() : await PGlite.create(lock.dataDir);
    return new PgliteSql(db, lock);
  } catch (e) {
    lock?.release();
    fail(ErrorCode.StoreUnavailable, `cannot open the embedded metadata store${dataDir === null ? '' : ` in ${dataDir}`}: ${(e as Error).message}`, { dataDir }, e);
  }
}
