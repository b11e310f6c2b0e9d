/**
 * The block device on a real loop device. Needs root and losetup (util-linux); without them
 * these tests fail, on purpose: a skipped block device suite would hide a broken appliance.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeRdev, openBlockDevice } from '../../appliance/device/block-device.ts';
import { openDevice } from '../../appliance/device/open-device.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { assertBytes, contractSizeBytesMin, expectCode, registerDeviceContract } from './device-contract.ts';

const run = promisify(execFile);
const loopSizeBytes = 4 * contractSizeBytesMin;

let dir = '';
let backingPath = '';
let loopPath = '';

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sv-block-device-'));
  backingPath = join(dir, 'backing.img');
  const backing = await open(backingPath, 'w');
  await backing.truncate(loopSizeBytes);
  await backing.close();
  try {
    const { stdout } = await run('losetup', ['--find', '--show', backingPath]);
    loopPath = stdout.trim();
  } catch (e) {
    throw new Error(
      `block device tests need a loop device: 'losetup --find --show ${backingPath}' failed ` +
        `(run as root with util-linux installed and /dev/loop-control available): ${String(e)}`,
    );
  }
  if (!loopPath.startsWith('/dev/loop')) throw new Error(`losetup printed ${JSON.stringify(loopPath)}, not a loop device`);
});

test.after.always(async () => {
  if (loopPath !== '') await run('losetup', ['--detach', loopPath]);
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** The contract wants a zeroed device; the loop device is shared, so wipe it through itself. */
registerDeviceContract(test, 'block device', async () => {
  const device = await openBlockDevice(loopPath);
  await device.write(0, Buffer.alloc(device.sizeBytes));
  await device.flush();
  return device;
});

test.serial('size comes from sysfs and matches the backing file', async (t) => {
  const device = await openBlockDevice(loopPath, { id: 'loop-strip-dev' });
  try {
    t.is(device.kind, 'block');
    t.is(device.id, 'loop-strip-dev');
    t.is(device.sizeBytes, loopSizeBytes);
  } finally {
    await device.close();
  }
});

test.serial('flushed writes persist across reopen and reach the backing file', async (t) => {
  const payload = new Prng(21).bytes(70_001);
  const offsetBytes = 1_234_567;
  const first = await openDevice(loopPath);
  t.is(first.kind, 'block', 'openDevice recognises a block device');
  await first.write(offsetBytes, payload);
  await first.flush();
  await first.close();

  const second = await openDevice(loopPath);
  try {
    assertBytes(t, await second.read(offsetBytes, payload.length), payload, 'reopened device');
  } finally {
    await second.close();
  }
  const backing = await readFile(backingPath);
  assertBytes(t, backing.subarray(offsetBytes, offsetBytes + payload.length), payload, 'backing file');
});

test.serial('exclusive opens exclude each other', async (t) => {
  const first = await openBlockDevice(loopPath, { exclusive: true });
  try {
    const error = await expectCode(t, () => openBlockDevice(loopPath, { exclusive: true }), ErrorCode.DeviceIo);
    t.is(error.detail?.['errno'], 'EBUSY');
  } finally {
    await first.close();
  }
  const again = await openBlockDevice(loopPath, { exclusive: true });
  await again.close();
});

test.serial('a regular file is not a block device', async (t) => {
  const path = join(dir, 'plain.img');
  await writeFile(path, Buffer.alloc(4096));
  await expectCode(t, () => openBlockDevice(path), ErrorCode.DeviceUnsupported);
  await expectCode(t, () => openBlockDevice(join(dir, 'missing')), ErrorCode.DeviceNotFound);
});

test('dev_t decoding follows the Linux encoding, large minors included', (t) => {
  t.deepEqual(decodeRdev(0x0700n), { major: 7, minor: 0 }); // loop0
  t.deepEqual(decodeRdev(2065n), { major: 8, minor: 17 }); // sdb1
  t.deepEqual(decodeRdev(1_050_368n), { major: 7, minor: 256 }); // loop256: minor spills above bit 20
  t.deepEqual(decodeRdev(66_304n), { major: 259, minor: 0 }); // nvme0n1
  // glibc makedev(0x1234abc, 0x78956), printed by a C program.
  t.deepEqual(decodeRdev(81_979_588_990_385_238n), {
    major: 0x1234abc,
    minor: 0x78956,
  });
});
