/**
 * Client identity over NBD STARTTLS: certificates from the appliance CA name the client, an access
 * policy decides what each client sees and opens, revoked and foreign certificates are refused at
 * the handshake, and plain text is served to loopback peers only. Our client, raw bytes, and the
 * real clients (nbdinfo, qemu-img) with certificate directories.
 */
import { generateKeyPair } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { promisify } from 'node:util';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { ErrorCode, fail, isStripvaultError } from '../../appliance/errors.ts';
import { accessControlledRegistry } from '../../appliance/nbd/access.ts';
import type { ExportPolicy } from '../../appliance/nbd/access.ts';
import { staticExportRegistry } from '../../appliance/nbd/backend.ts';
import type { ExportRegistry, NbdExport } from '../../appliance/nbd/backend.ts';
import { connectNbd, listNbdExports } from '../../appliance/nbd/client.ts';
import type { NbdClientTls } from '../../appliance/nbd/client.ts';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../appliance/nbd/codec.ts';
import { sealedMessage } from '../../appliance/nbd/handshake.ts';
import type { NbdAddress } from '../../appliance/nbd/server.ts';
import { Option, Reply, metaContextBaseAllocation } from '../../appliance/nbd/protocol.ts';
import { nbdClientTls, nbdServerTls } from '../../appliance/nbd/tls.ts';
import {
  MemoryCertificateRegistry,
  checkClientCertificate,
  createCa,
  issueClientCertificate,
  issueServerCertificate,
} from '../../keymgr/pki.ts';
import { MiB, RawPeer, eventually, memory, sameBytes, serve, tool, toolOk } from './helpers.ts';
import type { TestServer } from './helpers.ts';

const generateKeyPairAsync = promisify(generateKeyPair);

interface Credentials {
  readonly certPem: string;
  readonly keyPem: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem: the layout libnbd and qemu read. */
  readonly dir: string;
}

interface Fixture {
  readonly caCertPem: string;
  readonly registry: MemoryCertificateRegistry;
  readonly server: { certPem: string; keyPem: string };
  readonly alice: Credentials;
  readonly bob: Credentials;
  /** Issued by our CA, then revoked. */
  readonly carol: Credentials;
  /** Signed by our CA but never recorded in the registry (a restored old CA key, say). */
  readonly mallory: Credentials;
  /** From another CA with the same name as ours. */
  readonly dave: Credentials;
  readonly nonLoopbackIp: string | undefined;
  readonly root: string;
}

/** This machine's first non-loopback IPv4 address: connecting to it makes a non-loopback peer without leaving the machine. */
function nonLoopbackIpv4(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('127.')) return a.address;
  }
  return undefined;
}

async function rsaKey(): Promise<{ publicKeyPem: string; privateKeyPem: string }> {
  // 2048-bit keys brought by the "client": the CA accepts them, and they make this file fast
  const { publicKey, privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
  return { publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string, privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

let fixture: Fixture | undefined;

test.before(async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'sv-nbd-certs-'));
  // the foreign CA has our CA's name: only the signature tells them apart
  const [ca, foreignCa, serverKey, aliceKey, bobKey] = await Promise.all([
    createCa({ commonName: 'stripvault test CA', validDays: 30 }),
    createCa({ commonName: 'stripvault test CA', validDays: 30 }),
    rsaKey(),
    rsaKey(),
    rsaKey(),
  ]);
  const registry = new MemoryCertificateRegistry();
  const nonLoopbackIp = nonLoopbackIpv4();
  const server = await issueServerCertificate(ca, registry, {
    hostNames: ['localhost'],
    ips: ['127.0.0.1', ...(nonLoopbackIp === undefined ? [] : [nonLoopbackIp])],
    validDays: 2,
    publicKeyPem: serverKey.publicKeyPem,
  });
  const client = async (name: string, key: { publicKeyPem: string; privateKeyPem: string }, issuer = ca, reg = registry): Promise<Credentials & { serial: string }> => {
    const cert = await issueClientCertificate(issuer, reg, { clientName: name, validDays: 2, publicKeyPem: key.publicKeyPem });
    const dir = path.join(root, name);
    await mkdir(dir);
    await writeFile(path.join(dir, 'ca-cert.pem'), ca.caCertPem);
    await writeFile(path.join(dir, 'client-cert.pem'), cert.certPem);
    await writeFile(path.join(dir, 'client-key.pem'), key.privateKeyPem, { mode: 0o600 });
    return { certPem: cert.certPem, keyPem: key.privateKeyPem, dir, serial: cert.serial };
  };
  const alice = await client('alice', aliceKey);
  const bob = await client('bob', bobKey);
  // keys may be shared between certificates: what is tested is the certificate, and keygen is slow
  const carol = await client('carol', bobKey);
  await registry.revoke(carol.serial);
  const mallory = await client('mallory', aliceKey, ca, new MemoryCertificateRegistry());
  const dave = await client('dave', aliceKey, foreignCa, new MemoryCertificateRegistry());
  fixture = { caCertPem: ca.caCertPem, registry, server: { certPem: server.certPem, keyPem: serverKey.privateKeyPem }, alice, bob, carol, mallory, dave, nonLoopbackIp, root };
});

