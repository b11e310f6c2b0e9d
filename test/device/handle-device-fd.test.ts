import test from 'ava';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createFileDevice } from '../../appliance/device/file-device.ts';
import { FdIoError, preadFully, pwriteFully } from '../../appliance/device/fd-io.ts';
import { withTempDir } from '../helpers/volumes.ts';

test('a borrowed descriptor does positional I/O the device sees; close() waits for held I/O, then hands out none', async (t) => {
  await withTempDir(async (dir) => {
    const dev = await createFileDevice(join(dir, 'd.img'), 1 << 20);
    const fd = dev.rawFd();
    if (fd === null) return t.fail('no descriptor');
    const data = randomBytes(5000);
    pwriteFully(fd, data, 4096);
    t.true((await dev.read(4096, 5000)).equals(data));
    const back = Buffer.alloc(5000);
    preadFully(fd, back, 4096);
    t.true(back.equals(data));
    t.throws(() => preadFully(fd, Buffer.alloc(10), (1 << 20) - 5), { instanceOf: FdIoError, message: /short read/ });
    let release!: () => void;
    const io = new Promise<void>((r) => (release = r));
    dev.hold(io);
    let closed = false;
    const closing = dev.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 30));
    t.false(closed, 'close() waits for I/O held on the descriptor');
    t.is(dev.rawFd(), null);
    release();
    await closing;
    t.true(closed);
  });
});

test('errors on a raw descriptor carry the errno', (t) => {
  const e = t.throws(() => pwriteFully(987_654, Buffer.alloc(4), 0), { instanceOf: FdIoError });
  t.is(e?.errno, 'EBADF');
});
