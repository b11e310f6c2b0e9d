/**
 * A throwaway OpenLDAP server for tests: Debian's slapd, its own slapd.conf and mdb database in a
 * temp dir, listening on 127.0.0.1 only, on a random free port for ldap:// (StartTLS) and another
 * for ldaps://, with a certificate issued by a throwaway CA (keymgr/pki.ts). The directory is
 * loaded offline with slapadd from `slapdFixture` (people, clients, groups, a service account).
 * stop() always removes the directory; an exit hook kills the server if a test process dies
 * without calling it.
 *
 * The server is deliberately configured with `allow bind_anon_dn` (as some production directories
 * are): a simple bind with a DN and an empty password then succeeds, which lets tests prove that
 * the client-side empty-password guard matters.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Attribute, Change, Client } from 'ldapts';
import { createCa, issueServerCertificate, MemoryCertificateRegistry } from '../../keymgr/pki.ts';

export const slapdBinary = '/usr/sbin/slapd';
export const slapaddBinary = '/usr/sbin/slapadd';
export const slapdSchemaDir = '/etc/ldap/schema';
export const slapdModuleDir = '/usr/lib/ldap';
export const slapdStartTimeoutMs = 20_000;
export const slapdStopTimeoutMs = 5_000;
/** Enough of the server log to explain a failed start. */
const logTailBytesMax = 8192;
const pollIntervalMs = 50;
const caValidDays = 60;
const certValidDays = 30;
/** A loopback address the server certificate does not name (it names 127.0.0.1 and localhost). */
const otherHost = '127.0.0.2';

const suffix = 'dc=stripvault,dc=test';

/** The entries every throwaway server starts with; tests refer to them through this object. */
export const slapdFixture = {
  suffix,
  adminDn: `cn=admin,${suffix}`,
  adminPassword: 'admin-secret-7f3a',
  serviceDn: `cn=svc,ou=services,${suffix}`,
  servicePassword: 'service-secret-91b2',
  peopleBase: `ou=people,${suffix}`,
  clientsBase: `ou=clients,${suffix}`,
  groupsBase: `ou=groups,${suffix}`,
  users: {
    alice: { dn: `uid=alice,ou=people,${suffix}`, password: 'alice-pw-Correct-Horse' },
    bob: { dn: `uid=bob,ou=people,${suffix}`, password: 'bob-pw-Battery-Staple' },
    carol: { dn: `uid=carol,ou=people,${suffix}`, password: 'carol-pw-Tr0ub4dor' },
    admin: { dn: `uid=admin,ou=people,${suffix}`, password: 'admin-user-pw-5e6f' },
    /** A legitimate name full of filter syntax: escaping must still find it exactly. */
    odd: { name: 'odd(1)*x\\y', dn: `uid=odd(1)*x\\\\y,ou=people,${suffix}`, password: 'odd-pw-8c9d' },
    /** Two entries under the user base carry uid=dup: a login name must resolve to exactly one. */
    dup: { dn: `uid=dup,ou=people,${suffix}`, password: 'dup-pw-1' },
    dupContractor: { dn: `uid=dup,ou=contractors,ou=people,${suffix}`, password: 'dup-pw-2' },
    /** Its RDN is not the login attribute: members() must read the entry to name it. */
    dave: { dn: `cn=Dave Jones,ou=people,${suffix}`, login: 'dave', password: 'dave-pw-3' },
  },
  clients: {
    app1: `cn=app1,ou=clients,${suffix}`,
    app2: `cn=app2,ou=clients,${suffix}`,
    /** A client with the same name as a user: kinds must not be confused. */
    alice: `cn=alice,ou=clients,${suffix}`,
  },
  groups: {
    /** member: alice, app1, dave and a dangling DN (no such entry). */
    finance: `cn=finance,ou=groups,${suffix}`,
    /** member: bob, the client alice. */
    ops: `cn=ops,ou=groups,${suffix}`,
    /** member: carol. Tests change this one at run time. */
    rotating: `cn=rotating,ou=groups,${suffix}`,
    /** A posixGroup: memberUid holds names (alice, app2). */
    legacy: `cn=legacy,ou=groups,${suffix}`,
  },
  danglingDn: `uid=ghost,ou=people,${suffix}`,
} as const;