test.after.always(async () => {
  if (fixture !== undefined) await rm(fixture.root, { recursive: true, force: true });
});

function fx(): Fixture {
  if (fixture === undefined) throw new Error('fixture not built');
  return fixture;
}

/** alice: alpha, alpha2; bob: bravo; certificate-less loopback peers: local; everyone else: nothing. */
const policy: ExportPolicy = (peer) => {
  if (peer.clientName !== undefined) return { alice: ['alpha', 'alpha2'], bob: ['bravo'] }[peer.clientName] ?? [];
  return peer.loopback ? ['local'] : [];
};

function disks(): NbdExport[] {
  return [memory('alpha', 4 * MiB), memory('alpha2', 1 * MiB), memory('bravo', 2 * MiB), memory('local', 1 * MiB)];
}

async function serveTls(
  t: ExecutionContext,
  opts: { mode?: 'optional' | 'required'; inner?: ExportRegistry; listen?: NbdAddress; defaultName?: string } = {},
): Promise<TestServer> {
  const f = fx();
  const serverTls = nbdServerTls({
    caCertPem: f.caCertPem,
    serverCertPem: f.server.certPem,
    serverKeyPem: f.server.keyPem,
    checkClient: (der) => checkClientCertificate(f.registry, f.caCertPem, der),
    mode: opts.mode ?? 'optional',
  });
  const inner = opts.inner ?? staticExportRegistry(disks(), opts.defaultName);
  return serve(t, [], { tls: serverTls, registry: accessControlledRegistry(inner, policy), ...(opts.listen === undefined ? {} : { listen: opts.listen }) });
}

function clientTls(who: { certPem: string; keyPem: string }, serverName = '127.0.0.1'): NbdClientTls {
  return nbdClientTls({ caCertPem: fx().caCertPem, certPem: who.certPem, keyPem: who.keyPem, serverName });
}

const names = (list: Array<{ name: string }>): string[] => list.map((e) => e.name).sort();

async function tlsPeer(address: NbdAddress, who: { certPem: string; keyPem: string }): Promise<RawPeer> {
  const p = await RawPeer.open(address);
  const reply = await p.startTls((s: net.Socket): Promise<Duplex> => clientTls(who).upgrade(s));
  if (reply !== Reply.Ack) throw new Error(`STARTTLS refused: ${reply}`);
  return p;
}

