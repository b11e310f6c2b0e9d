/**
 * The schema, as an append-only list of numbered migrations. Never edit a released migration:
 * add the next number. Each store records what it applied in `schema_migrations`.
 *
 * Applying takes a transaction-scoped advisory lock first, so appliances starting together
 * against one PostgreSQL run the migrations once, one after another; PGlite has one process
 * and takes the lock trivially. All pending migrations commit together or not at all.
 */
import { assert, ErrorCode, fail } from '../errors.ts';
import { rowInteger, rowString, type Row } from './rows.ts';
import type { Sql } from './sql.ts';

export interface Migration {
  readonly version: number;
  /** Recorded with the version so a store migrated by different code is noticed. */
  readonly name: string;
  /** One statement each: PGlite's extended protocol runs a single statement per query. */
  readonly statements: readonly string[];
}

/** Every bigint column we read back must fit a JS number exactly. */
const safe = (column: string): string => `CHECK (${column} BETWEEN 0 AND ${Number.MAX_SAFE_INTEGER})`;

export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'devices, volumes, strips, events',
    statements: [
      `CREATE TABLE devices (
        id uuid PRIMARY KEY,
        name text NOT NULL UNIQUE,
        kind text NOT NULL CHECK (kind IN ('file', 'block', 'nbd')),
        path text NOT NULL,
        size_bytes bigint NOT NULL ${safe('size_bytes')},
        state text NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'offline', 'failed')),
        created_at timestamptz NOT NULL DEFAULT now()
      )`,
      `CREATE TABLE volumes (
        id uuid PRIMARY KEY,
        name text NOT NULL UNIQUE,
        m smallint NOT NULL,
        n smallint NOT NULL,
        size_bytes bigint NOT NULL ${safe('size_bytes')},
        block_size integer NOT NULL CHECK (block_size > 0),
        state text NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'degraded', 'failed', 'offline')),
        epoch bigint NOT NULL DEFAULT 0 ${safe('epoch')},
        generation_reserved bigint NOT NULL DEFAULT 0 ${safe('generation_reserved')},
        created_at timestamptz NOT NULL DEFAULT now(),
        CHECK (1 <= m AND m <= n AND n <= 16)
      )`,
      // ON DELETE RESTRICT: a device holding strips cannot vanish under a volume.
      `CREATE TABLE strips (
        volume_id uuid NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
        strip_index smallint NOT NULL CHECK (strip_index BETWEEN 0 AND 15),
        device_id uuid NOT NULL REFERENCES devices (id) ON DELETE RESTRICT,
        offset_bytes bigint NOT NULL ${safe('offset_bytes')},
        length_bytes bigint NOT NULL ${safe('length_bytes')},
        state text NOT NULL DEFAULT 'healthy' CHECK (state IN ('healthy', 'stale', 'missing', 'rebuilding', 'failed')),
        PRIMARY KEY (volume_id, strip_index),
        UNIQUE (volume_id, device_id)
      )`,
      `CREATE INDEX strips_device_id ON strips (device_id, offset_bytes)`,
      `CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        kind text NOT NULL,
        subject text NOT NULL,
        detail jsonb NOT NULL
      )`,
      `CREATE INDEX events_subject_id ON events (subject, id)`,
    ],
  },
  {
    version: 2,
    name: 'audit log',
    statements: [
      // The chain is structural: a row after the first must name its predecessor's (seq, hash),
      // so the table can hold neither a gap nor a fork. prev_seq is NULL for entry 1 (no parent).
      `CREATE TABLE audit_log (
        seq bigint PRIMARY KEY CHECK (seq BETWEEN 1 AND ${Number.MAX_SAFE_INTEGER}),
        at timestamptz NOT NULL,
        actor text NOT NULL,
        action text NOT NULL,
        subject text NOT NULL,
        detail jsonb NOT NULL CHECK (jsonb_typeof(detail) = 'object'),
        prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
        hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
        prev_seq bigint GENERATED ALWAYS AS (NULLIF(seq - 1, 0)) STORED,
        UNIQUE (seq, hash),
        CHECK (seq > 1 OR prev_hash = '${'0'.repeat(64)}'),
        FOREIGN KEY (prev_seq, prev_hash) REFERENCES audit_log (seq, hash)
      )`,
      `CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_log is append-only';
      END
      $$`,
      `CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()`,
      `CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()`,
      // How far each appliance's audit file durably reached, so a truncated or deleted file is
      // caught even on an appliance whose file legitimately lags entries others appended since.
      `CREATE TABLE audit_sinks (
        name text PRIMARY KEY,
        seq bigint NOT NULL ${safe('seq')},
        updated_at timestamptz NOT NULL DEFAULT now()
      )`,
    ],
  },
  {
    version: 3,
    name: 'key manager: key set, CA, certificates, COIs, workgroup keys, virtual disks, local users',
    statements: [
      // One current key set: a boolean primary key that can only be true. Public data (names,
      // threshold, share digests, verifier): see keymgr/master-key.ts.
      `CREATE TABLE key_set (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        key_set_id uuid NOT NULL,
        record jsonb NOT NULL CHECK (jsonb_typeof(record) = 'object'),
        created_at timestamptz NOT NULL
      )`,
      // The CA private key only ever AES-256-GCM encrypted under a key derived from the master key.
      `CREATE TABLE appliance_ca (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        cert_pem text NOT NULL,
        key_encrypted bytea NOT NULL CHECK (octet_length(key_encrypted) BETWEEN 1 AND ${16 * 1024}),
        created_at timestamptz NOT NULL
      )`,
      `CREATE TABLE certificates (
        serial text PRIMARY KEY CHECK (serial ~ '^([0-9a-f]{2}){1,20}$'),
        issue_order bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        kind text NOT NULL CHECK (kind IN ('client', 'server')),
        subject text NOT NULL,
        coi_names jsonb NOT NULL CHECK (jsonb_typeof(coi_names) = 'array'),
        not_before timestamptz NOT NULL,
        not_after timestamptz NOT NULL,
        revoked_at timestamptz,
        CHECK (not_before < not_after)
      )`,
      `CREATE TABLE cois (
        id uuid PRIMARY KEY,
        name text NOT NULL UNIQUE,
        source text NOT NULL CHECK (source IN ('local', 'ldap')),
        ldap_group text,
        created_at timestamptz NOT NULL,
        CHECK ((source = 'ldap') = (ldap_group IS NOT NULL))
      )`,
      `CREATE TABLE coi_members (
        coi_id uuid NOT NULL REFERENCES cois (id) ON DELETE CASCADE,
        kind text NOT NULL CHECK (kind IN ('user', 'client')),
        name text NOT NULL,
        added_at timestamptz NOT NULL,
        PRIMARY KEY (coi_id, kind, name)
      )`,
      `CREATE INDEX coi_members_member ON coi_members (kind, name)`,
      // A destroyed key keeps its row (id, times) so a shred can be verified, but never its bytes.
      `CREATE TABLE workgroup_keys (
        id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
        coi_id uuid NOT NULL REFERENCES cois (id) ON DELETE CASCADE,
        wrapped bytea CHECK (octet_length(wrapped) = 40),
        state text NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
        created_at timestamptz NOT NULL,
        retired_at timestamptz,
        destroyed_at timestamptz,
        CHECK ((state = 'destroyed') = (wrapped IS NULL)),
        CHECK ((state = 'destroyed') = (destroyed_at IS NOT NULL)),
        CHECK ((state = 'active') = (retired_at IS NULL) OR state = 'destroyed')
      )`,
      `CREATE UNIQUE INDEX workgroup_keys_one_active ON workgroup_keys (coi_id) WHERE state = 'active'`,
      // NO ACTION both ways: a volume or COI still presented cannot vanish under its clients
      // (SQLSTATE 23503, a store conflict; RESTRICT would raise 23001 instead).
      `CREATE TABLE virtual_disks (
        name text PRIMARY KEY,
        volume_id uuid NOT NULL REFERENCES volumes (id) ON DELETE NO ACTION,
        coi_id uuid NOT NULL REFERENCES cois (id) ON DELETE NO ACTION,
        created_at timestamptz NOT NULL,
        UNIQUE (volume_id, coi_id)
      )`,
      `CREATE INDEX virtual_disks_coi ON virtual_disks (coi_id)`,
      `CREATE TABLE local_users (
        name text PRIMARY KEY,
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
      )`,
    ],
  },
  {
    version: 4,
    name: 'scrub cursor per volume',
    statements: [
      // Where the scheduled scrub stopped (0: not under way) and when it last finished a pass, so a
      // restart resumes instead of starting over (and a weekly scrub is not postponed by restarts).
      `ALTER TABLE volumes ADD COLUMN scrub_next_block bigint NOT NULL DEFAULT 0 ${safe('scrub_next_block')}`,
      `ALTER TABLE volumes ADD COLUMN scrub_completed_at timestamptz`,
    ],
  },
];

