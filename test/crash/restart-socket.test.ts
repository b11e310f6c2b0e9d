/**
 * A SIGKILLed appliance leaves its Unix socket file behind. A restart on the same path (what a
 * service manager does after a crash) must serve again, while a path a live server still listens
 * on must not be taken over.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, describeExit, launch, startServing, tail } from '../helpers/crash-harness.ts';

test('after SIGKILL, serve restarts on the same Unix socket path and serves the same volume', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'sv-crash-sock-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const dataDir = join(root, 'data');
  const sock = join(root, 'nbd.sock');
  const first = await startServing({ dataDir, nbd: `unix:${sock}` });
  t.teardown(() => first.kill('SIGKILL'));
  const c1 = await connect(first.at, 'default');
  await c1.write(0, Buffer.alloc(4096, 0x5a));
  await c1.flush();
  c1.destroy();
  first.kill('SIGKILL');
  t.is((await first.exited).signal, 'SIGKILL');

  const again = launch({ dataDir, nbd: `unix:${sock}` });
  t.teardown(() => again.kill('SIGKILL'));
  const r = await again.serving();
  if ('code' in r) {
    t.fail(`restart on the crashed server's socket path ${describeExit(r)}:\n${tail(again.log(), 12)}`);
    return;
  }
  const c2 = await connect(r, 'default');
  t.true((await c2.read(0, 4096)).equals(Buffer.alloc(4096, 0x5a)));
  await c2.close();
  t.is((await again.stop()).code, 0);
});

test('a second serve on a socket path a live server listens on fails and leaves the first serving', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'sv-crash-sock-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const sock = join(root, 'nbd.sock');
  const first = await startServing({ dataDir: join(root, 'a'), nbd: `unix:${sock}` });
  t.teardown(() => first.kill('SIGKILL'));
  const second = launch({ dataDir: join(root, 'b'), nbd: `unix:${sock}` });
  t.teardown(() => second.kill('SIGKILL'));
  const r = await second.serving();
  t.true('code' in r && r.code !== 0, `second serve should fail, got ${'code' in r ? describeExit(r) : 'serving'}`);
  const c = await connect(first.at, 'default');
  t.is(c.info.sizeBytes, 1024 ** 3);
  await c.close();
  t.is((await first.stop()).code, 0);
});
