/**
 * `stripvault serve` on an empty data directory, used by real NBD clients the way an application
 * owner would: nbdinfo, qemu-img, qemu-io, nbdcopy (also multi-connection), fio with verification;
 * SIGTERM flushes and a restart serves the same bytes.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MiB, tool, toolOk } from '../nbd/helpers.ts';
import { withTempDir } from '../helpers/volumes.ts';
import { missingServeNodeFlags, serveNodeFlags } from '../../cli/node-flags.ts';

const bin = fileURLToPath(new URL('../../bin/stripvault.js', import.meta.url));
const startMs = 60_000;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface Running {
  child: ChildProcess;
  log: () => string;
  stop(): Promise<number | null>;
}

async function startServe(dataDir: string, nbd: string, nodeArgs: readonly string[] = []): Promise<Running> {
  const child = spawn(process.execPath, [...nodeArgs, bin, 'serve', '--data', dataDir, '--nbd', nbd, '--api-listen', 'off'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const deadline = Date.now() + startMs;
  while (!log.includes('"event":"serving"')) {
    if (child.exitCode !== null) throw new Error(`serve exited early (${child.exitCode}):\n${log}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`serve did not start within ${startMs} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('serve: the embedded default with nbdinfo, qemu-img, qemu-io, nbdcopy and fio; restart keeps data', async (t) => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    const port = await freePort();
    const url = `nbd://127.0.0.1:${port}/default`;
    let server = await startServe(data, `127.0.0.1:${port}`);
    t.teardown(() => void server.child.kill('SIGKILL'));
    t.regex(server.log(), /DEV UNSEAL/);
    // Started as a bare `node bin/stripvault.js serve`: the administrator is told what npm start adds.
    t.regex(server.log(), /"event":"node_flags.missing".*--max-semi-space-size=64/);
    try {
      // What the server offers.
      const list = JSON.parse(await toolOk(t, 'nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`])) as { exports: Array<Record<string, unknown>> };
      t.deepEqual(list.exports.map((e) => e['export-name']), ['default']);
      const info = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', url])) as { exports: Array<Record<string, unknown>> };
      const e = info.exports[0]!;
      t.is(e['export-size'], 1024 ** 3);
      t.is(e['can_multi_conn'], true);
      t.is(e['can_flush'], true);
      t.is(e['can_fua'], true);
      t.is(e['can_trim'], true);
      t.is(e['can_zero'], true);
      t.is(e['is_read_only'], false);
      t.is(e['block_size_preferred'], 4096);
      t.deepEqual(e['contexts'], ['base:allocation']);
      t.regex(await toolOk(t, 'qemu-img', ['info', url]), /virtual size: 1 GiB/);

      // qemu-io: pattern writes and reads at odd offsets and lengths.
      const io = (cmd: string) => toolOk(t, 'qemu-io', ['-f', 'raw', '-c', cmd, url]);
      await io('write -P 0xab 1000 4567');
      await io('write -P 0x5c 1048575 3');
      await io('read -P 0xab 1000 4567');
      await io('read -P 0x5c 1048575 3');
      await io('read -P 0x00 5567 100');
      const wrong = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0xcd 1000 4567', url]);
      t.regex(wrong.stdout + wrong.stderr, /Pattern verification failed/);

      // qemu-img convert: a qcow2 disk image in, raw out, identical content.
      const qcow = join(dir, 'in.qcow2');
      await toolOk(t, 'qemu-img', ['create', '-f', 'qcow2', qcow, '64M']);
      await toolOk(t, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x22 40M 1M', '-c', 'write -P 0x33 7777 333', qcow]);
      await toolOk(t, 'qemu-img', ['convert', '-n', '-f', 'qcow2', '-O', 'raw', qcow, url], 120_000);
      const outRaw = join(dir, 'out.raw');
      await toolOk(t, 'qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url, outRaw], 180_000);
      await toolOk(t, 'qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', qcow, outRaw]);

      // nbdcopy: 256 MiB of random data in and out, then again over 4 connections.
      const src = join(dir, 'rand.img');
      const payload = randomBytes(256 * MiB);
      await writeFile(src, payload);
      await toolOk(t, 'nbdcopy', [src, url], 180_000);
      const back = join(dir, 'back.img');
      await toolOk(t, 'nbdcopy', [url, back], 180_000);
      t.is(sha((await readFile(back)).subarray(0, payload.length)), sha(payload));
      const payload2 = randomBytes(256 * MiB);
      await writeFile(src, payload2);
      await toolOk(t, 'nbdcopy', ['--connections=4', '--threads=4', src, url], 180_000);
      await toolOk(t, 'nbdcopy', ['--connections=4', '--threads=4', url, back], 180_000);
      t.is(sha((await readFile(back)).subarray(0, payload2.length)), sha(payload2));

      // fio's nbd engine, mixed block sizes, every read verified.
      await toolOk(
        t,
        'fio',
        [
          '--name=mixed',
          '--ioengine=nbd',
          `--uri=${url}`,
          '--rw=randwrite',
          '--bsrange=512-64k',
          '--offset=512m',
          '--size=32m',
          '--iodepth=16',
          '--verify=crc32c',
          '--do_verify=1',
          '--verify_state_save=0',
          '--output-format=json',
          `--output=${join(dir, 'fio.json')}`,
        ],
        180_000,
        dir,
      );
      const fio = JSON.parse(await readFile(join(dir, 'fio.json'), 'utf8')) as { jobs: Array<{ error: number; read: { io_bytes: number } }> };
      t.is(fio.jobs[0]!.error, 0);
      t.true(fio.jobs[0]!.read.io_bytes > 0);
    } finally {
      t.is(await server.stop(), 0, server.log());
    }
    t.regex(server.log(), /"event":"stopped"/);

    // Restart on the same directory: the same bytes, nothing re-created. With serve's node flags, as
    // npm start runs it: no warning about them.
    server = await startServe(data, `unix:${join(dir, 'nbd.sock')}`, serveNodeFlags);
    try {
      t.notRegex(server.log(), /embedded_default.created/);
      t.notRegex(server.log(), /node_flags/);
      const back = join(dir, 'back2.img');
      await toolOk(t, 'nbdcopy', [`nbd+unix:///default?socket=${join(dir, 'nbd.sock')}`, back], 180_000);
      const bytes = await readFile(back);
      const payload2 = await readFile(join(dir, 'rand.img'));
      t.is(sha(bytes.subarray(0, payload2.length)), sha(payload2));
    } finally {
      t.is(await server.stop(), 0, server.log());
    }
  });
});

test('serve node flags: npm start and the bin pass them, and serve knows when they are missing', async (t) => {
  const pkg = JSON.parse(await readFile(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { scripts: { start: string } };
  const shebang = (await readFile(bin, 'utf8')).split('\n')[0]!;
  for (const f of serveNodeFlags) {
    t.true(pkg.scripts.start.split(' ').includes(f), `npm start passes ${f}`);
    t.true(shebang.split(' ').includes(f), `the bin's #! line passes ${f}`);
  }
  t.true(shebang.startsWith('#!/usr/bin/env -S node '), 'env -S splits the #! line into node and its flags');
  t.deepEqual(missingServeNodeFlags([], ''), [...serveNodeFlags]);
  t.deepEqual(missingServeNodeFlags([...serveNodeFlags], ''), []);
  t.deepEqual(missingServeNodeFlags([], `--no-warnings ${serveNodeFlags.join(' ')}`), [], 'NODE_OPTIONS counts');
  t.deepEqual(missingServeNodeFlags(['--max_semi_space_size=32'], ''), [], 'another value, underscores: chosen by someone, left alone');
  t.deepEqual(missingServeNodeFlags(['--max-old-space-size=64', '--import', 'tsx'], 'semi-space'), [...serveNodeFlags], 'other flags are not it');
});

test('serve refuses bad --nbd and --api-listen values', async (t) => {
  await withTempDir(async (dir) => {
    for (const [flag, value] of [
      ['--nbd', 'nonsense'],
      ['--nbd', '127.0.0.1:99999'],
      ['--nbd', 'unix:'],
      ['--api-listen', 'unix:/tmp/x'],
      ['--api-listen', '0.0.0.0:0'],
    ] as const) {
      const nbd = `${flag} ${value}`;
      const args = flag === '--nbd' ? ['--nbd', value, '--api-listen', 'off'] : ['--nbd', 'unix:' + join(dir, 'sock'), flag, value];
      const child = spawn(process.execPath, [bin, 'serve', '--data', join(dir, 'd'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      t.not(code, 0, nbd);
      t.regex(err, /SV_INVALID_ARGUMENT/, nbd);
    }
  });
});
