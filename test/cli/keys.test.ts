/**
 * The key-manager commands of `stripvault` against a real admin API server (loopback, ephemeral
 * port) backed by the fake key manager: `main(argv, io)` with captured streams, the token read from
 * DATA/api-token, shares read from stdin, certificate files and their modes, exit codes (0, 1 for
 * operational errors, 2 for usage and SV_INVALID_ARGUMENT) and the messages people see.
 */
import test from 'ava';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { loadOrCreateApiToken } from '../../admin-ui/api-token.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { resolveApiToken } from '../../cli/api-client.ts';
import { isKeysCommand, shareInputBytesMax } from '../../cli/keys.ts';
import { startFakeApi, type FakeApi } from '../helpers/api-harness.ts';
import { withTempDir } from '../helpers/volumes.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';

type Run = CliRun;

interface Env {
  api: FakeApi;
  data: string;
  dir: string;
  cli: (args: string[], stdin?: string) => Promise<Run>;
}

async function withCli(fn: (env: Env) => Promise<void>, options: Parameters<typeof startFakeApi>[0] = {}): Promise<void> {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    const { token } = await loadOrCreateApiToken(data);
    const api = await startFakeApi({ ...options, token });
    try {
      const cli = (args: string[], stdin = ''): Promise<Run> => runCli(['--data', data, '--api', api.url, ...args], stdin);
      await fn({ api, data, dir, cli });
    } finally {
      await api.close();
    }
  });
}

async function initThenSeal(env: Env): Promise<string[]> {
  const r = await env.cli(['init', '--officers', 'alice,bob,carol', '--threshold', '2']);
  if (r.code !== 0) throw new Error(r.stderr);
  const shares = [...r.stdout.matchAll(/^officer \w+: (\S+)$/gm)].map((m) => m[1]!);
  const s = await env.cli(['seal']);
  if (s.code !== 0) throw new Error(s.stderr);
  return shares;
}

test('status, init, seal, unseal from stdin', async (t) => {
  await withCli(async (env) => {
    let r = await env.cli(['status']);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'initialized: no\nsealed: yes\n');

    r = await env.cli(['init', '--officers', 'alice, bob,carol', '--threshold', '2']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stderr, /WARNING: the officer shares below are the ONLY copies and are shown ONCE/);
    const shares = [...r.stdout.matchAll(/^officer (\w+): (svshare1\.\S+)$/gm)].map((m) => [m[1]!, m[2]!] as const);
    t.deepEqual(
      shares.map(([o]) => o),
      ['alice', 'bob', 'carol'],
    );
    t.regex(r.stdout, /^key set [0-9a-f-]{36}: 2 of 3 shares unseal$/m);

    r = await env.cli(['seal']);
    t.is(r.code, 0, r.stderr);
    r = await env.cli(['status', '--json']);
    t.deepEqual(JSON.parse(r.stdout), { initialized: true, sealed: true, unseal: { threshold: 2, received: 0, officers: [] } });

    r = await env.cli(['unseal'], `  ${shares[1]![1]}  \n`);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'share accepted: 1 of 2 (bob); still sealed\n');
    t.false(r.stdout.includes(shares[1]![1]) || r.stderr.includes(shares[1]![1]));
    r = await env.cli(['status']);
    t.regex(r.stdout, /unseal: 1 of 2 shares received \(bob\)/);

    r = await env.cli(['unseal'], shares[1]![1]);
    t.is(r.code, 1);
    t.regex(r.stderr, /^stripvault: SV_OFFICER_SHARE_DUPLICATE: /);

    r = await env.cli(['unseal'], shares[2]![1] + '\n');
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'unsealed (2 of 2 shares: bob, carol)\n');
    t.true(env.api.fake.calls.filter((c) => c.op === 'submitShare').every((c) => c.actor === 'api:unseal'));
    t.true(env.api.fake.calls.filter((c) => c.op === 'init' || c.op === 'seal').every((c) => c.actor === 'api:token'));
    for (const [, share] of shares) t.false(env.api.logs.join('\n').includes(share!));
  });
});

test('unseal reads exactly one share, from stdin only', async (t) => {
  await withCli(async (env) => {
    const shares = await initThenSeal(env);
    for (const [stdin, pattern] of [
      ['', /none was given/],
      ['\n  \n', /none was given/],
      [`${shares[0]}\n${shares[1]}\n`, /ONE officer share/],
      ['x'.repeat(shareInputBytesMax + 1), /more than 4096 bytes/],
    ] as const) {
      const r = await env.cli(['unseal'], stdin);
      t.is(r.code, 2, stdin.slice(0, 20));
      t.regex(r.stderr, pattern);
    }
    let r = await env.cli(['unseal', shares[0]!]);
    t.is(r.code, 2, 'a share in argv is refused');
    t.regex(r.stderr, /reads the share from stdin/);
    t.false(r.stderr.includes(shares[0]!), 'and not echoed');
    r = await env.cli(['unseal'], 'svshare1.' + 'A'.repeat(76));
    t.is(r.code, 1);
    t.regex(r.stderr, /^stripvault: SV_OFFICER_SHARE_INVALID: /);
    t.is(env.api.fake.calls.filter((c) => c.op === 'submitShare').length, 1);
  });
});