test('each certificate client lists and opens only its own exports; the name it proved is logged', async (t) => {
  const f = fx();
  const s = await serveTls(t);
  t.deepEqual(names(await listNbdExports(s.address, { tls: clientTls(f.alice) })), ['alpha', 'alpha2']);
  t.deepEqual(names(await listNbdExports(s.address, { tls: clientTls(f.bob) })), ['bravo']);
  // our client checks the server's name too
  await t.throwsAsync(listNbdExports(s.address, { tls: clientTls(f.alice, 'elsewhere.example') }), { message: /altnames/ });
  // a loopback peer in plain text has no identity: the policy gives it what it gives such peers
  t.deepEqual(names(await listNbdExports(s.address)), ['local']);

  const a = await connectNbd(s.address, 'alpha', { tls: clientTls(f.alice) });
  t.true(a.info.tls);
  const data = Buffer.alloc(1 * MiB, 0xa1);
  await a.write(4096, data, { fua: true });
  sameBytes(t, await a.read(4096, data.length), data);
  await a.close();
  const b = await connectNbd(s.address, 'bravo', { tls: clientTls(f.bob) });
  t.is(b.info.sizeBytes, 2 * MiB);
  await b.close();

  for (const [who, name] of [[f.alice, 'bravo'], [f.bob, 'alpha'], [f.bob, 'local']] as const) {
    const e = await t.throwsAsync(connectNbd(s.address, name, { tls: clientTls(who) }));
    t.true(isStripvaultError(e, ErrorCode.NbdRefused), String(e));
    t.regex(e?.message ?? '', /NBD_REP_ERR_UNKNOWN/);
  }
  await eventually(() => s.events.filter((e) => e.event === 'transmission-start').length === 2, 'two transmissions logged');
  const starts = s.events.filter((e) => e.event === 'transmission-start').map((e) => [e.export, e.detail?.['clientName']]);
  t.deepEqual(starts, [
    ['alpha', 'alice'],
    ['bravo', 'bob'],
  ]);
});

test('a forbidden export gets exactly the replies of one that does not exist, for every option that names one', async (t) => {
  const f = fx();
  // bravo is also the default export: the empty name must not open it for alice either
  const s = await serveTls(t, { defaultName: 'bravo' });
  const p = await tlsPeer(s.address, f.alice);
  t.is((p.socket as tls.TLSSocket).getProtocol(), 'TLSv1.3');
  p.option(Option.StructuredReply);
  t.is((await p.optionReply()).replyType, Reply.Ack);
  // same length, so the replies can be compared byte for byte once the name is masked
  const forbidden = 'bravo';
  const unknown = 'zulux';
  const ask = async (option: number, name: string): Promise<Array<{ replyType: number; text: string }>> => {
    const data =
      option === Option.Info || option === Option.Go
        ? encodeInfoRequest({ name, infoTypes: [] })
        : encodeMetaContextRequest({ name, queries: [metaContextBaseAllocation] });
    p.option(option, data);
    const replies: Array<{ replyType: number; text: string }> = [];
    for (;;) {
      const r = await p.optionReply();
      replies.push({ replyType: r.replyType, text: r.data.toString('utf8').replaceAll(name, 'NAME') });
      if (r.replyType === Reply.Ack || (r.replyType & 0x80000000) !== 0) return replies;
    }
  };
  for (const option of [Option.Info, Option.Go, Option.ListMetaContext, Option.SetMetaContext]) {
    const a = await ask(option, forbidden);
    t.deepEqual(a, await ask(option, unknown), `option ${option}`);
    t.is(a[0]?.replyType, Reply.ErrUnknown, `option ${option}`);
  }
  const def = await ask(Option.Go, '');
  t.is(def[0]?.replyType, Reply.ErrUnknown);
  // the one allowed export still opens on the same connection
  const ok = await ask(Option.Info, 'alpha');
  t.is(ok.at(-1)?.replyType, Reply.Ack);
  p.destroy();

  // EXPORT_NAME cannot carry an error: both end the session the same way
  for (const name of [forbidden, unknown]) {
    const q = await tlsPeer(s.address, f.alice);
    q.option(Option.ExportName, Buffer.from(name));
    await q.closedByServer();
  }
  const refusals = s.events.filter((e) => e.event === 'export-refused' && e.detail?.['clientName'] === 'alice').map((e) => e.message?.replaceAll(/"[a-z]*"/g, '"X"'));
  // INFO and GO twice each, GO for the default export, EXPORT_NAME twice
  t.is(refusals.length, 7);
  t.is(new Set(refusals).size, 1, `one message for forbidden and unknown: ${[...new Set(refusals)].join(' | ')}`);
});

