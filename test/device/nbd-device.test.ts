/**
 * The remote NBD device against real servers this file starts on loopback: nbdkit (memory, file,
 * and filters that impose block sizes, inject errors or drop flush) and qemu-nbd on a raw file.
 * Both programs are required; a missing one fails the tests with the package to install.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { ioBytesMax } from '../../appliance/device/io-range.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { NbdDevice, openNbdDevice } from '../../appliance/device/nbd-device.ts';
import { openDevice } from '../../appliance/device/open-device.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { connectNbd } from '../../appliance/nbd/client.ts';
import type { NbdAddress } from '../../appliance/nbd/server.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';
import { assertBytes, contractSizeBytesMin, expectCode, registerDeviceContract } from './device-contract.ts';

const MiB = 1024 * 1024;
/** How long a freshly spawned server gets to accept an NBD handshake. */
const serverStartMsMax = 5_000;
const serverPollMs = 20;
/** Port races (another process took the free port first) are retried this many times. */
const serverStartAttempts = 3;
const exportName = 'strip';

let dir = '';
let counter = 0;
const servers = new Set<Server>();
const freshPath = (suffix: string) => join(dir, `nbd-${++counter}.${suffix}`);

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sv-nbd-device-'));
});
test.after.always(async () => {
  await Promise.all([...servers].map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
});

class Server {
  readonly child: ChildProcess;
  readonly uri: string;
  readonly #exited: Promise<void>;

  constructor(child: ChildProcess, uri: string) {
    this.child = child;
    this.uri = uri;
    this.#exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGCONT');
      this.child.kill('SIGKILL');
    }
    await this.#exited;
    servers.delete(this);
  }
}

const installHint: Record<string, string> = { nbdkit: 'apt-get install nbdkit', 'qemu-nbd': 'apt-get install qemu-utils' };