test('COIs and members', async (t) => {
  await withCli(async (env) => {
    await env.cli(['init', '--officers', 'alice', '--threshold', '1']);
    let r = await env.cli(['coi', 'create', 'finance']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^COI finance created \(local\), workgroup key [0-9a-f]{32}$/m);
    r = await env.cli(['coi', 'create', 'eng', '--ldap-group', 'cn=eng,ou=groups,dc=example,dc=com']);
    t.is(r.code, 0, r.stderr);
    r = await env.cli(['coi', 'create', 'finance']);
    t.is(r.code, 1);
    t.regex(r.stderr, /^stripvault: SV_STORE_CONFLICT: COI finance already exists\n$/);
    r = await env.cli(['coi', 'create', 'Not Valid']);
    t.is(r.code, 2, 'SV_INVALID_ARGUMENT from the API exits 2');
    t.regex(r.stderr, /^stripvault: SV_INVALID_ARGUMENT: /);

    r = await env.cli(['coi', 'list', '--json']);
    const cois = JSON.parse(r.stdout);
    t.deepEqual(
      cois.map((c: { name: string; source: string }) => [c.name, c.source]),
      [
        ['finance', 'local'],
        ['eng', 'ldap'],
      ],
    );
    r = await env.cli(['coi', 'list']);
    t.regex(r.stdout, /^eng\tldap\tcn=eng,ou=groups,dc=example,dc=com\t[0-9a-f]{32}\t/m);

    t.is((await env.cli(['coi', 'add-member', 'finance', '--client', 'db-01'])).code, 0);
    r = await env.cli(['coi', 'add-member', 'finance', '--user', 'alice']);
    t.is(r.stdout, 'user alice added to COI finance\n');
    r = await env.cli(['coi', 'members', 'finance']);
    t.is(r.stdout, 'client\tdb-01\nuser\talice\n');
    r = await env.cli(['coi', 'members', 'finance', '--json']);
    t.deepEqual(JSON.parse(r.stdout), [
      { kind: 'client', name: 'db-01' },
      { kind: 'user', name: 'alice' },
    ]);
    for (const args of [
      ['coi', 'add-member', 'finance'],
      ['coi', 'add-member', 'finance', '--client', 'a', '--user', 'b'],
      ['coi', 'add-member'],
    ]) {
      r = await env.cli(args);
      t.is(r.code, 2, args.join(' '));
    }
    r = await env.cli(['coi', 'remove-member', 'finance', '--user', 'alice']);
    t.is(r.code, 0, r.stderr);
    r = await env.cli(['coi', 'remove-member', 'finance', '--user', 'alice']);
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_NOT_FOUND/);

    r = await env.cli(['coi', 'rotate-key', 'finance']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^COI finance: workgroup key [0-9a-f]{32} replaced by [0-9a-f]{32}$/m);
    t.is((await env.cli(['coi', 'remove', 'eng'])).stdout, 'COI eng removed\n');
    r = await env.cli(['coi', 'frobnicate']);
    t.is(r.code, 2);
    t.regex(r.stderr, /unknown command "coi frobnicate"/);
    t.true(env.api.fake.calls.every((c) => c.actor === 'api:token'));
  });
});

