/**
 * The one seam between the store and a database engine. Everything above this file speaks
 * PostgreSQL text with `$1` parameters and never learns whether PGlite or a PostgreSQL
 * server answers, so the embedded default and production run the same SQL.
 */
import { assert, isStripvaultError, ErrorCode, StripvaultError } from '../errors.ts';

/** Values we bind. No JS bigint: every integer we store is validated to be a safe integer. */
export type SqlParam = string | number | boolean | null | Date;

export interface Sql {
  /** Rows as the driver parsed them; callers convert every column they read (see rows.ts). */
  query<T>(text: string, params?: readonly SqlParam[]): Promise<T[]>;
  /**
   * Runs `fn` in a transaction: committed if it resolves, rolled back if it throws. Inside, use
   * only the `sql` handed to `fn`. Nested calls become savepoints so modules compose.
   */
  transaction<R>(fn: (sql: Sql) => Promise<R>): Promise<R>;
}

/** A top-level connection (pool or embedded engine) that the owner must close. */
export interface SqlPool extends Sql {
  close(): Promise<void>;
}

/** Deeper nesting is a runaway recursion, not a design. */
export const savepointDepthMax = 16;

type RunQuery = (text: string, params: readonly SqlParam[]) => Promise<unknown[]>;

/**
 * The handle passed into a transaction callback, for both adapters: queries go to the
 * transaction's connection, nested transactions become savepoints, and the handle refuses
 * use after its transaction ended (a query there would silently run outside it).
 */
export class TransactionSql implements Sql {
  #run: RunQuery;
  #depth: number;
  #open = true;

  constructor(run: RunQuery, depth: number) {
    this.#run = run;
    this.#depth = depth;
  }

  end(): void {
    this.#open = false;
  }

  async query<T>(text: string, params: readonly SqlParam[] = []): Promise<T[]> {
    assert(this.#open, 'query on a finished transaction handle');
    return (await this.#run(text, params)) as T[];
  }

  async transaction<R>(fn: (sql: Sql) => Promise<R>): Promise<R> {
    assert(this.#open, 'transaction on a finished transaction handle');
    assert(this.#depth < savepointDepthMax, 'savepoints nested too deep');
    const name = `sv_savepoint_${this.#depth}`;
    await this.query(`SAVEPOINT ${name}`);
    const inner = new TransactionSql(this.#run, this.#depth + 1);
    try {
      const result = await fn(inner);
      inner.end();
      await this.query(`RELEASE SAVEPOINT ${name}`);
      return result;
    } catch (e) {
      inner.end();
      await this.query(`ROLLBACK TO SAVEPOINT ${name}`);
      throw e;
    }
  }
}

// SQLSTATEs we turn into stable codes. Anything else (syntax, type, check violations) means a
// bug in our SQL or validation, so it stays a raw error and surfaces loudly.
const conflictStates: ReadonlySet<string> = new Set([
  '23505', // unique_violation
  '23503', // foreign_key_violation
  '23P01', // exclusion_violation
  '40001', // serialization_failure
  '40P01', // deadlock_detected
]);
const unavailableStates: ReadonlySet<string> = new Set(['53300', '57P01', '57P02', '57P03']);

/** Only a server error report carries a SQLSTATE; `severity` tells it from a Node error code like EPIPE. */
function sqlStateOf(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { code, severity } = e as { code?: unknown; severity?: unknown };
  return typeof severity === 'string' && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Maps a driver error to the catalogue. `connectionLost` says how to read an error without a
 * SQLSTATE: from `pg` it means the connection broke; from PGlite it means a bug.
 */
export function mapDatabaseError(e: unknown, connectionLost: boolean): unknown {
  if (isStripvaultError(e)) return e;
  const state = sqlStateOf(e);
  const constraint = (e as { constraint?: unknown } | null)?.constraint;
  const detail = { sqlState: state, constraint: typeof constraint === 'string' ? constraint : undefined };
  const message = e instanceof Error ? e.message : String(e);
  if (state !== undefined && conflictStates.has(state)) {
    return new StripvaultError(ErrorCode.StoreConflict, `metadata store conflict: ${message}`, detail, { cause: e });
  }
  if ((state !== undefined && (state.startsWith('08') || unavailableStates.has(state))) || (state === undefined && connectionLost)) {
    return new StripvaultError(ErrorCode.StoreUnavailable, `metadata store unavailable: ${message}`, detail, { cause: e });
  }
  return e;
}