export const schemaVersionLatest = migrations.length;

/** pg_advisory_xact_lock key: "svmigr" in ASCII, well inside the safe-integer range. */
export const migrationLockKey = 0x73766d696772;

export interface MigrationResult {
  readonly fromVersion: number;
  readonly toVersion: number;
}

function checkMigrationList(list: readonly Migration[]): void {
  list.forEach((migration, i) => {
    assert(migration.version === i + 1, `migration ${i} has version ${migration.version}`);
  });
}

export async function migrate(sql: Sql, list: readonly Migration[] = migrations): Promise<MigrationResult> {
  checkMigrationList(list);
  return await sql.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [migrationLockKey]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const applied = await tx.query<Row>('SELECT version, name FROM schema_migrations ORDER BY version');
    const known = list.length;
    const versions = applied.map((row) => rowInteger(row, 'version'));
    const newest = versions.at(-1) ?? 0;
    if (newest > known) {
      fail(ErrorCode.StoreMigration, `metadata store schema is version ${newest}, newer than this stripvault knows (${known}); upgrade stripvault`, {
        storeVersion: newest,
        knownVersion: known,
      });
    }
    applied.forEach((row, i) => {
      const expected = list[i];
      const name = rowString(row, 'name');
      if (versions[i] !== i + 1 || expected === undefined) {
        fail(ErrorCode.StoreMigration, `metadata store has a gap in its migrations at version ${i + 1}`, { storeVersion: newest });
      }
      if (expected.name !== name) {
        fail(ErrorCode.StoreMigration, `metadata store migration ${i + 1} is "${name}", this stripvault expects "${expected.name}"`, {
          storeVersion: newest,
        });
      }
    });
    const fromVersion = applied.length;
    for (const migration of list.slice(fromVersion)) {
      for (const statement of migration.statements) await tx.query(statement);
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
    }
    return { fromVersion, toVersion: known };
  });
}
