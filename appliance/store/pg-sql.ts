/**
 * Production: a PostgreSQL server shared by the appliances of a cluster, through a `pg.Pool`.
 * A transaction pins one pooled client from BEGIN to COMMIT.
 */
import pg from 'pg';
import { ErrorCode, fail } from '../errors.ts';
import { mapDatabaseError, TransactionSql, type Sql, type SqlParam, type SqlPool } from './sql.ts';

/** The store's traffic is control-plane metadata; a few connections per appliance suffice. */
export const pgPoolClientsMax = 4;
export const pgConnectTimeoutMs = 10_000;
export const pgIdleTimeoutMs = 30_000;

class PgSql implements SqlPool {
  #pool: pg.Pool;
  #closed = false;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  #checkOpen(): void {
    if (this.#closed) fail(ErrorCode.StoreUnavailable, 'metadata store is closed');
  }

  async query<T>(text: string, params: readonly SqlParam[] = []): Promise<T[]> {
    this.#checkOpen();
    try {
      return (await this.#pool.query(text, [...params])).rows as T[];
    } catch (e) {
      throw mapDatabaseError(e, true);
    }
  }

  async transaction<R>(fn: (sql: Sql) => Promise<R>): Promise<R> {
    this.#checkOpen();
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (e) {
      throw mapDatabaseError(e, true);
    }
    const run = async (text: string, params: readonly SqlParam[]): Promise<unknown[]> => {
      try {
        return (await client.query(text, [...params])).rows;
      } catch (e) {
        throw mapDatabaseError(e, true);
      }
    };
    // A client whose ROLLBACK failed is in an unknown state and must not return to the pool.
    let discard = false;
    try {
      await run('BEGIN', []);
      const handle = new TransactionSql(run, 1);
      let result: R;
      try {
        result = await fn(handle);
      } finally {
        handle.end();
      }
      await run('COMMIT', []);
      return result;
    } catch (e) {
      try {
        await client.query('ROLLBACK');
      } catch {
        discard = true;
      }
      throw e;
    } finally {
      client.release(discard);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }
}

/** Never puts the connection string into an error: it may carry a password. */
export function openPgSql(connectionString: string): SqlPool {
  if (typeof connectionString !== 'string' || connectionString.length === 0) {
    fail(ErrorCode.InvalidArgument, 'store connectionString must be a non-empty string');
  }
  const pool = new pg.Pool({
    connectionString,
    max: pgPoolClientsMax,
    connectionTimeoutMillis: pgConnectTimeoutMs,
    idleTimeoutMillis: pgIdleTimeoutMs,
    application_name: 'stripvault',
  });
  // An idle client that loses its server is dropped by the pool; the next query reconnects or
  // fails with SV_STORE_UNAVAILABLE. Without a listener the event would crash the process.
  pool.on('error', () => {});
  return new PgSql(pool);
}
