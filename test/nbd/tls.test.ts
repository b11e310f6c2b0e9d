import { readFile } from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { connectNbd } from '../../appliance/nbd/client.ts';
import { encodeInfoRequest } from '../../appliance/nbd/codec.ts';
import type { NbdTlsOptions } from '../../appliance/nbd/handshake.ts';
import { InfoType, Option, Reply, TransmissionFlag } from '../../appliance/nbd/protocol.ts';
import { isLoopback, startNbdServer } from '../../appliance/nbd/server.ts';
import { staticExportRegistry } from '../../appliance/nbd/backend.ts';
import { MiB, RawPeer, eventually, memory, serve, tempDir, toolOk } from './helpers.ts';

/** A TLS hook that does no TLS: lets the option state machine be tested byte by byte. */
function identityTls(mode: NbdTlsOptions['mode']): NbdTlsOptions & { upgrades: number } {
  const hook = { mode, upgrades: 0, upgrade: async (s: Duplex) => (hook.upgrades++, s) };
  return hook;
}

async function exportFlagsViaGo(p: RawPeer): Promise<number> {
  p.option(Option.Go, encodeInfoRequest({ name: 'disk', infoTypes: [InfoType.BlockSize] }));
  let flags = -1;
  for (;;) {
    const r = await p.optionReply();
    if (r.replyType === Reply.Ack) return flags;
    if (r.replyType !== Reply.Info) throw new Error(`GO refused: ${r.replyType}`);
    if (r.data.readUInt16BE(0) === InfoType.Export) flags = r.data.readUInt16BE(10);
  }
}

test('mode off: STARTTLS gets NBD_REP_ERR_POLICY and nothing else changes', async (t) => {
  const s = await serve(t, [memory('disk', MiB)]);
  const p = await RawPeer.open(s.address);
  p.option(Option.StartTls);
  t.is((await p.optionReply()).replyType, Reply.ErrPolicy);
  t.true((await exportFlagsViaGo(p)) > 0);
});

test('mode required: every option but STARTTLS/ABORT gets TLS_REQD until the upgrade', async (t) => {
  const hook = identityTls('required');
  const s = await serve(t, [memory('disk', MiB)], { tls: hook });
  const p = await RawPeer.open(s.address);
  for (const o of [Option.List, Option.StructuredReply, Option.Info, Option.Go, 0x77]) {
    p.option(o, o === Option.Info || o === Option.Go ? encodeInfoRequest({ name: 'disk', infoTypes: [] }) : undefined);
    t.is((await p.optionReply()).replyType, Reply.ErrTlsReqd, `option ${o}`);
  }
  p.option(Option.StartTls);
  t.is((await p.optionReply()).replyType, Reply.Ack);
  t.is(hook.upgrades, 1);
  p.option(Option.StartTls);
  t.is((await p.optionReply()).replyType, Reply.ErrInvalid);
  p.option(Option.List);
  t.is((await p.optionReply()).replyType, Reply.Server);
  t.is((await p.optionReply()).replyType, Reply.Ack);
});

test('mode required: EXPORT_NAME before TLS ends the session; a client without fixed newstyle is dropped', async (t) => {
  const s = await serve(t, [memory('disk', MiB)], { tls: identityTls('required') });
  const p = await RawPeer.open(s.address);
  p.option(Option.ExportName, Buffer.from('disk'));
  await p.closedByServer();
  const q = await RawPeer.open(s.address, 0);
  await q.closedByServer();
  const why = s.events.filter((e) => e.event === 'protocol-violation').map((e) => e.message ?? '');
  t.true(why.some((m) => /EXPORT_NAME before TLS/.test(m)));
  t.true(why.some((m) => /FIXED_NEWSTYLE/.test(m)));
});

test('negotiation state from before STARTTLS is forgotten after it', async (t) => {
  const s = await serve(t, [memory('disk', MiB)], { tls: identityTls('optional') });
  const p = await RawPeer.open(s.address);
  p.option(Option.StructuredReply);
  t.is((await p.optionReply()).replyType, Reply.Ack);
  p.option(Option.StartTls);
  t.is((await p.optionReply()).replyType, Reply.Ack);
  // structured replies were negotiated in plain text only: DF must not be offered
  t.is((await exportFlagsViaGo(p)) & TransmissionFlag.SendDf, 0);
});

