/**
 * The API server listens on loopback only (no TLS yet) and closes cleanly.
 */
import test from 'ava';
import express from 'express';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { isLoopbackHost, startApiServer } from '../../admin-ui/api-server.ts';

test('loopback hosts are recognised; nothing else is', (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) t.true(isLoopbackHost(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.10', 'example.com', '128.0.0.1', '::ffff:10.0.0.1', '', 'localhost.evil.com', '127.0.0.1.nip.io']) {
    t.false(isLoopbackHost(h), h);
  }
});

test('a non-loopback host is refused before anything listens', async (t) => {
  for (const host of ['0.0.0.0', '::', '192.168.1.10']) {
    const e = await t.throwsAsync(startApiServer({ host, port: 0, app: express() }));
    t.true(isStripvaultError(e, ErrorCode.InvalidArgument), host);
    t.regex(e!.message, /loopback/);
  }
  await t.throwsAsync(startApiServer({ host: '127.0.0.1', port: 70000, app: express() }), { message: /port/ });
});

test('listens on an ephemeral loopback port, answers, closes; a taken port is a clear error', async (t) => {
  const app = express();
  app.get('/ping', (_req, res) => {
    res.json({ pong: true });
  });
  const server = await startApiServer({ host: '127.0.0.1', port: 0, app });
  try {
    t.true(server.port > 0);
    t.is(server.url, `http://127.0.0.1:${server.port}`);
    const r = await fetch(`${server.url}/ping`);
    t.deepEqual(await r.json(), { pong: true });
    const e = await t.throwsAsync(startApiServer({ host: '127.0.0.1', port: server.port, app }));
    t.true(isStripvaultError(e, ErrorCode.ApiUnavailable));
    t.regex(e!.message, /EADDRINUSE/);
  } finally {
    await server.close();
  }
  await t.throwsAsync(fetch(`${server.url}/ping`));
});