function fixtureLdif(): string {
  const f = slapdFixture;
  const u = f.users;
  const person = (dn: string, uid: string, cn: string, password: string): string =>
    `dn: ${dn}\nobjectClass: inetOrgPerson\nuid: ${uid}\ncn: ${cn}\nsn: ${cn}\nuserPassword: ${password}\n`;
  const device = (dn: string, cn: string): string => `dn: ${dn}\nobjectClass: device\ncn: ${cn}\n`;
  const entries = [
    `dn: ${suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: stripvault\no: stripvault test\n`,
    `dn: ou=services,${suffix}\nobjectClass: organizationalUnit\nou: services\n`,
    `dn: ${f.serviceDn}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: svc\nuserPassword: ${f.servicePassword}\n`,
    `dn: ${f.peopleBase}\nobjectClass: organizationalUnit\nou: people\n`,
    `dn: ou=contractors,${f.peopleBase}\nobjectClass: organizationalUnit\nou: contractors\n`,
    `dn: ${f.clientsBase}\nobjectClass: organizationalUnit\nou: clients\n`,
    `dn: ${f.groupsBase}\nobjectClass: organizationalUnit\nou: groups\n`,
    person(u.alice.dn, 'alice', 'Alice', u.alice.password),
    person(u.bob.dn, 'bob', 'Bob', u.bob.password),
    person(u.carol.dn, 'carol', 'Carol', u.carol.password),
    person(u.admin.dn, 'admin', 'Admin User', u.admin.password),
    person(u.odd.dn, u.odd.name, 'Odd', u.odd.password),
    person(u.dup.dn, 'dup', 'Dup One', u.dup.password),
    person(u.dupContractor.dn, 'dup', 'Dup Two', u.dupContractor.password),
    person(u.dave.dn, u.dave.login, 'Dave Jones', u.dave.password),
    device(f.clients.app1, 'app1'),
    device(f.clients.app2, 'app2'),
    device(f.clients.alice, 'alice'),
    `dn: ${f.groups.finance}\nobjectClass: groupOfNames\ncn: finance\nmember: ${u.alice.dn}\nmember: ${f.clients.app1}\n` +
      `member: ${u.dave.dn}\nmember: ${f.danglingDn}\n`,
    `dn: ${f.groups.ops}\nobjectClass: groupOfNames\ncn: ops\nmember: ${u.bob.dn}\nmember: ${f.clients.alice}\n`,
    `dn: ${f.groups.rotating}\nobjectClass: groupOfNames\ncn: rotating\nmember: ${u.carol.dn}\n`,
    `dn: ${f.groups.legacy}\nobjectClass: posixGroup\ncn: legacy\ngidNumber: 5000\nmemberUid: alice\nmemberUid: app2\n`,
  ];
  return entries.join('\n');
}

function slapdConf(dir: string): string {
  const f = slapdFixture;
  return [
    ...['core', 'cosine', 'nis', 'inetorgperson'].map((s) => `include ${join(slapdSchemaDir, `${s}.schema`)}`),
    `modulepath ${slapdModuleDir}`,
    'moduleload back_mdb',
    `pidfile ${join(dir, 'slapd.pid')}`,
    `argsfile ${join(dir, 'slapd.args')}`,
    `TLSCACertificateFile ${join(dir, 'ca.pem')}`,
    `TLSCertificateFile ${join(dir, 'server.pem')}`,
    `TLSCertificateKeyFile ${join(dir, 'server.key')}`,
    // See the module comment: an empty-password bind with a DN succeeds (as anonymous).
    'allow bind_anon_dn',
    'database mdb',
    'maxsize 16777216',
    `suffix "${suffix}"`,
    `rootdn "${f.adminDn}"`,
    `rootpw ${f.adminPassword}`,
    `directory ${join(dir, 'db')}`,
    // Throwaway data: durability only costs test time.
    'dbnosync',
    'access to attrs=userPassword by self write by anonymous auth by * none',
    'access to * by users read by * none',
    '',
  ].join('\n');
}

export interface SlapdServer {
  /** ldap:// URL of the plain listener (StartTLS needed before any password). */
  readonly ldapUrl: string;
  /** ldaps:// URL of the TLS listener. */
  readonly ldapsUrl: string;
  /** ldap:// and ldaps:// on another loopback address, which the server certificate does not name. */
  readonly otherHostLdapUrl: string;
  readonly otherHostLdapsUrl: string;
  /** The CA that issued the server certificate. */
  readonly caCertificatePem: string;
  /** A CA that did not issue the server certificate. */
  readonly foreignCaCertificatePem: string;
  /** An administrator client (StartTLS, bound as the rootdn) for the duration of `fn`. */
  asAdmin<T>(fn: (client: Client) => Promise<T>): Promise<T>;
  /** Adds or removes one value of a group's membership attribute (default `member`). */
  addGroupValue(groupDn: string, value: string, attribute?: string): Promise<void>;
  removeGroupValue(groupDn: string, value: string, attribute?: string): Promise<void>;
  stop(): Promise<void>;
}

interface ThrowawayPki {
  caCertPem: string;
  foreignCaCertPem: string;
  serverCertPem: string;
  serverKeyPem: string;
}

let pkiPromise: Promise<ThrowawayPki> | null = null;

/** Key generation is the slow part of a start; one PKI serves every server of a test process. */
function throwawayPki(): Promise<ThrowawayPki> {
  pkiPromise ??= (async () => {
    const [ca, foreign] = await Promise.all([
      createCa({ commonName: 'stripvault slapd test CA', validDays: caValidDays }),
      createCa({ commonName: 'stripvault foreign test CA', validDays: caValidDays }),
    ]);
    const server = await issueServerCertificate(ca, new MemoryCertificateRegistry(), {
      hostNames: ['localhost'],
      ips: ['127.0.0.1'],
      validDays: certValidDays,
    });
    if (server.privateKeyPem === undefined) throw new Error('issueServerCertificate returned no private key');
    return { caCertPem: ca.caCertPem, foreignCaCertPem: foreign.caCertPem, serverCertPem: server.certPem, serverKeyPem: server.privateKeyPem };
  })();
  return pkiPromise;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function childEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' };
}