async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** Spawns a server and waits until it completes an NBD handshake; fails loudly with its stderr. */
async function spawnServer(program: string, args: string[], address: NbdAddress, uri: string): Promise<Server> {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const server = new Server(child, uri);
  servers.add(server);
  const deadline = performance.now() + serverStartMsMax;
  for (;;) {
    const outcome = await Promise.race([
      spawnError,
      connectNbd(address, exportName, { connectTimeoutMs: serverStartMsMax }).then(
        async (c) => {
          await c.close();
          return 'up' as const;
        },
        () => 'down' as const,
      ),
    ]);
    if (outcome === 'up') return server;
    if (outcome instanceof Error) {
      servers.delete(server);
      const hint = (outcome as NodeJS.ErrnoException).code === 'ENOENT' ? ` (not installed? ${installHint[program] ?? ''})` : '';
      throw new Error(`cannot run ${program}${hint}: ${outcome.message}`);
    }
    if (child.exitCode !== null || performance.now() > deadline) {
      await server.stop();
      throw new Error(`${program} ${args.join(' ')} did not start: exit ${child.exitCode}, stderr: ${stderr.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, serverPollMs));
  }
}

async function withPortRetries(start: (port: number) => Promise<Server>): Promise<Server> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePort());
    } catch (e) {
      if (attempt >= serverStartAttempts || !/in use/i.test(String(e))) throw e;
    }
  }
}

/** nbdkit on 127.0.0.1, e.g. nbdkit(['memory', '1M']). */
function nbdkit(pluginArgs: string[], filters: string[] = []): Promise<Server> {
  return withPortRetries((port) =>
    spawnServer(
      'nbdkit',
      ['--exit-with-parent', '-f', '-i', '127.0.0.1', '-p', String(port), ...filters.map((f) => `--filter=${f}`), ...pluginArgs],
      { host: '127.0.0.1', port },
      `nbd://127.0.0.1:${port}/${exportName}`,
    ),
  );
}

/** qemu-nbd on 127.0.0.1 exporting a raw file as `strip`. */
function qemuNbd(file: string): Promise<Server> {
  return withPortRetries((port) =>
    spawnServer(
      'qemu-nbd',
      ['-f', 'raw', '-x', exportName, '-b', '127.0.0.1', '-p', String(port), '-t', '-e', '8', file],
      { host: '127.0.0.1', port },
      `nbd://127.0.0.1:${port}/${exportName}`,
    ),
  );
}

async function zeroFile(bytes: number): Promise<string> {
  const path = freshPath('img');
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

/** Minimum 4 KiB and maximum 64 KiB, and the server answers EINVAL to anything else: only RMW and splitting get through. */
const strictBlockSizes = ['blocksize-error-policy=error', 'blocksize-minimum=4096', 'blocksize-preferred=4096', 'blocksize-maximum=65536'];

registerDeviceContract(test, 'nbd device on nbdkit memory', async () => {
  const server = await nbdkit(['memory', String(contractSizeBytesMin)]);
  return openNbdDevice(server.uri);
});

registerDeviceContract(test, 'nbd device on qemu-nbd over a raw file', async () => {
  const server = await qemuNbd(await zeroFile(contractSizeBytesMin));
  return openNbdDevice(server.uri);
});

registerDeviceContract(test, 'nbd device on nbdkit with a 4 KiB minimum and 64 KiB maximum block size', async () => {
  const server = await nbdkit(['memory', String(contractSizeBytesMin), ...strictBlockSizes], ['blocksize-policy']);
  const device = await openNbdDevice(server.uri);
  if (device.info.blockSizeMin !== 4096 || device.info.blockSizeMax !== 65536) {
    throw new Error(`blocksize-policy filter not in effect: ${device.info.blockSizeMin}/${device.info.blockSizeMax}`);
  }
  return device;
});

registerDeviceContract(test, 'nbd device on nbdkit over a Unix socket (nbd+unix)', async () => {
  const socket = freshPath('sock');
  const server = await spawnServer(
    'nbdkit',
    ['--exit-with-parent', '-f', '-U', socket, 'memory', String(contractSizeBytesMin)],
    { path: socket },
    `nbd+unix:///${exportName}?socket=${socket}`,
  );
  return openNbdDevice(server.uri);
});

async function withDevice(device: StorageDevice, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } finally {
    await device.close();
  }
}

test.serial('bytes written through the device are in the exported file (qemu-nbd and nbdkit file)', async (t) => {
  for (const start of [(f: string) => qemuNbd(f), (f: string) => nbdkit(['file', f])]) {
    const file = await zeroFile(4 * MiB);
    const server = await start(file);
    const device = await openNbdDevice(server.uri, { id: 'remote-1' });
    const payload = new Prng(21).bytes(1_000_003);
    await withDevice(device, async () => {
      t.is(device.id, 'remote-1');
      t.is(device.sizeBytes, 4 * MiB);
      await device.write(77_777, payload);
      await device.flush();
    });
    const onDisk = await readFile(file);
    assertBytes(t, onDisk.subarray(77_777, 77_777 + payload.length), payload, `${server.child.spawnfile}: payload in the file`);
    t.true(onDisk.subarray(0, 77_777).equals(Buffer.alloc(77_777)), 'bytes before it untouched');
    await server.stop();
  }
});

test.serial('the largest request a device accepts is split and reassembled', async (t) => {
  const server = await nbdkit(['memory', String(64 * MiB)]);
  const device = await openNbdDevice(server.uri);
  await withDevice(device, async () => {
    const payload = new Prng(5).bytes(ioBytesMax);
    await device.write(3, payload);
    assertBytes(t, await device.read(3, ioBytesMax), payload, '32 MiB round trip at an odd offset');
  });
  await server.stop();
});

test.serial('unaligned writes sharing a 4 KiB block concurrently lose no update (read-modify-write)', async (t) => {
  const server = await nbdkit(['memory', String(MiB), ...strictBlockSizes], ['blocksize-policy']);
  // The server really refuses what the device must never send.
  const raw = await connectNbd({ host: '127.0.0.1', port: Number(new URL(server.uri).port) }, exportName);
  t.is(raw.info.blockSizeMin, 4096);
  await t.throwsAsync(raw.write(100, Buffer.alloc(4096)), { code: ErrorCode.InvalidArgument }, 'client refuses unaligned');
  await raw.close();

  const device = await openNbdDevice(server.uri);
  await withDevice(device, async () => {
    const prng = new Prng(9);
    const base = 8192;
    const pieces = Array.from({ length: 64 }, (_, i) => ({ offset: base + i * 64 + (i % 3), data: prng.bytes(61) }));
    // An aligned whole-block write to a neighbouring block runs among them too.
    const neighbour = prng.bytes(4096);
    await Promise.all([...pieces.map((p) => device.write(p.offset, p.data)), device.write(base + 4096, neighbour)]);
    const back = await device.read(base, 8192);
    for (const p of pieces) assertBytes(t, back.subarray(p.offset - base, p.offset - base + p.data.length), p.data, `piece at ${p.offset}`);
    assertBytes(t, back.subarray(4096), neighbour, 'neighbouring block');
    // A write spanning several blocks with both edges unaligned.
    const span = prng.bytes(3 * 4096 + 7);
    await device.write(base + 4000, span);
    assertBytes(t, await device.read(base + 4000, span.length), span, 'multi-block unaligned write');
    assertBytes(t, (await device.read(base, 4000)), back.subarray(0, 4000), 'head edge preserved');
  });
  await server.stop();
});

test.serial('a server killed mid-run makes the device GONE, without hanging', async (t) => {
  const server = await nbdkit(['memory', String(64 * MiB)]);
  const device = await openNbdDevice(server.uri);
  const prng = new Prng(13);
  const writes = Array.from({ length: 48 }, (_, i) => device.write(i * MiB, prng.bytes(MiB)));
  await writes[0];
  server.child.kill('SIGKILL');
  const settled = await Promise.allSettled(writes);
  for (const s of settled) {
    if (s.status === 'rejected') t.is((s.reason as { code?: string }).code, ErrorCode.DeviceGone, String(s.reason));
  }
  t.log(`${settled.filter((s) => s.status === 'rejected').length} of ${writes.length} writes in flight failed GONE`);
  const gone = await expectCode(t, () => device.read(0, 4096), ErrorCode.DeviceGone);
  t.regex(gone.message, /disappeared/);
  await expectCode(t, () => device.flush(), ErrorCode.DeviceGone);
  await device.close();
  await device.close();
  await expectCode(t, () => device.read(0, 1), ErrorCode.DeviceClosed);
  await server.stop();
});

/** Waits (bounded) until /proc says the process is stopped (state T). */
async function waitStopped(pid: number): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not stop: ${stat}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test.serial('a server that stops answering is declared GONE by the stall watchdog', async (t) => {
  const server = await nbdkit(['memory', String(MiB)]);
  const device = await openNbdDevice(server.uri, { stallTimeoutMs: 300 });
  try {
    await device.write(0, Buffer.from('before the stall'));
    server.child.kill('SIGSTOP');
    // Signals are delivered asynchronously: a read sent before the stop lands could still be answered.
    await waitStopped(server.child.pid!);
    const error = await expectCode(t, () => device.read(0, 4096), ErrorCode.DeviceGone);
    t.is(error.detail?.['errno'], 'ETIMEDOUT');
    await expectCode(t, () => device.write(0, Buffer.from('x')), ErrorCode.DeviceGone);
  } finally {
    await device.close();
    await server.stop();
  }
});

test.serial('server errors are SV_DEVICE_IO with the errno; the device stays usable; ESHUTDOWN means GONE', async (t) => {
  const writeTrigger = freshPath('trigger');
  const readTrigger = freshPath('trigger');
  const server = await nbdkit(
    [
      'memory',
      String(MiB),
      'error-pwrite=EIO',
      'error-pwrite-rate=100%',
      `error-pwrite-file=${writeTrigger}`,
      'error-pread=ESHUTDOWN',
      'error-pread-rate=100%',
      `error-pread-file=${readTrigger}`,
    ],
    ['error'],
  );
  const device = await openNbdDevice(server.uri);
  await withDevice(device, async () => {
    await writeFile(writeTrigger, '');
    const error = await expectCode(t, () => device.write(4096, Buffer.from('refused')), ErrorCode.DeviceIo);
    t.is(error.detail?.['errno'], 'EIO');
    t.is(error.detail?.['op'], 'write');
    t.is(error.detail?.['offset'], 4096);
    await unlink(writeTrigger);
    await device.write(4096, Buffer.from('accepted'));
    t.is((await device.read(4096, 8)).toString(), 'accepted');

    await writeFile(readTrigger, '');
    const shutdown = await expectCode(t, () => device.read(0, 10), ErrorCode.DeviceGone);
    t.is(shutdown.detail?.['errno'], 'ESHUTDOWN');
    await unlink(readTrigger);
    await expectCode(t, () => device.read(0, 10), ErrorCode.DeviceGone);
  });
  await server.stop();
});

test.serial('a server without flush makes flush() fail closed; reads and writes still work', async (t) => {
  const server = await nbdkit(['eval', `get_size=echo ${MiB}`, 'pread=head -c $3 /dev/zero', 'pwrite=cat >/dev/null']);
  const device = await openNbdDevice(server.uri);
  await withDevice(device, async () => {
    t.false(device.info.canFlush);
    const error = await expectCode(t, () => device.flush(), ErrorCode.DeviceIo);
    t.regex(error.message, /server cannot flush/);
    t.is(error.detail?.['errno'], 'ENOTSUP');
    await device.write(10, Buffer.from('discarded by this server'));
    t.deepEqual(await device.read(0, 64), Buffer.alloc(64));
  });
  await server.stop();
});

test.serial('close waits for requests in flight, then disconnects', async (t) => {
  const server = await nbdkit(['memory', String(16 * MiB)]);
  const device = await openNbdDevice(server.uri);
  const payload = new Prng(17).bytes(8 * MiB);
  const writing = device.write(MiB + 1, payload);
  await device.close();
  await t.notThrowsAsync(writing);
  const again = await openNbdDevice(server.uri);
  await withDevice(again, async () => assertBytes(t, await again.read(MiB + 1, payload.length), payload, 'the in-flight write landed'));
  await server.stop();
});

test.serial('opening refuses read-only exports, unknown exports, TLS URIs and dead servers clearly', async (t) => {
  const readOnly = await nbdkit(['-r', 'memory', String(MiB)]);
  const ro = await expectCode(t, () => openNbdDevice(readOnly.uri), ErrorCode.DeviceUnsupported);
  t.regex(ro.message, /read-only/);
  await readOnly.stop();

  const qemu = await qemuNbd(await zeroFile(MiB));
  const port = new URL(qemu.uri).port;
  const missing = await expectCode(t, () => openNbdDevice(`nbd://127.0.0.1:${port}/no-such-export`), ErrorCode.DeviceNotFound);
  t.regex(missing.message, /no export "no-such-export"/);
  await qemu.stop();

  const tls = await expectCode(t, () => openNbdDevice(`nbds://127.0.0.1:${port}/${exportName}`), ErrorCode.DeviceUnsupported);
  t.regex(tls.message, /TLS/);
  const deadPort = await freePort();
  const refused = await expectCode(t, () => openNbdDevice(`nbd://127.0.0.1:${deadPort}/${exportName}`), ErrorCode.DeviceIo);
  t.is(refused.detail?.['errno'], 'ECONNREFUSED');
  await expectCode(t, () => openNbdDevice('nbd+unix:///strip'), ErrorCode.InvalidArgument);
});

test.serial('openDevice dispatches NBD URIs to the NBD device', async (t) => {
  const server = await nbdkit(['memory', String(MiB)]);
  const device = await openDevice(server.uri, { id: 'dev-9' });
  await withDevice(device, async () => {
    t.true(device instanceof NbdDevice);
    t.is(device.kind, 'nbd');
    t.is(device.id, 'dev-9');
    t.is(device.sizeBytes, MiB);
  });
  await expectCode(t, () => openDevice('nbds+unix:///x?socket=/tmp/s'), ErrorCode.DeviceUnsupported);
  await server.stop();
});

test.serial('a 2-of-3 volume with two strips on NBD (nbdkit, qemu-nbd) survives close and reopen', async (t) => {
  const sizeBytes = 2 * MiB;
  const blockBytes = 4096;
  const stripBytes = stripBytesForVolume(sizeBytes, blockBytes, 2);
  const kit = await nbdkit(['memory', String(stripBytes)]);
  const qemuFile = await zeroFile(stripBytes);
  const qemu = await qemuNbd(qemuFile);
  const local = new MemoryDevice(stripBytes, { id: 'local' });
  const wrapper = testWrapper();
  const connect = async () => [local, await openNbdDevice(kit.uri, { id: 'kit' }), await openNbdDevice(qemu.uri, { id: 'qemu' })];

  const payload = randomBytes(sizeBytes - 12_345);
  let devices = await connect();
  const volume = await Volume.create({
    name: 'remote-mix',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
  });
  await volume.write(12_345, payload);
  await volume.close();
  for (const d of devices.slice(1)) await d.close();

  devices = await connect();
  const reopened = await Volume.open({ locations: devices.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: volume.id });
  try {
    t.is(reopened.health().state, 'healthy');
    assertBytes(t, await reopened.read(12_345, payload.length), payload, 'volume contents after reopen');
    t.true((await reopened.read(0, 12_345)).equals(Buffer.alloc(12_345)), 'never-written head reads zero');
  } finally {
    await reopened.close();
    for (const d of devices.slice(1)) await d.close();
  }
  // Without the local strip, the two remote shares alone must rebuild every block.
  devices = await connect();
  const remoteOnly = await Volume.open({
    locations: [null, ...devices.slice(1).map((device) => ({ device, base: 0 }))],
    wrappers: [wrapper],
    expectId: volume.id,
  });
  try {
    t.is(remoteOnly.health().state, 'degraded');
    assertBytes(t, await remoteOnly.read(12_345, payload.length), payload, 'volume contents from the NBD strips alone');
  } finally {
    await remoteOnly.close();
    for (const d of devices.slice(1)) await d.close();
  }
  // The share on qemu-nbd's file is not the plaintext.
  t.is((await readFile(qemuFile)).indexOf(payload.subarray(0, 64)), -1);
  await kit.stop();
  await qemu.stop();
});