test('virtual disks, shred and its verification', async (t) => {
  await withCli(async (env) => {
    await env.cli(['init', '--officers', 'alice', '--threshold', '1']);
    env.api.fake.volumes.set('vol1', randomUUID());
    await env.cli(['coi', 'create', 'finance']);
    await env.cli(['coi', 'create', 'eng']);
    let r = await env.cli(['vdisk', 'create', 'disk1', '--volume', 'vol1', '--coi', 'finance']);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'virtual disk disk1: volume vol1 presented to COI finance\n');
    t.is((await env.cli(['vdisk', 'create', 'disk2', '--volume', 'vol1', '--coi', 'eng'])).code, 0);
    r = await env.cli(['vdisk', 'create', 'disk3', '--volume', 'vol1']);
    t.is(r.code, 2);
    t.regex(r.stderr, /missing --coi/);
    r = await env.cli(['vdisk', 'list', '--json']);
    t.deepEqual(
      JSON.parse(r.stdout).map((v: { name: string }) => v.name),
      ['disk1', 'disk2'],
    );
    r = await env.cli(['vdisk', 'list']);
    t.regex(r.stdout, /^disk2\tvol1\teng\t/m);
    t.is((await env.cli(['vdisk', 'remove', 'disk2'])).code, 0);
    r = await env.cli(['vdisk', 'remove', 'disk1']);
    t.is(r.code, 1, 'the last key of a volume stays');
    t.regex(r.stderr, /SV_STORE_CONFLICT/);

    r = await env.cli(['volume', 'verify-shred', 'vol1']);
    t.is(r.code, 1, 'not shredded yet');
    t.regex(r.stdout, /NOT clean/);
    r = await env.cli(['volume', 'shred', 'vol1']);
    t.is(r.code, 2);
    t.regex(r.stderr, /--yes-destroy-all-data/);
    t.false(env.api.fake.calls.some((c) => c.op === 'shredVolume'));
    r = await env.cli(['volume', 'shred', 'vol1', '--yes-destroy-all-data']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^volume vol1 shredded; workgroup keys destroyed: [0-9a-f]{32}$/m);
    r = await env.cli(['volume', 'verify-shred', 'vol1']);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout, 'volume vol1: no copy of its keys is left\n');
    r = await env.cli(['volume', 'shred', 'nope', '--yes-destroy-all-data']);
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_NOT_FOUND/);
  });
});

