/**
 * The CLI as a person uses it: the real bin/stripvault.js in a child process, a temporary data
 * directory, devices and a volume, bytes copied in and out, and bad input refused with a message
 * and a non-zero exit.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withTempDir } from '../helpers/volumes.ts';

const bin = fileURLToPath(new URL('../../bin/stripvault.js', import.meta.url));

interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function cli(dataDir: string, args: string[], input?: Buffer): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, '--data', dataDir, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    // Killed by a signal: -1, with the signal in stderr so a failure says what happened.
    child.on('close', (code, signal) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: signal ? `${err}\n[killed by ${signal}]` : err }));
    child.stdin.end(input);
  });
}

async function* walk(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else yield p;
  }
}

test('devices, a volume, bytes in and out; nothing in plain text on disk or in the store', async (t) => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    for (const i of [0, 1, 2]) {
      const r = await cli(data, ['device', 'add', `d${i}`, join(dir, `dev${i}.img`), '--create', '64M']);
      t.is(r.code, 0, r.stderr);
      t.regex(r.stderr, /DEV UNSEAL/);
    }
    let r = await cli(data, ['device', 'list', '--json']);
    t.is(r.code, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout.toString()).map((d: { name: string }) => d.name).sort(), ['d0', 'd1', 'd2']);

    r = await cli(data, ['volume', 'create', 'vol1', '--size', '16M', '--devices', 'd0,d1,d2', '--m', '2']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout.toString(), /2-of-3/);

    const canary = Buffer.from('CLI-PLAINTEXT-CANARY-0123456789');
    const payload = Buffer.concat([randomBytes(3 * 1024 * 1024 + 17), Buffer.alloc(64 * 1024, canary)]);
    r = await cli(data, ['volume', 'write', 'vol1', '--offset', '4096'], payload);
    t.is(r.code, 0, r.stderr);
    r = await cli(data, ['volume', 'read', 'vol1', '--offset', '4096', '--length', String(payload.length)]);
    t.is(r.code, 0, r.stderr);
    t.is(createHash('sha256').update(r.stdout).digest('hex'), createHash('sha256').update(payload).digest('hex'));

    r = await cli(data, ['volume', 'show', 'vol1', '--json']);
    t.is(r.code, 0, r.stderr);
    const shown = JSON.parse(r.stdout.toString());
    t.is(shown.health.state, 'healthy');
    t.is(shown.strips.length, 3);

    // Every byte stripvault wrote: device files, the embedded store, the OWL, the audit log. The dev unseal share is
    // the one deliberate exception (it is the loudly announced dev key) and holds no data.
    let files = 0;
    for await (const p of walk(dir)) {
      if (p.endsWith('dev-unseal.share')) continue;
      const bytes = await readFile(p);
      files++;
      t.is(bytes.indexOf(canary.subarray(0, 16)), -1, `${p} holds plaintext`);
    }
    t.true(files > 4);

    // One device file gone: still readable, and `volume show` says degraded.
    await writeFile(join(dir, 'dev1.img'), '');
    r = await cli(data, ['volume', 'read', 'vol1', '--offset', '4096', '--length', String(payload.length)]);
    t.is(r.code, 0, r.stderr);
    t.true(r.stdout.equals(payload));
    r = await cli(data, ['volume', 'show', 'vol1']);
    t.regex(r.stdout.toString(), /health: degraded/);
    t.regex(r.stdout.toString(), /strip 1: missing/);
    // A scrub with a strip gone checks and repairs what it can reach; nothing is lost.
    r = await cli(data, ['volume', 'scrub', 'vol1', '--rate', '1G']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout.toString(), /scrubbed: 4096 blocks, 0 repaired, 0 lost/);
    t.regex(r.stderr, /4096\/4096 blocks/);

    // Rebuild the lost strip on a new device; then the volume survives losing another one.
    r = await cli(data, ['device', 'add', 'd3', join(dir, 'dev3.img'), '--create', '64M']);
    t.is(r.code, 0, r.stderr);
    r = await cli(data, ['volume', 'rebuild', 'vol1', '--strip', '1', '--device', 'd3']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout.toString(), /strips 1 caught up/);
    r = await cli(data, ['volume', 'show', 'vol1']);
    t.regex(r.stdout.toString(), /health: healthy/);
    await writeFile(join(dir, 'dev0.img'), '');
    r = await cli(data, ['volume', 'read', 'vol1', '--offset', '4096', '--length', String(payload.length)]);
    t.is(r.code, 0, r.stderr);
    t.true(r.stdout.equals(payload));
    t.is((await cli(data, ['device', 'add', 'd4', join(dir, 'dev4.img'), '--create', '64M'])).code, 0);
    r = await cli(data, ['volume', 'rebuild', 'vol1', '--strip', '2', '--device', 'd4']);
    t.not(r.code, 0);
    t.regex(r.stderr, /in service/);
    // ... and nothing moved in the store
    const shown2 = JSON.parse((await cli(data, ['volume', 'show', 'vol1', '--json'])).stdout.toString());
    t.is(shown2.strips[2].state, 'healthy');
    t.deepEqual(JSON.parse((await cli(data, ['device', 'show', 'd4', '--json'])).stdout.toString()).strips, []);
  });
});

test('bad input: a clear message and a non-zero exit, never a crash', async (t) => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    const cases: Array<[string[], RegExp, number]> = [
      [['frobnicate'], /unknown command/, 2],
      [['volume', 'create', 'v', '--size', 'lots', '--devices', 'a,b,c'], /SV_INVALID_ARGUMENT/, 2],
      [['volume', 'create', 'v', '--size', '1M', '--devices', 'a,b'], /give --m explicitly/, 2],
      [['volume', 'create', 'v', '--size', '1M', '--devices', 'nope1,nope2', '--m', '1'], /SV_STORE_NOT_FOUND/, 1],
      [['volume', 'read', 'nosuch'], /SV_STORE_NOT_FOUND/, 1],
      [['device', 'add', 'x', join(dir, 'missing.img')], /SV_DEVICE_NOT_FOUND/, 1],
      [['device', 'add', 'x', dir], /SV_DEVICE_UNSUPPORTED/, 1],
      [['--bogus-flag'], /Unknown option/, 2],
    ];
    for (const [args, pattern, code] of cases) {
      const r = await cli(data, args);
      t.is(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      t.regex(r.stderr, pattern, args.join(' '));
      t.notRegex(r.stderr, /internal error/);
    }
    for (const i of [0, 1]) t.is((await cli(data, ['device', 'add', `d${i}`, join(dir, `d${i}.img`), '--create', '8M'])).code, 0);
    let r = await cli(data, ['volume', 'create', 'v', '--size', '1M', '--devices', 'd0,d1', '--m', '3']);
    t.is(r.code, 2);
    t.regex(r.stderr, /SV_INVALID_GEOMETRY/);
    // a size that is not a whole number of blocks: refused before the store records anything
    r = await cli(data, ['volume', 'create', 'v', '--size', '5000', '--devices', 'd0,d1', '--m', '1']);
    t.is(r.code, 2);
    t.regex(r.stderr, /SV_INVALID_ARGUMENT/);
    t.deepEqual(JSON.parse((await cli(data, ['volume', 'list', '--json'])).stdout.toString()), []);
    r = await cli(data, ['volume', 'create', 'v', '--size', '1G', '--devices', 'd0,d1', '--m', '1']);
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_DEVICE_TOO_SMALL/);
    t.is((await cli(data, ['volume', 'create', 'v', '--size', '1M', '--devices', 'd0,d1', '--m', '1'])).code, 0);
    r = await cli(data, ['volume', 'read', 'v', '--offset', '1M', '--length', '1']);
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_OUT_OF_RANGE/);
    t.is(r.stdout.length, 0);
    r = await cli(data, ['volume', 'write', 'v', '--offset', String(1024 * 1024 - 10)], Buffer.alloc(11));
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_OUT_OF_RANGE/);
    r = await cli(data, ['volume', 'create', 'v', '--size', '1M', '--devices', 'd0,d1', '--m', '1']);
    t.is(r.code, 1);
    t.regex(r.stderr, /SV_STORE_CONFLICT/);
    // files that cannot be read or written: a message, not a crash
    r = await cli(data, ['volume', 'write', 'v', '--input', join(dir, 'no-such-input')]);
    t.is(r.code, 2);
    t.regex(r.stderr, /cannot read input .*ENOENT/);
    r = await cli(data, ['volume', 'read', 'v', '--length', '4096', '--output', join(dir, 'no', 'such', 'dir', 'out')]);
    t.is(r.code, 2);
    t.regex(r.stderr, /cannot write output .*ENOENT/);
    t.notRegex(r.stderr, /internal error/);
    t.true((await stat(join(data, 'dev-unseal.share'))).mode % 0o1000 === 0o600);
  });
});