function run(file: string, args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, env: childEnv() }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} failed: ${error.message}\n${stdout}\n${stderr}`));
      else resolve();
    });
  });
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function startSlapd(): Promise<SlapdServer> {
  for (const binary of [slapdBinary, slapaddBinary]) {
    if (!existsSync(binary)) throw new Error(`${binary} not found: the LDAP tests need OpenLDAP. Install it: apt-get install slapd`);
  }
  const pki = await throwawayPki();
  const dir = mkdtempSync(join(tmpdir(), 'stripvault-slapd-'));
  let child: ChildProcess | null = null;
  let log = '';
  let exited = false;

  const killNow = (): void => {
    if (child !== null && !exited) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killNow);

  const stop = async (): Promise<void> => {
    process.removeListener('exit', killNow);
    if (child !== null && !exited) {
      const running = child;
      const gone = new Promise<void>((resolve) => running.once('exit', () => resolve()));
      running.kill('SIGTERM');
      const timer = setTimeout(() => running.kill('SIGKILL'), slapdStopTimeoutMs);
      await gone;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    mkdirSync(join(dir, 'db'));
    writeFileSync(join(dir, 'ca.pem'), pki.caCertPem);
    writeFileSync(join(dir, 'server.pem'), pki.serverCertPem);
    writeFileSync(join(dir, 'server.key'), pki.serverKeyPem, { mode: 0o600 });
    const confPath = join(dir, 'slapd.conf');
    writeFileSync(confPath, slapdConf(dir));
    const ldifPath = join(dir, 'base.ldif');
    writeFileSync(ldifPath, fixtureLdif());
    await run(slapaddBinary, ['-q', '-f', confPath, '-l', ldifPath], dir);

    const [ldapPort, ldapsPort, otherLdapPort, otherLdapsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const listeners = [
      `ldap://127.0.0.1:${ldapPort}/`,
      `ldaps://127.0.0.1:${ldapsPort}/`,
      `ldap://${otherHost}:${otherLdapPort}/`,
      `ldaps://${otherHost}:${otherLdapsPort}/`,
    ].join(' ');
    // -d keeps slapd in the foreground (a child we can wait for and kill); level 0 logs nothing routine.
    const started = spawn(slapdBinary, ['-d', '0', '-f', confPath, '-h', listeners], {
      cwd: dir,
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    const collect = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-logTailBytesMax);
    };
    started.stdout?.on('data', collect);
    started.stderr?.on('data', collect);
    started.once('exit', () => {
      exited = true;
    });
    started.once('error', (e) => {
      exited = true;
      log += `\nspawn error: ${e.message}`;
    });

    const deadline = Date.now() + slapdStartTimeoutMs;
    const ready = async (): Promise<boolean> =>
      (await canConnect('127.0.0.1', ldapPort)) &&
      (await canConnect('127.0.0.1', ldapsPort)) &&
      (await canConnect(otherHost, otherLdapPort)) &&
      (await canConnect(otherHost, otherLdapsPort));
    while (!(await ready())) {
      if (exited) throw new Error(`slapd exited during startup:\n${log}`);
      if (Date.now() > deadline) throw new Error(`slapd did not accept connections within ${slapdStartTimeoutMs} ms:\n${log}`);
      await sleep(pollIntervalMs);
    }

    const ldapUrl = `ldap://127.0.0.1:${ldapPort}`;
    const asAdmin = async <T>(fn: (client: Client) => Promise<T>): Promise<T> => {
      const client = new Client({ url: ldapUrl, timeout: 5000, connectTimeout: 5000 });
      try {
        await client.startTLS({ ca: pki.caCertPem, host: '127.0.0.1' });
        await client.bind(slapdFixture.adminDn, slapdFixture.adminPassword);
        return await fn(client);
      } finally {
        await client.unbind().catch(() => {});
      }
    };
    const changeGroup = (operation: 'add' | 'delete', groupDn: string, value: string, attribute: string): Promise<void> =>
      asAdmin((client) =>
        client.modify(groupDn, new Change({ operation, modification: new Attribute({ type: attribute, values: [value] }) })),
      );

    return {
      ldapUrl,
      ldapsUrl: `ldaps://127.0.0.1:${ldapsPort}`,
      otherHostLdapUrl: `ldap://${otherHost}:${otherLdapPort}`,
      otherHostLdapsUrl: `ldaps://${otherHost}:${otherLdapsPort}`,
      caCertificatePem: pki.caCertPem,
      foreignCaCertificatePem: pki.foreignCaCertPem,
      asAdmin,
      addGroupValue: (groupDn, value, attribute = 'member') => changeGroup('add', groupDn, value, attribute),
      removeGroupValue: (groupDn, value, attribute = 'member') => changeGroup('delete', groupDn, value, attribute),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