test('certificates: files libnbd and qemu expect, the key 0600, never overwritten; list and revoke', async (t) => {
  await withCli(async (env) => {
    await env.cli(['init', '--officers', 'alice', '--threshold', '1']);
    const clientDir = join(env.dir, 'certs', 'db-01');
    let r = await env.cli(['cert', 'issue-client', 'db-01', '--out', clientDir]);
    t.is(r.code, 0, r.stderr);
    t.deepEqual((await readdir(clientDir)).sort(), ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']);
    t.is((await stat(join(clientDir, 'client-key.pem'))).mode & 0o777, 0o600);
    t.is((await stat(join(clientDir, 'client-cert.pem'))).mode & 0o777, 0o644);
    t.regex(await readFile(join(clientDir, 'client-key.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    t.regex(await readFile(join(clientDir, 'client-cert.pem'), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    t.regex(await readFile(join(clientDir, 'ca-cert.pem'), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    t.false(r.stdout.includes('PRIVATE KEY'), 'the key goes to the file only');

    const issuedBefore = env.api.fake.calls.filter((c) => c.op.startsWith('issue')).length;
    r = await env.cli(['cert', 'issue-client', 'db-01', '--out', clientDir]);
    t.is(r.code, 2);
    t.regex(r.stderr, /already exists; refusing to overwrite/);
    t.is(env.api.fake.calls.filter((c) => c.op.startsWith('issue')).length, issuedBefore, 'nothing issued');

    const serverDir = join(env.dir, 'certs', 'server');
    await mkdir(serverDir);
    r = await env.cli(['cert', 'issue-server', 'nas.example.com', '127.0.0.1', '--out', serverDir]);
    t.is(r.code, 0, r.stderr);
    t.deepEqual((await readdir(serverDir)).sort(), ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']);
    t.is((await stat(join(serverDir, 'server-key.pem'))).mode & 0o777, 0o600);
    for (const args of [
      ['cert', 'issue-server', '--out', join(env.dir, 'x')],
      ['cert', 'issue-client', 'db-02'],
      ['cert', 'issue-client', 'Bad Name', '--out', join(env.dir, 'y')],
    ]) {
      r = await env.cli(args);
      t.is(r.code, 2, args.join(' '));
    }

    r = await env.cli(['cert', 'list', '--json']);
    const certs = JSON.parse(r.stdout) as { serial: string; kind: string; subject: string }[];
    t.deepEqual(
      certs.map((c) => [c.kind, c.subject]),
      [
        ['client', 'db-01'],
        ['server', 'nas.example.com'],
      ],
    );
    r = await env.cli(['cert', 'revoke', certs[0]!.serial]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, new RegExp(`^certificate ${certs[0]!.serial} \\(client db-01\\) revoked at `));
    r = await env.cli(['cert', 'list']);
    t.regex(r.stdout, new RegExp(`^${certs[0]!.serial}\\tclient\\tdb-01\\t.*\\trevoked `, 'm'));
    t.regex(r.stdout, new RegExp(`^${certs[1]!.serial}\\tserver\\tnas.example.com\\t.*\\tvalid$`, 'm'));
    r = await env.cli(['cert', 'revoke', 'zz']);
    t.is(r.code, 2);
  });
});

test('audit verify reports the verdict and exits non-zero on a broken log', async (t) => {
  let verdict: { ok: boolean; entries: number; fileEntries: number; firstBad?: { seq: number; sink: 'file'; reason: string } } = { ok: true, entries: 12, fileEntries: 12 };
  await withCli(
    async (env) => {
      let r = await env.cli(['audit', 'verify']);
      t.is(r.code, 0, r.stderr);
      t.is(r.stdout, 'audit log intact: 12 entries in the store, 12 in the file\n');
      verdict = { ok: false, entries: 6, fileEntries: 6, firstBad: { seq: 7, sink: 'file', reason: 'hash chain broken' } };
      r = await env.cli(['audit', 'verify']);
      t.is(r.code, 1);
      t.is(r.stdout, 'audit log BROKEN at entry 7 (file): hash chain broken; 6 entries good before it\n');
    },
    { auditVerify: async () => verdict },
  );
});

test('no API, no token, a wrong token, a bad --api: clear messages and exit codes', async (t) => {
  await withCli(async (env) => {
    // A port nobody listens on: bind one, note it, let it go.
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    let r = await env.cli(['--api', `http://127.0.0.1:${port}`, 'status']);
    t.is(r.code, 1);
    t.is(r.stderr, `stripvault: SV_API_UNAVAILABLE: no appliance API at http://127.0.0.1:${port} (connection refused): is \`stripvault serve\` running? (or pass --api URL)\n`);

    const empty = join(env.dir, 'empty');
    const noToken = await runCli(['--data', empty, '--api', env.api.url, 'coi', 'list']);
    t.is(noToken.code, 1);
    t.regex(noToken.stderr, /^stripvault: SV_AUTH_FAILED: no API token/);
    // status needs no token at all.
    t.is((await runCli(['--data', empty, '--api', env.api.url, 'status'])).code, 0);

    const wrong = join(env.dir, 'wrong-token');
    await writeFile(wrong, 'b'.repeat(64), { mode: 0o600 });
    r = await env.cli(['--api-token-file', wrong, 'coi', 'list']);
    t.is(r.code, 1);
    t.regex(r.stderr, /^stripvault: SV_AUTH_FAILED: missing or wrong API token/);
    t.false(r.stderr.includes('b'.repeat(64)));

    for (const api of ['ftp://127.0.0.1:1', 'not a url', 'http://user:pw@127.0.0.1:1', 'http://10.1.2.3:8080']) {
      r = await env.cli(['--api', api, 'status']);
      t.is(r.code, 2, api);
      t.regex(r.stderr, /^stripvault: SV_INVALID_ARGUMENT: --api/);
    }
    r = await env.cli(['status', 'extra']);
    t.is(r.code, 2);
    r = await env.cli(['init', '--officers', 'a,b', '--threshold', 'two']);
    t.is(r.code, 2);
    r = await env.cli(['init', '--officers', 'a,b']);
    t.is(r.code, 2);
    t.regex(r.stderr, /missing --threshold/);
  });
});

test('the token comes from --api-token-file, then STRIPVAULT_API_TOKEN, then DATA/api-token', async (t) => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    const { token: dataToken } = await loadOrCreateApiToken(data);
    const file = join(dir, 'token');
    await writeFile(file, 'c'.repeat(64) + '\n', { mode: 0o600 });
    t.is(await resolveApiToken({ tokenFile: file, env: { STRIPVAULT_API_TOKEN: 'd'.repeat(64) }, dataDir: data }), 'c'.repeat(64));
    t.is(await resolveApiToken({ env: { STRIPVAULT_API_TOKEN: 'd'.repeat(64) }, dataDir: data }), 'd'.repeat(64));
    t.is(await resolveApiToken({ env: {}, dataDir: data }), dataToken);
    t.is(await resolveApiToken({ env: { STRIPVAULT_API_TOKEN: '' }, dataDir: join(dir, 'none') }), undefined);
    await t.throwsAsync(resolveApiToken({ env: { STRIPVAULT_API_TOKEN: 'nope' }, dataDir: data }), { message: /STRIPVAULT_API_TOKEN/ });
    await t.throwsAsync(resolveApiToken({ tokenFile: join(dir, 'missing'), env: {}, dataDir: data }), { message: /ENOENT/ });
  });
});

test('only the key-manager commands are routed to the API', (t) => {
  for (const [g, v] of [['init'], ['unseal'], ['seal'], ['status'], ['coi', 'list'], ['vdisk', 'create'], ['cert', 'list'], ['audit', 'verify'], ['volume', 'shred'], ['volume', 'verify-shred']] as const) {
    t.true(isKeysCommand(g, v), `${g} ${v ?? ''}`);
  }
  for (const [g, v] of [['volume', 'create'], ['volume', 'list'], ['volume', undefined], ['device', 'list'], ['serve', undefined]] as const) t.false(isKeysCommand(g, v));
  t.is(ErrorCode.ApiUnavailable, 'SV_API_UNAVAILABLE');
});