test('plain text is refused on non-loopback listen addresses; TLS modes need a hook', async (t) => {
  const exports = staticExportRegistry([memory('disk', MiB)]);
  await t.throwsAsync(startNbdServer({ listen: { host: '0.0.0.0', port: 0 }, exports }), { message: /loopback/ });
  await t.throwsAsync(startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, exports, tls: { mode: 'required' } }), { message: /upgrade hook/ });
  t.true(isLoopback('127.0.0.1'));
  t.true(isLoopback('::1'));
  t.true(isLoopback('::ffff:127.0.0.2'));
  t.false(isLoopback('10.0.0.1'));
  t.false(isLoopback('::ffff:192.0.2.1'));
  // names that only look like loopback addresses
  t.false(isLoopback('127.evil.example'));
  t.false(isLoopback('::1.example'));
  t.false(isLoopback('127.0.0.1.nip.io'));
});

async function selfSigned(t: ExecutionContext): Promise<{ key: Buffer; cert: Buffer }> {
  const dir = await tempDir(t);
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  await toolOk(t, 'openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
  ]);
  return { key: await readFile(key), cert: await readFile(cert) };
}

test('real TLS (node:tls) through STARTTLS: our client and server, data intact', async (t) => {
  const { key, cert } = await selfSigned(t);
  const context = tls.createSecureContext({ key, cert, minVersion: 'TLSv1.2' });
  const serverTls: NbdTlsOptions = {
    mode: 'required',
    upgrade: (socket) =>
      new Promise((resolve, reject) => {
        const s = new tls.TLSSocket(socket as net.Socket, { isServer: true, secureContext: context });
        const gone = (): void => reject(new Error('peer left during the TLS handshake'));
        s.once('secure', () => {
          s.off('end', gone);
          s.off('close', gone);
          resolve(s);
        });
        s.once('error', reject);
        s.once('end', gone);
        s.once('close', gone);
      }),
  };
  const disk = memory('disk', 4 * MiB);
  const { address, server } = await serve(t, [disk], { tls: serverTls });
  const clientTls = {
    upgrade: (socket: Duplex) =>
      new Promise<Duplex>((resolve, reject) => {
        const s = tls.connect({ socket: socket as net.Socket, ca: cert, servername: 'localhost' }, () => resolve(s));
        s.once('error', reject);
      }),
  };
  const plain = await t.throwsAsync(connectNbd(address, 'disk'));
  t.true(isStripvaultError(plain, ErrorCode.NbdRefused));
  t.regex(plain?.message ?? '', /TLS_REQD/);

  const c = await connectNbd(address, 'disk', { tls: clientTls });
  t.true(c.info.tls);
  t.true(c.info.structuredReplies);
  const data = Buffer.alloc(3 * MiB, 0x5a);
  await c.write(4096, data, { fua: true });
  // Buffer.equals: ava's deepEqual is far too slow for megabytes
  t.true((await c.read(4096, data.length)).equals(data));
  t.deepEqual(await c.blockStatus(0, 4096), [{ length: 4096, flags: 3 }]);
  await c.close();

  // a client that does not trust the certificate fails the handshake, and the server survives it
  const distrust = {
    upgrade: (socket: Duplex) =>
      new Promise<Duplex>((resolve, reject) => {
        const s = tls.connect({ socket: socket as net.Socket, servername: 'localhost' }, () => resolve(s));
        s.once('error', reject);
      }),
  };
  await t.throwsAsync(connectNbd(address, 'disk', { tls: distrust }), { message: /self-signed/ });
  const again = await connectNbd(address, 'disk', { tls: clientTls });
  t.deepEqual(await again.read(4096, 16), data.subarray(0, 16));
  await again.close();
  await eventually(() => server.connections() === 0, 'all connections closed');
});
