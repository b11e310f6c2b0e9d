import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openDevice } from '../../appliance/device/open-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { expectCode } from './device-contract.ts';

const run = promisify(execFile);
let dir = '';

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sv-open-device-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a regular file opens as a file device, through symlinks too', async (t) => {
  const path = join(dir, 'strip.img');
  await writeFile(path, Buffer.alloc(8192));
  const link = join(dir, 'by-id-link');
  await symlink(path, link);
  const device = await openDevice(link, { id: 'dev-7' });
  try {
    t.is(device.kind, 'file');
    t.is(device.id, 'dev-7');
    t.is(device.sizeBytes, 8192);
  } finally {
    await device.close();
  }
});

test('missing paths, directories, character devices and FIFOs get clear errors', async (t) => {
  const missing = await expectCode(t, () => openDevice(join(dir, 'nope')), ErrorCode.DeviceNotFound);
  t.regex(missing.message, /does not exist/);
  const directory = await expectCode(t, () => openDevice(dir), ErrorCode.DeviceUnsupported);
  t.regex(directory.message, /directory/);
  const character = await expectCode(t, () => openDevice('/dev/null'), ErrorCode.DeviceUnsupported);
  t.regex(character.message, /character device/);
  const fifo = join(dir, 'fifo');
  await run('mkfifo', [fifo]);
  const fifoError = await expectCode(t, () => openDevice(fifo), ErrorCode.DeviceUnsupported);
  t.regex(fifoError.message, /FIFO/);
});