/** Either the TLS upgrade fails or the server hangs up before answering anything after it. */
async function refusedAtHandshake(t: ExecutionContext, address: NbdAddress, who: { certPem: string; keyPem: string }): Promise<void> {
  const p = await RawPeer.open(address);
  try {
    await p.startTls((s: net.Socket): Promise<Duplex> => clientTls(who).upgrade(s));
  } catch {
    t.pass();
    return;
  }
  // in TLS 1.3 the server checks the client certificate after the client is done: the refusal shows on the next read
  p.option(Option.List);
  const answered = await p.optionReply().then(
    (r) => r.replyType,
    () => undefined,
  );
  t.is(answered, undefined, 'the server answered LIST after a refused certificate');
  p.destroy();
}

test('revoked, unknown, foreign and missing certificates are refused at the handshake; the server carries on', async (t) => {
  const f = fx();
  const s = await serveTls(t);
  for (const who of [f.carol, f.mallory, f.dave]) {
    await refusedAtHandshake(t, s.address, who);
    await t.throwsAsync(listNbdExports(s.address, { tls: clientTls(who) }));
    await t.throwsAsync(connectNbd(s.address, 'alpha', { tls: clientTls(who) }));
  }
  // TLS with no client certificate at all
  const anonymous = nbdClientTlsWithout(fx().caCertPem);
  await t.throwsAsync(listNbdExports(s.address, { tls: anonymous }));

  await eventually(() => s.events.filter((e) => e.event === 'tls-upgrade-failed').length >= 10, 'refusals logged');
  const codes = new Set(s.events.filter((e) => e.event === 'tls-upgrade-failed').map((e) => e.detail?.['code'] ?? 'tls'));
  t.true(codes.has(ErrorCode.CertRevoked), [...codes].join());
  t.true(codes.has(ErrorCode.CertUnknown), [...codes].join());
  t.true(codes.has(ErrorCode.CertInvalid), [...codes].join());
  t.false(s.events.some((e) => e.event === 'transmission-start' || e.event === 'export-refused'));
  t.deepEqual(names(await listNbdExports(s.address, { tls: clientTls(f.alice) })), ['alpha', 'alpha2']);
  await eventually(() => s.server.connections() === 0, 'refused connections closed');
});

test('the CA check stands on its own: a registry check that accepts anything still never sees a foreign certificate', async (t) => {
  const f = fx();
  const seen: string[] = [];
  const serverTls = nbdServerTls({
    caCertPem: f.caCertPem,
    serverCertPem: f.server.certPem,
    serverKeyPem: f.server.keyPem,
    checkClient: async (der) => {
      seen.push(der.toString('base64'));
      return { clientName: 'alice', serial: '01' };
    },
    mode: 'required',
  });
  const s = await serve(t, [], { tls: serverTls, registry: accessControlledRegistry(staticExportRegistry(disks()), policy) });
  await refusedAtHandshake(t, s.address, f.dave);
  await eventually(() => s.events.some((e) => e.event === 'tls-upgrade-failed'), 'refusal logged');
  t.like(s.events.find((e) => e.event === 'tls-upgrade-failed')?.detail, { code: ErrorCode.CertInvalid, reason: 'not-our-ca' });
  t.deepEqual(seen, []);
  t.deepEqual(names(await listNbdExports(s.address, { tls: clientTls(f.bob) })), ['alpha', 'alpha2']);
  t.is(seen.length, 1);
});

