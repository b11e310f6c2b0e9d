/**
 * The TLS guard of the LDAP connection against servers that misbehave: fake LDAP servers on
 * loopback that refuse StartTLS, pretend to accept it and go on in plain text, or never answer.
 * Whatever they do, the directory is unavailable and no password reaches them.
 */
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { LdapDirectory } from '../../keymgr/ldap-directory.ts';
import { createCa } from '../../keymgr/pki.ts';

type Behaviour = 'refuse-starttls' | 'fake-starttls' | 'silent';

interface FakeServer {
  readonly port: number;
  /** Everything every client sent. */
  received(): Buffer;
  connections(): number;
  close(): Promise<void>;
}

/** The message ID of the first LDAPMessage in `data` (short-form lengths suffice for our requests). */
function messageId(data: Buffer): number {
  let i = 1;
  const first = data[i] ?? 0;
  i += first & 0x80 ? 1 + (first & 0x7f) : 1;
  if (data[i] !== 0x02) throw new Error('not an LDAPMessage');
  const length = data[i + 1] ?? 0;
  let id = 0;
  for (let k = 0; k < length; k++) id = id * 256 + (data[i + 2 + k] ?? 0);
  return id;
}

/** LDAPMessage { messageID, extendedResp { resultCode, matchedDN "", diagnosticMessage "" } }. */
function extendedResponse(id: number, resultCode: number): Buffer {
  return Buffer.from([0x30, 0x0c, 0x02, 0x01, id, 0x78, 0x07, 0x0a, 0x01, resultCode, 0x04, 0x00, 0x04, 0x00]);
}

async function startFakeServer(behaviour: Behaviour): Promise<FakeServer> {
  const chunks: Buffer[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    let answered = false;
    socket.on('data', (data: Buffer) => {
      chunks.push(data);
      if (behaviour === 'silent' || answered) {
        // After the fake StartTLS "success", answer the TLS ClientHello with plain LDAP-ish bytes.
        if (answered && behaviour === 'fake-starttls') socket.write(Buffer.from('0\x03\x02\x01\x01 not TLS'));
        return;
      }
      answered = true;
      socket.write(extendedResponse(messageId(data), behaviour === 'refuse-starttls' ? 2 : 0));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    received: () => Buffer.concat(chunks),
    connections: () => connections,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

const caPem = createCa({ commonName: 'stripvault ldap connection test CA', validDays: 30 }).then((ca) => ca.caCertPem);
const servicePassword = 'service-Secret-for-fake-servers';
const userPassword = 'user-Secret-for-fake-servers';

async function directoryFor(url: string): Promise<LdapDirectory> {
  return new LdapDirectory({
    url,
    caCertificatePem: await caPem,
    serviceBindDn: 'cn=svc,dc=example,dc=test',
    serviceBindPassword: servicePassword,
    userSearchBase: 'ou=people,dc=example,dc=test',
    clientSearchBase: 'ou=clients,dc=example,dc=test',
    connectTimeoutMs: 500,
    operationTimeoutMs: 500,
  });
}

for (const behaviour of ['refuse-starttls', 'fake-starttls', 'silent'] as const) {
  test(`StartTLS against a server that is ${behaviour}: unavailable, no password sent`, async (t) => {
    const fake = await startFakeServer(behaviour);
    const directory = await directoryFor(`ldap://127.0.0.1:${fake.port}`);
    try {
      for (const call of [
        () => directory.authenticate('alice', userPassword),
        () => directory.isMember('cn=g,dc=example,dc=test', { kind: 'user', name: 'alice' }),
        () => directory.members('cn=g,dc=example,dc=test'),
      ]) {
        const error = await t.throwsAsync(call());
        t.true(isStripvaultError(error, ErrorCode.DirectoryUnavailable), String(error));
      }
      t.true(fake.connections() >= 3, 'the server was asked');
      const received = fake.received().toString('latin1');
      t.true(received.length > 0);
      t.false(received.includes(servicePassword));
      t.false(received.includes(userPassword));
      t.false(received.includes('cn=svc'), 'no bind request at all');
    } finally {
      await directory.close();
      await fake.close();
    }
  });
}

test('LDAPS against a server that never completes the handshake: unavailable', async (t) => {
  const fake = await startFakeServer('silent');
  const directory = await directoryFor(`ldaps://127.0.0.1:${fake.port}`);
  try {
    const error = await t.throwsAsync(directory.authenticate('alice', userPassword));
    t.true(isStripvaultError(error, ErrorCode.DirectoryUnavailable), String(error));
    t.false(fake.received().toString('latin1').includes(userPassword));
  } finally {
    await directory.close();
    await fake.close();
  }
});

test('nothing listening: unavailable', async (t) => {
  const fake = await startFakeServer('silent');
  const port = fake.port;
  await fake.close();
  for (const url of [`ldap://127.0.0.1:${port}`, `ldaps://127.0.0.1:${port}`]) {
    const directory = await directoryFor(url);
    const error = await t.throwsAsync(directory.authenticate('alice', userPassword));
    t.true(isStripvaultError(error, ErrorCode.DirectoryUnavailable), String(error));
    await directory.close();
  }
});
