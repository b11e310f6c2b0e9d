/**
 * Interoperability with the clients people actually use: libnbd's nbdinfo and
 * nbdcopy, qemu-io and qemu-img, and fio's nbd engine. A missing tool fails
 * the test with the package to install.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import test from 'ava';
import { connectNbd } from '../../appliance/nbd/client.ts';
import { MiB, memory, sameBytes, serve, tempDir, tool, toolOk, uri, wrapExport } from './helpers.ts';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

for (const transport of ['tcp', 'unix'] as const) {
  test(`${transport}: nbdinfo --list and --json report size, flags, block sizes and base:allocation`, async (t) => {
    const disk = memory('disk', 64 * MiB, { description: 'stripvault test disk', blockSizeMin: 512, blockSizePreferred: 4096 });
    const ro = memory('ro', 1 * MiB, { readOnly: true, multiConn: false });
    await disk.write(1 * MiB, Buffer.alloc(2 * MiB, 0xab), { fua: false });
    const { address } = await serve(t, [disk, ro], { unix: transport === 'unix' });

    const list = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', '--list', uri(address, '')])) as {
      exports: Array<Record<string, unknown>>;
      structured: boolean;
    };
    t.true(list.structured);
    t.deepEqual(
      list.exports.map((e) => [e['export-name'], e['description'], e['export-size']]),
      [
        ['disk', 'stripvault test disk', 64 * MiB],
        ['ro', undefined, 1 * MiB],
      ],
    );

    const info = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', uri(address, 'disk')])) as { exports: Array<Record<string, unknown>> };
    t.like(info.exports[0], {
      'export-name': 'disk',
      'export-size': 64 * MiB,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_cache: true,
      can_df: true,
      can_multi_conn: true,
      block_size_minimum: 512,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
      contexts: ['base:allocation'],
    });
    const roInfo = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', uri(address, 'ro')])) as { exports: Array<Record<string, unknown>> };
    t.like(roInfo.exports[0], { is_read_only: true, can_trim: false, can_zero: false, can_multi_conn: false });

    const map = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', '--map', uri(address, 'disk')])) as Array<{ offset: number; length: number; type: number }>;
    t.deepEqual(
      map.map(({ offset, length, type }) => ({ offset, length, type })),
      [
        { offset: 0, length: 1 * MiB, type: 3 },
        { offset: 1 * MiB, length: 2 * MiB, type: 0 },
        { offset: 3 * MiB, length: 61 * MiB, type: 3 },
      ],
    );
    const missing = await tool('nbdinfo', [uri(address, 'nope')]);
    t.not(missing.code, 0);
  });

  test(`${transport}: qemu-io pattern writes and reads at odd offsets and lengths`, async (t) => {
    const disk = memory('disk', 16 * MiB);
    const { address } = await serve(t, [disk], { unix: transport === 'unix' });
    const u = uri(address, 'disk');
    const run = (...commands: string[]): Promise<string> => toolOk(t, 'qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), u]);
    const out = await run('write -P 0xab 1000 4567', 'read -P 0xab 1000 4567', 'read -P 0 0 1000', 'read -P 0 5567 1000', 'write -P 0x5c 8388607 12345', 'flush');
    t.notRegex(out, /fail|error/i);
    t.regex(out, /wrote 4567\/4567 bytes at offset 1000/);
    t.regex(out, /read 4567\/4567 bytes at offset 1000/);
    // the check must be able to fail: a wrong pattern is reported
    const wrong = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0xac 1000 4567', u]);
    t.not(wrong.code, 0);
    t.regex(wrong.stdout, /Pattern verification failed/);
    // and our own client sees exactly the bytes qemu wrote, no more
    const c = await connectNbd(address, 'disk');
    const b = await c.read(999, 4569);
    t.is(b[0], 0);
    t.true(b.subarray(1, 4568).every((x) => x === 0xab));
    t.is(b[4568], 0);
    const e = await c.read(8388606, 12347);
    t.deepEqual([e[0], e[1], e[12345], e[12346]], [0, 0x5c, 0x5c, 0]);
    await c.close();
  });
}

test('qemu-img convert a raw image into an export and back out, byte for byte', async (t) => {
  const dir = await tempDir(t);
  const size = 6 * MiB;
  const image = Buffer.alloc(size);
  randomBytes(1 * MiB).copy(image, 0);
  randomBytes(100_000).copy(image, 3 * MiB + 777);
  const input = path.join(dir, 'in.img');
  const output = path.join(dir, 'out.img');
  await writeFile(input, image);
  const disk = memory('img', size);
  const { address } = await serve(t, [disk]);
  await toolOk(t, 'qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', input, uri(address, 'img')]);
  sameBytes(t, await disk.read(0, size), image, 'export after convert in');
  await toolOk(t, 'qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(address, 'img'), output]);
  sameBytes(t, await readFile(output), image, 'image after convert out');
  const info = JSON.parse(await toolOk(t, 'qemu-img', ['info', '--output=json', '-f', 'raw', uri(address, 'img')])) as { 'virtual-size': number };
  t.is(info['virtual-size'], size);
});

test('nbdcopy 32 MiB of random data in and out, with 1 and 4 connections', async (t) => {
  const dir = await tempDir(t);
  const size = 32 * MiB;
  const data = randomBytes(size);
  const input = path.join(dir, 'in.bin');
  await writeFile(input, data);
  const a = memory('a', size);
  const b = memory('b', size);
  const tcp = await serve(t, [a, b]);
  const unix = await serve(t, [a, b], { unix: true });

  await toolOk(t, 'nbdcopy', [input, uri(tcp.address, 'a')], 60_000);
  // nbdcopy caps connections at its thread count, which defaults to the (2) cores here
  await toolOk(t, 'nbdcopy', ['--connections=4', '--threads=4', input, uri(tcp.address, 'b')], 60_000);
  const outA = path.join(dir, 'a.bin');
  const outB = path.join(dir, 'b.bin');
  await toolOk(t, 'nbdcopy', ['--connections=4', '--threads=4', uri(unix.address, 'a'), outA], 60_000);
  await toolOk(t, 'nbdcopy', [uri(unix.address, 'b'), outB], 60_000);
  const want = sha256(data);
  t.is(sha256(await readFile(outA)), want);
  t.is(sha256(await readFile(outB)), want);
  // multi-conn was advertised, so nbdcopy really used 4 connections
  const opened = (events: typeof tcp.events, name: string): number => events.filter((e) => e.event === 'transmission-start' && e.export === name).length;
  t.true(opened(tcp.events, 'b') >= 4, `connections to b: ${opened(tcp.events, 'b')}`);
  t.true(opened(unix.events, 'a') >= 4, `connections to a: ${opened(unix.events, 'a')}`);
});

test('fio (ioengine=nbd) randrw with crc32c verification', async (t) => {
  const dir = await tempDir(t);
  const disk = memory('disk', 16 * MiB);
  // flips one bit of every nonzero read: proves fio's verification can fail here
  const honest = memory('liar', 16 * MiB);
  const liar = wrapExport(honest, {
    read: async (offset, length) => {
      const b = await honest.read(offset, length);
      if (b.some((x) => x !== 0)) b[length - 1] = (b[length - 1] ?? 0) ^ 1;
      return b;
    },
  });
  const { address } = await serve(t, [disk, liar]);
  const job = (name: string): string[] => [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${uri(address, name)}`,
    '--rw=randrw',
    '--bs=4k',
    '--size=8m',
    '--iodepth=16',
    '--verify=crc32c',
    '--runtime=20',
    // fio drops verify state files into its working directory; keep them out of the checkout
    '--verify_state_save=0',
    '--output-format=json',
    `--output=${path.join(dir, `${name}.json`)}`,
  ];
  await toolOk(t, 'fio', job('disk'), 60_000, dir);
  const report = JSON.parse(await readFile(path.join(dir, 'disk.json'), 'utf8')) as {
    jobs: Array<{ error: number; read: { io_bytes: number }; write: { io_bytes: number } }>;
  };
  const j = report.jobs[0];
  t.is(j?.error, 0);
  t.true((j?.read.io_bytes ?? 0) > 0);
  t.true((j?.write.io_bytes ?? 0) > 0);
  const bad = await tool('fio', job('liar'), 60_000, dir);
  t.not(bad.code, 0);
  t.regex(bad.stderr + bad.stdout, /verify|crc32c/i);
});
