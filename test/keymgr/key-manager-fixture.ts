/**
 * Shared setup for the key manager tests (not a test file): a PGlite store (in memory unless a data
 * directory is given), an audit log in a temp directory, a fake directory, and volumes to present.
 */
import type { ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, StripvaultError, fail, type ErrorCode as ErrorCodeType } from '../../appliance/errors.ts';
import { openPgliteSql } from '../../appliance/store/pglite-sql.ts';
import type { SqlPool } from '../../appliance/store/sql.ts';
import { Store, type VolumeRecord } from '../../appliance/store/store.ts';
import { AuditLog } from '../../keymgr/audit.ts';
import type { AuthenticatedUser, Directory, DirectoryMember } from '../../keymgr/directory.ts';
import type { Actor } from '../../keymgr/key-manager-api.ts';
import { KeyManager } from '../../keymgr/key-manager.ts';

export const officer: Actor = { name: 'officer:alice' };

export async function expectCode(t: ExecutionContext, run: () => Promise<unknown>, code: ErrorCodeType, why?: string): Promise<StripvaultError> {
  return (await t.throwsAsync(run, { instanceOf: StripvaultError, code }, why)) as StripvaultError;
}

/** A directory whose groups the test edits; `failing` makes every question throw it. */
export class FakeDirectory implements Directory {
  readonly kind = 'fake';
  readonly groups = new Map<string, DirectoryMember[]>();
  failing: unknown = null;
  questions = 0;

  async authenticate(): Promise<AuthenticatedUser> {
    return fail(ErrorCode.AuthFailed, 'authentication failed');
  }

  async isMember(group: string, member: DirectoryMember): Promise<boolean> {
    this.questions++;
    if (this.failing !== null) throw this.failing;
    return (this.groups.get(group) ?? []).some((m) => m.kind === member.kind && m.name === member.name);
  }

  async members(group: string): Promise<readonly DirectoryMember[]> {
    this.questions++;
    if (this.failing !== null) throw this.failing;
    return [...(this.groups.get(group) ?? [])];
  }

  async close(): Promise<void> {}
}

export interface Fixture {
  readonly sql: SqlPool;
  readonly store: Store;
  readonly dir: string;
  readonly auditPath: string;
  readonly audit: AuditLog;
  readonly directory: FakeDirectory;
  readonly km: KeyManager;
  /** Another key manager on the same store and audit file (a second appliance, or a restart). */
  reopen(): Promise<KeyManager>;
  /** Makes the audit file unwritable (a directory in its place) until the returned function runs. */
  breakAudit(): Promise<() => Promise<void>>;
  volume(name: string): Promise<VolumeRecord>;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;

export async function openFixture(options: { dataDir?: string } = {}): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'sv-keymgr-'));
  const sql = await openPgliteSql(options.dataDir ?? null);
  const store = await Store.open(sql);
  const auditPath = join(dir, 'audit.log');
  const audit = new AuditLog({ store, filePath: auditPath });
  const directory = new FakeDirectory();
  const km = await KeyManager.open({ store, audit, directory });
  let devices = 0;
  return {
    sql,
    store,
    dir,
    auditPath,
    audit,
    directory,
    km,
    reopen: () => KeyManager.open({ store, audit, directory }),
    async breakAudit() {
      const aside = join(dir, 'audit.aside');
      const existed = existsSync(auditPath);
      if (existed) await rename(auditPath, aside);
      await mkdir(auditPath);
      return async () => {
        await rmdir(auditPath);
        if (existed) await rename(aside, auditPath);
      };
    },
    async volume(name: string) {
      const device = await store.addDevice({ name: `dev-${name}-${++devices}`, kind: 'file', path: `/srv/${name}.img`, sizeBytes: 16 * MiB });
      return await store.createVolume({
        name,
        m: 1,
        n: 1,
        sizeBytes: MiB,
        blockSize: 4096,
        strips: [{ index: 0, deviceId: device.id, offsetBytes: 0, lengthBytes: 2 * MiB }],
      });
    },
    async close() {
      await audit.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Initializes with `officers` (default 2-of-3) and unseals with the first T shares. */
export async function initAndUnseal(km: KeyManager, threshold = 2, officerCount = 3): Promise<string[]> {
  const officers = Array.from({ length: officerCount }, (_, i) => `officer-${String.fromCharCode(97 + i)}`);
  const result = await km.init({ officers, threshold }, officer);
  const shares = result.shares.map((s) => s.share);
  for (const share of shares.slice(0, threshold)) await km.submitShare(share, officer);
  return shares;
}

/** Every row of every table in the store, as PostgreSQL's text form (bytea as \x hex). */
export async function storeDump(sql: SqlPool): Promise<string> {
  const tables = await sql.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
  const parts: string[] = [];
  for (const { table_name } of tables) {
    const rows = await sql.query<{ row: string }>(`SELECT t::text AS row FROM ${table_name} t`);
    parts.push(table_name, ...rows.map((r) => r.row));
  }
  return parts.join('\n');
}

/** The ways a key's bytes could appear in text: hex, base64, base64url. */
export function encodings(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  return [b.toString('hex'), b.toString('base64'), b.toString('base64url')];
}