test('bad TLS configuration fails when it is built, not at the first client', (t) => {
  const f = fx();
  const base = { caCertPem: f.caCertPem, serverCertPem: f.server.certPem, serverKeyPem: f.server.keyPem, checkClient: async () => ({ clientName: 'x', serial: '01' }), mode: 'required' as const };
  for (const bad of [{ caCertPem: 'nonsense' }, { caCertPem: f.server.certPem }, { serverKeyPem: f.alice.keyPem }, { serverCertPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' }]) {
    const e = t.throws(() => nbdServerTls({ ...base, ...bad }));
    t.true(isStripvaultError(e, ErrorCode.InvalidArgument), String(e));
  }
});

/** A TLS client that trusts our CA but presents no certificate. */
function nbdClientTlsWithout(caCertPem: string): NbdClientTls {
  return {
    upgrade: (socket) =>
      new Promise<Duplex>((resolve, reject) => {
        const s = tls.connect({ socket: socket as net.Socket, ca: caCertPem, host: '127.0.0.1' }, () => resolve(s));
        s.once('error', reject);
      }),
  };
}

test('while sealed, an allowed export says so (NBD_REP_ERR_POLICY); a forbidden one still looks unknown', async (t) => {
  const f = fx();
  const sealed = (): never => fail(ErrorCode.Sealed, 'no master key');
  const s = await serveTls(t, { inner: { list: sealed, get: sealed } });
  const go = await t.throwsAsync(connectNbd(s.address, 'alpha', { tls: clientTls(f.alice) }));
  t.regex(go?.message ?? '', /NBD_REP_ERR_POLICY/);
  t.true(go?.message.includes(sealedMessage));
  const list = await t.throwsAsync(listNbdExports(s.address, { tls: clientTls(f.alice) }));
  t.regex(list?.message ?? '', /NBD_REP_ERR_POLICY/);
  t.true(list?.message.includes(sealedMessage));
  const forbidden = await t.throwsAsync(connectNbd(s.address, 'bravo', { tls: clientTls(f.alice) }));
  t.regex(forbidden?.message ?? '', /NBD_REP_ERR_UNKNOWN/);
  // EXPORT_NAME has no way to say why: the session ends
  const p = await tlsPeer(s.address, f.alice);
  p.option(Option.ExportName, Buffer.from('alpha'));
  await p.closedByServer();
  await eventually(() => s.events.some((e) => e.event === 'connection-close' && e.message?.includes(sealedMessage) === true), 'EXPORT_NAME refused as sealed');
  t.pass();
});

for (const mode of ['optional', 'required'] as const) {
  test(`${mode}: a non-loopback peer gets nothing before STARTTLS (byte level), then its own exports over TLS`, async (t) => {
    const f = fx();
    const ip = f.nonLoopbackIp;
    if (ip === undefined) {
      t.fail('this machine has no non-loopback IPv4 address (os.networkInterfaces()); the test needs one to connect from');
      return;
    }
    const s = await serveTls(t, { mode, listen: { host: '0.0.0.0', port: 0 } });
    if (!('port' in s.address)) throw new Error('TCP expected');
    const remote = { host: ip, port: s.address.port };
    const p = await RawPeer.open(remote);
    for (const o of [Option.List, Option.StructuredReply, Option.Info, Option.Go, Option.ListMetaContext, 0x77]) {
      const data = o === Option.Info || o === Option.Go ? encodeInfoRequest({ name: 'local', infoTypes: [] }) : o === Option.ListMetaContext ? encodeMetaContextRequest({ name: 'local', queries: [] }) : undefined;
      p.option(o, data);
      const r = await p.optionReply();
      t.is(r.replyType, Reply.ErrTlsReqd, `option ${o}`);
    }
    p.option(Option.ExportName, Buffer.from('local'));
    await p.closedByServer();

    // loopback on the same listener: plain text only where the mode allows it
    const local = await RawPeer.open({ host: '127.0.0.1', port: s.address.port });
    local.option(Option.List);
    const r = await local.optionReply();
    t.is(r.replyType, mode === 'optional' ? Reply.Server : Reply.ErrTlsReqd);
    local.destroy();

    t.deepEqual(names(await listNbdExports(remote, { tls: clientTls(f.alice, ip) })), ['alpha', 'alpha2']);
    const c = await connectNbd(remote, 'alpha2', { tls: clientTls(f.alice, ip) });
    t.is(c.info.sizeBytes, 1 * MiB);
    await c.close();
  });
}

// ---------------------------------------------------------------- real clients

function nbds(address: NbdAddress, exportName: string, dir: string): string {
  if (!('port' in address)) throw new Error('TCP expected');
  return `nbds://127.0.0.1:${address.port}/${exportName}?tls-certificates=${dir}`;
}

function qemuOpts(address: NbdAddress, exportName: string): string {
  if (!('port' in address)) throw new Error('TCP expected');
  return `driver=nbd,host=127.0.0.1,port=${address.port},export=${exportName},tls-creds=tls0`;
}

const qemuCreds = (dir: string): string[] => ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`];

test('real clients: nbdinfo and qemu-img with certificates see and open only their exports; a revoked one fails', async (t) => {
  const f = fx();
  const s = await serveTls(t, { mode: 'required' });
  const list = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', '--list', nbds(s.address, '', f.alice.dir)])) as { exports: Array<Record<string, unknown>> };
  t.deepEqual(list.exports.map((e) => e['export-name']).sort(), ['alpha', 'alpha2']);
  const bobList = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', '--list', nbds(s.address, '', f.bob.dir)])) as { exports: Array<Record<string, unknown>> };
  t.deepEqual(bobList.exports.map((e) => e['export-name']), ['bravo']);
  const info = JSON.parse(await toolOk(t, 'nbdinfo', ['--json', nbds(s.address, 'alpha', f.alice.dir)])) as { exports: Array<Record<string, unknown>> };
  t.like(info.exports[0], { 'export-name': 'alpha', 'export-size': 4 * MiB });
  const forbidden = await tool('nbdinfo', [nbds(s.address, 'bravo', f.alice.dir)]);
  t.not(forbidden.code, 0);
  // without certificates libnbd cannot get past FORCEDTLS
  const plain = await tool('nbdinfo', [`nbd://127.0.0.1:${'port' in s.address ? s.address.port : 0}/alpha`]);
  t.not(plain.code, 0);

  // qemu-img writes an image into alpha and reads it back out
  const work = await mkdtemp(path.join(os.tmpdir(), 'sv-nbd-qemu-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const image = Buffer.alloc(4 * MiB);
  for (let i = 0; i < image.length; i += 4096) image.writeUInt32BE(i, i);
  await writeFile(path.join(work, 'in.raw'), image);
  await toolOk(t, 'qemu-img', ['convert', '-n', '-f', 'raw', path.join(work, 'in.raw'), ...qemuCreds(f.alice.dir), '--target-image-opts', qemuOpts(s.address, 'alpha')]);
  await toolOk(t, 'qemu-img', ['convert', ...qemuCreds(f.alice.dir), '--image-opts', qemuOpts(s.address, 'alpha'), '-O', 'raw', path.join(work, 'out.raw')]);
  sameBytes(t, await readFile(path.join(work, 'out.raw')), image, 'image read back through qemu-img');
  const qinfo = JSON.parse(await toolOk(t, 'qemu-img', ['info', '--output=json', ...qemuCreds(f.alice.dir), '--image-opts', qemuOpts(s.address, 'alpha')])) as { 'virtual-size': number };
  t.is(qinfo['virtual-size'], 4 * MiB);
  const qForbidden = await tool('qemu-img', ['info', ...qemuCreds(f.alice.dir), '--image-opts', qemuOpts(s.address, 'bravo')]);
  t.not(qForbidden.code, 0);

  // carol's certificate is revoked
  const revokedList = await tool('nbdinfo', ['--list', nbds(s.address, '', f.carol.dir)]);
  t.not(revokedList.code, 0, revokedList.stdout);
  const revokedQemu = await tool('qemu-img', ['info', ...qemuCreds(f.carol.dir), '--image-opts', qemuOpts(s.address, 'bravo')]);
  t.not(revokedQemu.code, 0, revokedQemu.stdout);
  await eventually(() => s.events.filter((e) => e.event === 'tls-upgrade-failed' && e.detail?.['code'] === ErrorCode.CertRevoked).length === 2, 'both revocations logged');
  t.false(s.events.some((e) => e.event === 'transmission-start' && e.detail?.['clientName'] === 'carol'));
});
