import test from 'ava';
import { constants } from 'node:fs';
import { mkdtemp, open, rm, stat, truncate, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileDevice, openFileDevice } from '../../appliance/device/file-device.ts';
import { HandleDevice } from '../../appliance/device/handle-device.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { assertBytes, contractSizeBytesMin, expectCode, registerDeviceContract } from './device-contract.ts';

let dir = '';
let counter = 0;
const freshPath = () => join(dir, `device-${++counter}.img`);

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sv-file-device-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

registerDeviceContract(test, 'file device', () => createFileDevice(freshPath(), contractSizeBytesMin));

test.serial('created files are sparse and sized exactly', async (t) => {
  const path = freshPath();
  const sizeBytes = 64 * 1024 * 1024;
  const device = await createFileDevice(path, sizeBytes, { id: 'strip-dev-1' });
  try {
    t.is(device.id, 'strip-dev-1');
    t.is(device.kind, 'file');
    t.is(device.sizeBytes, sizeBytes);
    const info = await stat(path);
    t.is(info.size, sizeBytes);
    t.true(info.blocks * 512 < sizeBytes / 16, `allocated ${info.blocks * 512} bytes of ${sizeBytes}`);
    t.is(info.mode & 0o777, 0o600);
  } finally {
    await device.close();
  }
});

test.serial('create refuses to clobber a non-empty file unless told to', async (t) => {
  const path = freshPath();
  await writeFile(path, 'another volume lives here');
  const error = await expectCode(t, () => createFileDevice(path, 4096), ErrorCode.DeviceExists);
  t.is(error.detail?.['sizeBytes'], 25);
  t.is(await readFile(path, 'utf8'), 'another volume lives here', 'refused create left the file alone');

  const device = await createFileDevice(path, 8192, { overwrite: true });
  try {
    t.is(device.sizeBytes, 8192);
    assertBytes(t, await device.read(0, 8192), Buffer.alloc(8192), 'overwrite zeroes old contents');
  } finally {
    await device.close();
  }
});

test.serial('create reuses an existing empty file', async (t) => {
  const path = freshPath();
  await writeFile(path, '');
  const device = await createFileDevice(path, 4096);
  await device.close();
  t.is((await stat(path)).size, 4096);
});

test.serial('create validates its arguments and reports missing directories', async (t) => {
  for (const size of [0, -4096, 1.5, Number.NaN]) {
    await expectCode(t, () => createFileDevice(freshPath(), size), ErrorCode.InvalidArgument);
  }
  await expectCode(t, () => createFileDevice(join(dir, 'no-such-dir', 'x.img'), 4096), ErrorCode.DeviceNotFound);
  await expectCode(t, () => createFileDevice(dir, 4096), ErrorCode.DeviceUnsupported);
});

test.serial('data persists across close and reopen', async (t) => {
  const path = freshPath();
  const payload = new Prng(3).bytes(9999);
  const first = await createFileDevice(path, 256 * 1024);
  await first.write(77_777, payload);
  await first.flush();
  await first.close();

  const second = await openFileDevice(path);
  try {
    t.is(second.sizeBytes, 256 * 1024);
    t.is(second.id, path);
    t.deepEqual(await second.read(77_777, payload.length), payload);
  } finally {
    await second.close();
  }
  t.deepEqual((await readFile(path)).subarray(77_777, 77_777 + payload.length), payload, 'bytes are in the file');
});

test.serial('a file that shrank underneath is detected as a short read', async (t) => {
  const path = freshPath();
  const device = await createFileDevice(path, 64 * 1024);
  try {
    await device.write(0, Buffer.alloc(64 * 1024, 0xab));
    await truncate(path, 40_000);
    const error = await expectCode(t, () => device.read(30_000, 20_000), ErrorCode.DeviceIo);
    t.is(error.detail?.['errno'], 'SHORT_READ');
    t.is(error.detail?.['bytesRead'], 10_000);
    t.deepEqual(await device.read(30_000, 10_000), Buffer.alloc(10_000, 0xab), 'bytes before the new end still read');
  } finally {
    await device.close();
  }
});

test.serial('open reports missing paths, directories and unopenable files clearly', async (t) => {
  await expectCode(t, () => openFileDevice(join(dir, 'missing.img')), ErrorCode.DeviceNotFound);
  await expectCode(t, () => openFileDevice(dir), ErrorCode.DeviceUnsupported);
  // A regular file used as a directory: the errno must survive the wrapping.
  const file = freshPath();
  await writeFile(file, 'x');
  const error = await expectCode(t, () => openFileDevice(join(file, 'x.img')), ErrorCode.DeviceIo);
  t.is(error.detail?.['errno'], 'ENOTDIR');
});

test.serial('system errors during I/O become SV_DEVICE_IO with the errno', async (t) => {
  const path = freshPath();
  await writeFile(path, Buffer.alloc(4096));
  // A read-only handle makes every write fail in the kernel (EBADF), without mocks.
  const handle = await open(path, constants.O_RDONLY);
  const device = new HandleDevice({ id: 'ro', path, kind: 'file', sizeBytes: 4096, handle });
  try {
    const error = await expectCode(t, () => device.write(0, Buffer.from('nope')), ErrorCode.DeviceIo);
    t.is(error.detail?.['errno'], 'EBADF');
    t.is(error.detail?.['op'], 'write');
    t.deepEqual(await device.read(0, 4), Buffer.alloc(4), 'the device is still usable after an I/O error');
  } finally {
    await device.close();
  }
});

test.serial('close waits for requests already in flight', async (t) => {
  const device = await createFileDevice(freshPath(), 4 * 1024 * 1024);
  const payload = new Prng(5).bytes(4 * 1024 * 1024);
  const writing = device.write(0, payload);
  await device.close();
  await t.notThrowsAsync(writing);
  const reopened = await openFileDevice(device.path);
  try {
    assertBytes(t, await reopened.read(0, payload.length), payload, 'the in-flight write landed');
  } finally {
    await reopened.close();
  }
});
