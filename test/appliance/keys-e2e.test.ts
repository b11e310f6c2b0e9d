/**
 * The key manager wired into a running appliance (`stripvault serve`, in-process): two COIs, two
 * clients with certificates from the appliance CA, each lists and opens only its own virtual
 * disk with real clients (nbdinfo, qemu-img); membership changes act without a restart; a revoked
 * certificate and a plain-text non-loopback connection are refused; a sealed appliance says so;
 * a shredded volume opens by no path and the verifier finds no key copy. An LDAP-mapped COI
 * against a real slapd grants and removes access as the group changes.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import type { Appliance } from '../../appliance/appliance.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { connectNbd } from '../../appliance/nbd/client.ts';
import { sealedMessage } from '../../appliance/nbd/handshake.ts';
import { Option, Reply } from '../../appliance/nbd/protocol.ts';
import type { NbdAddress } from '../../appliance/nbd/server.ts';
import { VirtualDisks } from '../../appliance/virtual-disks.ts';
import { virtualDiskRegistry } from '../../appliance/virtual-disk-exports.ts';
import { Volume } from '../../appliance/volume/volume.ts';
import { serve } from '../../cli/serve.ts';
import { devShareFileName } from '../../keymgr/dev-unseal.ts';
import { LdapDirectory } from '../../keymgr/ldap-directory.ts';
import { RawPeer, tool, toolOk } from '../nbd/helpers.ts';
import { devAppliance } from '../helpers/appliance.ts';
import { slapdFixture, startSlapd } from '../helpers/slapd.ts';
import { withTempDir } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;
const officer = { name: 'officer:test' };

interface Running {
  appliance: Appliance;
  address: { host: string; port: number };
  stop(): Promise<void>;
}

async function running(t: ExecutionContext, dataDir: string, nbd: string): Promise<Running> {
  let release!: () => void;
  const stop = new Promise<void>((r) => (release = r));
  let appliance: Appliance | undefined;
  let address: NbdAddress | undefined;
  const sink = new PassThrough();
  sink.resume();
  const done = serve({
    dataDir,
    store: undefined,
    nbd,
    api: 'off',
    scrubEvery: 'off',
    io: { stdin: new PassThrough(), stdout: sink, stderr: sink },
    stop,
    onListening: (a) => (address = a),
    onAppliance: (a) => (appliance = a),
  });
  for (let i = 0; i < 600 && appliance === undefined; i++) {
    const early = await Promise.race([done.then(() => 'exited' as const), new Promise((r) => setTimeout(r, 100))]);
    if (early === 'exited') throw new Error('serve exited before listening');
  }
  if (!appliance || !address || !('host' in address)) throw new Error('serve did not start');
  const r: Running = {
    appliance,
    address,
    stop: async () => {
      release();
      await done;
    },
  };
  t.teardown(() => r.stop());
  return r;
}

async function certDir(root: string, name: string, appliance: Appliance): Promise<{ dir: string; serial: string }> {
  const issued = await appliance.keys.issueClientCertificate(name, {}, officer);
  const dir = join(root, `certs-${name}`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'ca-cert.pem'), issued.caCertificatePem);
  await writeFile(join(dir, 'client-cert.pem'), issued.certificatePem);
  await writeFile(join(dir, 'client-key.pem'), issued.privateKeyPem, { mode: 0o600 });
  return { dir, serial: issued.serial };
}

async function listAs(r: Running, dir: string): Promise<{ code: number | null; names: string[]; stderr: string }> {
  const out = await tool('nbdinfo', ['--list', '--json', `nbds://127.0.0.1:${r.address.port}/?tls-certificates=${dir}`]);
  if (out.code !== 0) return { code: out.code, names: [], stderr: out.stderr };
  const parsed = JSON.parse(out.stdout) as { exports: Array<{ 'export-name': string }> };
  return { code: 0, names: parsed.exports.map((e) => e['export-name']).sort(), stderr: out.stderr };
}

function nonLoopbackIpv4(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

test('two COIs, two certificates: each client sees and opens only its disk; revocation, membership, sealing and plain text behave', async (t) => {
  t.timeout(240_000);
  await withTempDir(async (root) => {
    const r = await running(t, join(root, 'data'), '0.0.0.0:0');
    const a = r.appliance;
    const disks = new VirtualDisks(a);
    for (const coi of ['red', 'blue']) await a.keys.createCoi(coi, {}, officer);
    for (let i = 0; i < 3; i++) await a.addDevice({ name: `e${i}`, path: join(root, `e${i}.img`), createBytes: 64 * MiB });
    for (const coi of ['red', 'blue']) {
      await a.createVolume({ name: `${coi}-disk`, m: 2, sizeBytes: 4 * MiB, blockBytes: 4096, devices: ['e0', 'e1', 'e2'], coi, regionsZeroed: true }, officer);
    }
    await a.keys.addMember('red', { kind: 'client', name: 'alice' }, officer);
    await a.keys.addMember('blue', { kind: 'client', name: 'bob' }, officer);
    const alice = await certDir(root, 'alice', a);
    const bob = await certDir(root, 'bob', a);

    t.deepEqual((await listAs(r, alice.dir)).names, ['red-disk']);
    t.deepEqual((await listAs(r, bob.dir)).names, ['blue-disk']);

    // qemu-img writes and reads alice's disk over TLS; bob's disk does not open for her.
    const image = join(root, 'in.raw');
    const data = randomBytes(4 * MiB);
    await writeFile(image, data);
    const creds = (dir: string) => ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`];
    const target = (name: string) => `driver=nbd,host=127.0.0.1,port=${r.address.port},export=${name},tls-creds=tls0`;
    await toolOk(t, 'qemu-img', ['convert', '-n', ...creds(alice.dir), '-f', 'raw', image, '--target-image-opts', target('red-disk')]);
    const back = join(root, 'out.raw');
    await toolOk(t, 'qemu-img', ['convert', ...creds(alice.dir), '--image-opts', target('red-disk'), '-O', 'raw', back]);
    t.true((await readFile(back)).equals(data));
    t.not((await tool('qemu-img', ['info', ...creds(alice.dir), '--image-opts', target('blue-disk')])).code, 0);

    // Membership changes act on the next connection, no restart.
    await a.keys.removeMember('red', { kind: 'client', name: 'alice' }, officer);
    await a.keys.addMember('blue', { kind: 'client', name: 'alice' }, officer);
    t.deepEqual((await listAs(r, alice.dir)).names, ['blue-disk']);

    // A revoked certificate is refused at the handshake.
    await a.keys.revokeCertificate(bob.serial, officer);
    t.not((await listAs(r, bob.dir)).code, 0);

    // Presenting red-disk to blue too (many-to-one): alice sees both; withdrawing takes it away again.
    await disks.presentVolume({ name: 'red-for-blue', volume: 'red-disk', coi: 'blue' }, officer);
    t.deepEqual((await listAs(r, alice.dir)).names, ['blue-disk', 'red-for-blue']);
    await disks.withdrawVirtualDisk('red-for-blue', officer);
    t.deepEqual((await listAs(r, alice.dir)).names, ['blue-disk']);

    // Plain text from a non-loopback address: TLS required for every option.
    const ip = nonLoopbackIpv4();
    if (ip === undefined) t.fail('this machine has no non-loopback IPv4 address to test from');
    else {
      const p = await RawPeer.open({ host: ip, port: r.address.port });
      p.option(Option.List);
      t.is((await p.optionReply()).replyType, Reply.ErrTlsReqd);
      p.destroy();
    }

    // Sealed: nothing is served, and clients are told why.
    await a.seal(officer);
    // (loopback, plain text: the embedded default's COI lets the `loopback` client open `default`)
    t.not((await tool('nbdinfo', [`nbd://127.0.0.1:${r.address.port}/default`])).code, 0);
    const go = await t.throwsAsync(connectNbd({ host: '127.0.0.1', port: r.address.port }, 'default'));
    t.regex(go?.message ?? '', /NBD_REP_ERR_POLICY/);
    t.true(go?.message.includes(sealedMessage));
    t.not((await listAs(r, alice.dir)).code, 0, 'no TLS while sealed');
    await a.keys.submitShare((await readFile(join(root, 'data', devShareFileName), 'utf8')).trim(), officer);
    t.deepEqual((await listAs(r, alice.dir)).names, ['blue-disk']);
  });
});

test('crypto-shred: the volume opens by no path, even with every remaining key; the verifier finds no copy', async (t) => {
  t.timeout(120_000);
  await withTempDir(async (root) => {
    const a = await devAppliance(join(root, 'data'));
    t.teardown(() => a.close());
    const disks = new VirtualDisks(a);
    for (let i = 0; i < 3; i++) await a.addDevice({ name: `s${i}`, path: join(root, `s${i}.img`), createBytes: 32 * MiB });
    await a.keys.createCoi('team', {}, officer);
    const doomed = await a.createVolume({ name: 'doomed', m: 2, sizeBytes: 4 * MiB, blockBytes: 4096, devices: ['s0', 's1', 's2'], coi: 'team', regionsZeroed: true }, officer);
    const kept = await a.createVolume({ name: 'kept', m: 2, sizeBytes: 4 * MiB, blockBytes: 4096, devices: ['s0', 's1', 's2'], coi: 'team', regionsZeroed: true }, officer);
    const secret = randomBytes(64 * 1024);
    await (await a.openVolume('doomed')).write(0, secret);
    await (await a.openVolume('kept')).write(0, secret);
    t.false((await disks.verifyShred('doomed')).clean, 'not shredded yet');

    const report = await disks.shredVolume('doomed', officer);
    t.true(report.destroyedKeyIds.length >= 1);
    const verdict = await disks.verifyShred('doomed');
    t.deepEqual(verdict.findings, []);
    t.true(verdict.clean);

    // The COI's other volume was re-wrapped under a fresh key and still reads.
    t.true((await (await a.openVolume('kept')).read(0, secret.length)).equals(secret));
    // The master key is here (unsealed), every strip is here: no key left opens the shredded one.
    await t.throwsAsync(a.openVolume('doomed'), { code: ErrorCode.VolumeUnavailable, message: /no key/ } as never, 'no virtual disk presents it: the key manager has no key for it');
    const allKeys = [];
    for (const coi of await a.keys.listCois()) allKeys.push(await a.keys.wrapperForCoi(coi.name));
    const locations = await Promise.all(doomed.strips.map(async (s) => ({ device: await a.deviceById(s.deviceId), base: s.offsetBytes })));
    await t.throwsAsync(Volume.open({ locations, wrappers: allKeys, expectId: doomed.id }), { code: ErrorCode.VolumeUnavailable } as never);
    t.is(kept.name, 'kept');
  });
});

test('an LDAP-mapped COI: group membership in a real slapd grants and removes access to a virtual disk', async (t) => {
  t.timeout(120_000);
  const slapd = await startSlapd();
  t.teardown(() => slapd.stop());
  const f = slapdFixture;
  const directory = new LdapDirectory({
    url: slapd.ldapsUrl,
    caCertificatePem: slapd.caCertificatePem,
    serviceBindDn: f.serviceDn,
    serviceBindPassword: f.servicePassword,
    userSearchBase: f.peopleBase,
    clientSearchBase: f.clientsBase,
  });
  await withTempDir(async (root) => {
    const a = await devAppliance(join(root, 'data'), { directory });
    t.teardown(() => a.close());
    for (let i = 0; i < 2; i++) await a.addDevice({ name: `l${i}`, path: join(root, `l${i}.img`), createBytes: 16 * MiB });
    await a.keys.createCoi('rotating', { ldapGroup: f.groups.rotating }, officer);
    await a.createVolume({ name: 'ldap-disk', m: 1, sizeBytes: 2 * MiB, blockBytes: 4096, devices: ['l0', 'l1'], coi: 'rotating', regionsZeroed: true }, officer);
    const registry = virtualDiskRegistry(a);
    const app1 = { remoteAddress: '192.0.2.7', loopback: false, tls: true, clientName: 'app1' };
    const names = async () => (await Promise.resolve(registry.list(app1))).map((e) => e.name);
    t.deepEqual(await names(), [], 'app1 is not in the group yet');
    t.is(await registry.get('ldap-disk', app1), undefined);
    await slapd.addGroupValue(f.groups.rotating, f.clients.app1);
    t.deepEqual(await names(), ['ldap-disk']);
    t.truthy(await registry.get('ldap-disk', app1));
    await slapd.removeGroupValue(f.groups.rotating, f.clients.app1);
    t.deepEqual(await names(), []);
    // The directory down: access fails closed with a clear code, never granted.
    await slapd.stop();
    await t.throwsAsync(Promise.resolve().then(() => registry.list(app1)), { code: ErrorCode.DirectoryUnavailable } as never);
  });
});
