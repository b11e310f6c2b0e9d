/**
 * A production-style appliance end to end: a REAL `stripvault serve` (in-process, `--no-dev-unseal`,
 * embedded PGlite held by the server) administered only through `stripvault --api URL ...` — the
 * officers initialise and unseal it, a COI and its client are made, devices and a volume are
 * created through the admin API, and a real NBD client (nbdinfo, qemu-img over TLS with the issued
 * certificate) sees and uses the volume; sealing shuts it off; the audit log verifies. Then the
 * device and volume routes of the real wiring: the token is required, bad bodies are 400s, and a
 * volume the key manager cannot key is refused before anything is reserved.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { ErrorCode } from '../../appliance/errors.ts';
import { initMasterKey } from '../../keymgr/master-key.ts';
import { serve } from '../../cli/serve.ts';
import { tool, toolOk } from '../nbd/helpers.ts';
import { withTempDir } from '../helpers/volumes.ts';
import { runCli, type CliRun } from '../helpers/cli-run.ts';

const MiB = 1024 * 1024;
const startWaitMs = 60_000;
const pollMs = 50;

interface Running {
  apiUrl: string;
  nbdPort: number;
  data: string;
  stop(): Promise<void>;
}

/** `stripvault serve --no-dev-unseal --api-listen 127.0.0.1:0 --nbd 127.0.0.1:0` in this process. */
async function startServe(t: ExecutionContext, data: string): Promise<Running> {
  let release!: () => void;
  const stop = new Promise<void>((r) => (release = r));
  let apiUrl: string | undefined;
  let nbdPort: number | undefined;
  const logs = new PassThrough();
  logs.resume();
  const done = serve({
    dataDir: data,
    store: undefined,
    nbd: '127.0.0.1:0',
    api: '127.0.0.1:0',
    noDevUnseal: true,
    scrubEvery: 'off',
    io: { stdin: new PassThrough(), stdout: logs, stderr: logs },
    stop,
    onListening: (a) => {
      if ('port' in a) nbdPort = a.port;
    },
    onApi: (url) => (apiUrl = url),
  });
  let exited = false;
  void done.finally(() => (exited = true)).catch(() => undefined);
  for (let waited = 0; (apiUrl === undefined || nbdPort === undefined) && !exited && waited < startWaitMs; waited += pollMs) {
    await new Promise((r) => setTimeout(r, pollMs));
  }
  if (apiUrl === undefined || nbdPort === undefined) {
    release();
    await done;
    throw new Error('serve did not start');
  }
  const r: Running = {
    apiUrl,
    nbdPort,
    data,
    stop: async () => {
      release();
      await done;
    },
  };
  t.teardown(() => r.stop());
  return r;
}

type Run = CliRun;

/** `stripvault --data DATA --api URL ...` through main(argv, io); DATA only supplies the token file. */
function cli(r: Running, args: string[], stdin = ''): Promise<Run> {
  return runCli(['--data', r.data, '--api', r.apiUrl, ...args], stdin);
}

async function ok(t: ExecutionContext, r: Running, args: string[], stdin?: string): Promise<string> {
  const run = await cli(r, args, stdin);
  t.is(run.code, 0, `stripvault ${args.join(' ')}: ${run.stderr}`);
  return run.stdout;
}

async function refused(t: ExecutionContext, r: Running, args: string[], code: string, exit = 1, stdin?: string): Promise<void> {
  const run = await cli(r, args, stdin);
  t.is(run.code, exit, `stripvault ${args.join(' ')} exit code; stderr: ${run.stderr}`);
  t.true(run.stderr.includes(code), `stripvault ${args.join(' ')} should say ${code}: ${run.stderr}`);
}

async function listExports(r: Running, certDir: string): Promise<{ code: number | null; names: string[]; stderr: string }> {
  const out = await tool('nbdinfo', ['--list', '--json', `nbds://127.0.0.1:${r.nbdPort}/?tls-certificates=${certDir}`]);
  if (out.code !== 0) return { code: out.code, names: [], stderr: out.stderr };
  const parsed = JSON.parse(out.stdout) as { exports: Array<{ 'export-name': string; 'export-size'?: number }> };
  return { code: 0, names: parsed.exports.map((e) => e['export-name']).sort(), stderr: out.stderr };
}

