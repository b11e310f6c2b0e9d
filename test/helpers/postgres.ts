/**
 * A throwaway PostgreSQL server for tests: Debian's server binaries, a fresh cluster in a temp
 * dir, TCP on 127.0.0.1 only (no Unix socket), trust auth. PostgreSQL refuses to run as root,
 * so under root it runs as the `postgres` system user. stop() always removes the directory;
 * an exit hook kills the server if a test process dies without calling it.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export const postgresRoot = '/usr/lib/postgresql';
export const postgresStartTimeoutMs = 30_000;
export const postgresStopTimeoutMs = 10_000;
/** Enough of the server log to explain a failed start. */
const logTailBytesMax = 8192;
const pollIntervalMs = 100;

export interface PostgresServer {
  /** A superuser connection to the `postgres` database. */
  readonly connectionString: string;
  /** A new empty database on this server; returns its connection string. */
  createDatabase(): Promise<string>;
  stop(): Promise<void>;
}

function findBinDir(): string {
  const versions = existsSync(postgresRoot)
    ? readdirSync(postgresRoot)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(postgresRoot, v, 'bin', 'initdb')) && existsSync(join(postgresRoot, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined) {
    throw new Error(
      `PostgreSQL server binaries not found (looked for ${postgresRoot}/<version>/bin/{initdb,postgres}). ` +
        'Install them: apt-get install postgresql',
    );
  }
  return join(postgresRoot, newest, 'bin');
}

/** uid/gid to run as: ourselves, or the `postgres` system user when we are root. */
function runAs(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const entry = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === 'postgres');
  if (entry === undefined) {
    throw new Error('running as root and there is no `postgres` system user to run PostgreSQL as (install the Debian package postgresql)');
  }
  return { uid: Number(entry[2]), gid: Number(entry[3]) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function run(file: string, args: string[], options: { cwd: string; user: { uid: number; gid: number } | null }): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd: options.cwd, env: childEnv(), ...(options.user ?? {}) }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve();
    });
  });
}

function childEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function canConnect(connectionString: string): Promise<boolean> {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 1000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

export async function startPostgres(): Promise<PostgresServer> {
  const binDir = findBinDir();
  const user = runAs();
  const dir = mkdtempSync(join(tmpdir(), 'stripvault-pg-'));
  let child: ChildProcess | null = null;
  let log = '';
  let exited = false;

  const killNow = (): void => {
    if (child !== null && !exited) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killNow);

  const stop = async (): Promise<void> => {
    process.removeListener('exit', killNow);
    if (child !== null && !exited) {
      const running = child;
      const gone = new Promise<void>((resolve) => running.once('exit', () => resolve()));
      running.kill('SIGINT'); // fast shutdown: abort sessions, no checkpoint wait worth mentioning
      const timer = setTimeout(() => running.kill('SIGKILL'), postgresStopTimeoutMs);
      await gone;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    if (user !== null) chownSync(dir, user.uid, user.gid);
    const dataDir = join(dir, 'data');
    await run(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], {
      cwd: dir,
      user,
    });
    const port = await freePort();
    const settings = {
      listen_addresses: '127.0.0.1',
      port: String(port),
      unix_socket_directories: '',
      // Throwaway data: durability only costs test time.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      shared_buffers: '16MB',
      max_connections: '40',
    };
    const args = ['-D', dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
    const started = spawn(join(binDir, 'postgres'), args, { cwd: dir, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(user ?? {}) });
    child = started;
    const collect = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-logTailBytesMax);
    };
    started.stdout?.on('data', collect);
    started.stderr?.on('data', collect);
    started.once('exit', () => {
      exited = true;
    });
    started.once('error', (e) => {
      exited = true;
      log += `\nspawn error: ${e.message}`;
    });

    const connectionString = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    const deadline = Date.now() + postgresStartTimeoutMs;
    while (!(await canConnect(connectionString))) {
      if (exited) throw new Error(`PostgreSQL exited during startup:\n${log}`);
      if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections within ${postgresStartTimeoutMs} ms:\n${log}`);
      await sleep(pollIntervalMs);
    }

    let databases = 0;
    const createDatabase = async (): Promise<string> => {
      const name = `test_${++databases}`;
      const client = new pg.Client({ connectionString });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return `postgresql://postgres@127.0.0.1:${port}/${name}`;
    };
    return { connectionString, createDatabase, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