async function api(r: Running, method: string, path: string, body?: unknown, auth = true): Promise<{ status: number; json: any }> {
  const token = (await readFile(join(r.data, 'api-token'), 'utf8')).trim();
  const headers: Record<string, string> = { accept: 'application/json' };
  if (auth) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${r.apiUrl}/api/v1${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

test('security officers bring up a sealed appliance and give a client a volume, all through the API', async (t) => {
  t.timeout(120_000);
  await withTempDir(async (root) => {
    const r = await startServe(t, join(root, 'data'));

    const init = await ok(t, r, ['init', '--officers', 'alice,bob,carol', '--threshold', '2']);
    const shares = [...init.matchAll(/^officer (\w+): (\S+)$/gm)].map((m) => ({ officer: m[1]!, share: m[2]! }));
    t.deepEqual(
      shares.map((s) => s.officer),
      ['alice', 'bob', 'carol'],
    );
    t.regex(await ok(t, r, ['status']), /^initialized: yes\nsealed: yes\n/);
    // Sealed: the appliance's own key material is out of reach, so no volume can be made yet.
    await refused(t, r, ['coi', 'create', 'red'], ErrorCode.Sealed);

    t.regex(await ok(t, r, ['unseal'], shares[0]!.share + '\n'), /share accepted: 1 of 2 \(alice\); still sealed/);
    await refused(t, r, ['unseal'], ErrorCode.OfficerShareDuplicate, 1, shares[0]!.share);
    const foreign = await initMasterKey({ officers: ['alice', 'bob', 'carol'], threshold: 2 });
    await refused(t, r, ['unseal'], ErrorCode.OfficerShareForeign, 1, foreign.shares[1]!.text);
    t.regex(await ok(t, r, ['status']), /sealed: yes\nunseal: 1 of 2 shares received \(alice\)/);
    t.regex(await ok(t, r, ['unseal'], shares[2]!.share), /^unsealed \(2 of 2 shares: alice, carol\)/);
    t.regex(await ok(t, r, ['status']), /sealed: no/);

    await ok(t, r, ['coi', 'create', 'red']);
    await ok(t, r, ['coi', 'add-member', 'red', '--client', 'app1']);

    // Devices and a volume, through the API while the server holds the embedded store.
    for (let i = 0; i < 3; i++) {
      t.is(await ok(t, r, ['device', 'add', `d${i}`, join(root, `d${i}.img`), '--create', '64M']), `device d${i} added: file ${join(root, `d${i}.img`)}, 64M\n`);
    }
    await refused(t, r, ['device', 'add', 'd0', join(root, 'again.img'), '--create', '64M'], ErrorCode.StoreConflict);
    const devices = (await ok(t, r, ['device', 'list'])).trim().split('\n');
    t.deepEqual(
      devices.map((l) => l.split('\t').slice(0, 4).join(' ')),
      ['d0 file 64M online', 'd1 file 64M online', 'd2 file 64M online'],
    );
    t.is(await ok(t, r, ['volume', 'create', 'v1', '--size', '8M', '--devices', 'd0,d1,d2', '--coi', 'red']), 'volume v1 created: 2-of-3, 8M, block 4096\n');
    const show = await ok(t, r, ['volume', 'show', 'v1']);
    t.regex(show, /^name: v1\n/);
    t.regex(show, /geometry: 2-of-3\nsize: 8M\nblock size: 4096\n/);
    t.regex(show, /health: healthy\n  strip 0: healthy\n  strip 1: healthy\n  strip 2: healthy\n$/);
    t.regex(await ok(t, r, ['device', 'show', 'd1']), /strips: 1$/m);
    t.regex(await ok(t, r, ['volume', 'list']), /^v1\t2-of-3\t8M\tonline\t[0-9a-f-]{36}\n$/);
    t.is(await ok(t, r, ['volume', 'scrub', 'v1']), 'volume v1 scrubbed: 2048 blocks, 0 repaired, 0 lost\n');
    const vdisks = await ok(t, r, ['vdisk', 'list']);
    t.regex(vdisks, /^v1\tv1\tred\t/);

    // A second volume, removed again; a device holding a strip is not removed.
    await ok(t, r, ['volume', 'create', 'v2', '--size', '1M', '--devices', 'd0,d1', '--m', '1', '--coi', 'red']);
    await refused(t, r, ['device', 'remove', 'd0'], ErrorCode.StoreConflict);
    t.is(await ok(t, r, ['volume', 'remove', 'v2']), 'volume v2 removed\n');
    t.notRegex(await ok(t, r, ['vdisk', 'list']), /^v2\t/m);
    await refused(t, r, ['volume', 'show', 'v2'], ErrorCode.StoreNotFound);

    // A real client with the appliance's certificate sees the volume and uses it.
    const certs = join(root, 'certs-app1');
    t.regex(await ok(t, r, ['cert', 'issue-client', 'app1', '--out', certs]), /^client certificate [0-9a-f]+ for app1: /);
    const listed = await listExports(r, certs);
    t.is(listed.code, 0, listed.stderr);
    t.deepEqual(listed.names, ['v1']);
    const image = join(root, 'in.raw');
    const data = randomBytes(8 * MiB);
    await writeFile(image, data);
    const creds = ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${certs}`];
    const target = `driver=nbd,host=127.0.0.1,port=${r.nbdPort},export=v1,tls-creds=tls0`;
    await toolOk(t, 'qemu-img', ['convert', '-n', ...creds, '-f', 'raw', image, '--target-image-opts', target]);
    const back = join(root, 'out.raw');
    await toolOk(t, 'qemu-img', ['convert', ...creds, '--image-opts', target, '-O', 'raw', back]);
    t.true((await readFile(back)).equals(data), 'what the client wrote reads back');

    // Session keys rotated in the background by the serving appliance; the data is unchanged.
    t.is(await ok(t, r, ['volume', 'rekey', 'v1']), 'volume v1 re-keyed: 2048 blocks re-sealed\n');
    const again = join(root, 'again.raw');
    await toolOk(t, 'qemu-img', ['convert', ...creds, '--image-opts', target, '-O', 'raw', again]);
    t.true((await readFile(again)).equals(data), 'the same bytes under the new session keys');

    // Sealed: no client gets in, by any path.
    t.regex(await ok(t, r, ['seal']), /^sealed/);
    t.regex(await ok(t, r, ['status']), /sealed: yes/);
    t.not((await listExports(r, certs)).code, 0, 'listing refused while sealed');
    t.not((await tool('nbdinfo', [`nbds://127.0.0.1:${r.nbdPort}/v1?tls-certificates=${certs}`])).code, 0, 'opening refused while sealed');
    t.regex(await ok(t, r, ['volume', 'show', 'v1']), /health: failed/);
    // The officers unseal again: the same client gets its volume back, no restart.
    await ok(t, r, ['unseal'], shares[1]!.share);
    t.regex(await ok(t, r, ['unseal'], shares[0]!.share), /^unsealed/);
    t.deepEqual((await listExports(r, certs)).names, ['v1']);
    t.regex(await ok(t, r, ['volume', 'show', 'v1']), /health: healthy/);
    t.regex(await ok(t, r, ['audit', 'verify']), /^audit log intact: \d+ entries in the store, \d+ in the file\n$/);
  });
});

test('the device and volume routes of a real serve: token required, bad bodies refused, nothing reserved without keys', async (t) => {
  t.timeout(60_000);
  await withTempDir(async (root) => {
    const r = await startServe(t, join(root, 'data'));

    for (const [method, path] of [
      ['GET', '/devices'],
      ['POST', '/devices'],
      ['GET', '/devices/d0'],
      ['DELETE', '/devices/d0'],
      ['GET', '/volumes'],
      ['POST', '/volumes'],
      ['GET', '/volumes/v1'],
      ['DELETE', '/volumes/v1'],
      ['POST', '/volumes/v1/scrub'],
      ['POST', '/volumes/v1/rebuild'],
    ] as const) {
      const a = await api(r, method, path, method === 'POST' ? {} : undefined, false);
      t.is(a.status, 401, `${method} ${path} without the token`);
      t.is(a.json?.error?.code, ErrorCode.AuthFailed);
    }

    const file = join(root, 'x.img');
    const badBodies: Array<[string, string, unknown]> = [
      ['POST', '/devices', { name: 'x' }],
      ['POST', '/devices', { name: 'x', path: 'relative/x.img', createBytes: MiB }],
      ['POST', '/devices', { name: 'x', path: file, createBytes: -1 }],
      ['POST', '/devices', { name: 'x', path: file, createBytes: '64M' }],
      ['POST', '/devices', { name: '', path: file }],
      ['POST', '/devices', { name: 'x\u0000y', path: file }],
      ['POST', '/devices', { name: 'x', path: file, extra: 1 }],
      ['POST', '/devices', [1, 2]],
      ['POST', '/volumes', { name: 'v', sizeBytes: '8M', devices: ['a', 'b', 'c'], coi: 'red' }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: [], coi: 'red' }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: ['a', 'a', 'b'], coi: 'red' }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: ['a', 'b'], coi: 'red' }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: ['a', 'b', 'c'], coi: 'red', m: 4 }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: ['a', 'b', 'c'], coi: 'red', blockBytes: 3000 }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB + 1, devices: ['a', 'b', 'c'], coi: 'red' }],
      ['POST', '/volumes', { name: 'v', sizeBytes: 8 * MiB, devices: ['a', 'b', 'c'] }],
      ['POST', '/volumes/v1/scrub', { rateBytesPerSec: -1 }],
      ['POST', '/volumes/v1/rebuild', { strip: 'one', device: 'd3' }],
      ['DELETE', '/volumes/v1', { force: true }],
    ];
    for (const [method, path, body] of badBodies) {
      const a = await api(r, method, path, body);
      t.is(a.status, 400, `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(a.json)}`);
      t.true(a.json?.error?.code === ErrorCode.InvalidArgument || a.json?.error?.code === ErrorCode.InvalidGeometry, JSON.stringify(a.json));
    }
    t.is((await api(r, 'GET', '/devices/nope')).status, 404);
    t.is((await api(r, 'POST', '/devices', { name: 'dir', path: root })).json?.error?.code, ErrorCode.DeviceUnsupported);

    // Devices need no keys; a volume does: refused before any region is reserved.
    for (let i = 0; i < 3; i++) t.is((await api(r, 'POST', '/devices', { name: `d${i}`, path: join(root, `d${i}.img`), createBytes: 16 * MiB })).status, 201);
    const notYet = await api(r, 'POST', '/volumes', { name: 'v1', sizeBytes: 4 * MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' });
    t.is(notYet.status, 503);
    t.is(notYet.json?.error?.code, ErrorCode.NotInitialized);
    t.deepEqual((await api(r, 'GET', '/volumes')).json, { volumes: [] });
    t.deepEqual((await api(r, 'GET', '/devices/d0')).json?.strips, []);

    // The CLI says the same, with the stable code and exit 2 for a bad argument.
    await refused(t, r, ['volume', 'create', 'v1', '--size', '4M', '--devices', 'd0,d1', '--coi', 'red'], ErrorCode.InvalidArgument, 2);
    await refused(t, r, ['volume', 'create', 'v1', '--size', '4M', '--devices', 'd0,d1,d2', '--coi', 'red'], ErrorCode.NotInitialized);
    await refused(t, r, ['volume', 'write', 'v1'], ErrorCode.InvalidArgument, 2);
    t.is(await ok(t, r, ['device', 'remove', 'd2']), 'device d2 removed\n');
    t.is((await ok(t, r, ['device', 'list'])).trim().split('\n').length, 2);

    // STRIPVAULT_API alone selects the API too (this worker process only; restored after).
    const saved = process.env.STRIPVAULT_API;
    process.env.STRIPVAULT_API = r.apiUrl;
    try {
      const run = await runCli(['--data', r.data, 'device', 'list', '--json']);
      t.is(run.code, 0, run.stderr);
      const listed = JSON.parse(run.stdout) as Array<Record<string, unknown>>;
      t.deepEqual(
        listed.map((d) => d.name),
        ['d0', 'd1'],
      );
      t.deepEqual(Object.keys(listed[0]!), ['id', 'name', 'kind', 'path', 'sizeBytes', 'state', 'createdAt']);
    } finally {
      if (saved === undefined) delete process.env.STRIPVAULT_API;
      else process.env.STRIPVAULT_API = saved;
    }
  });
});
