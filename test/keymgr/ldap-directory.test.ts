/**
 * LdapDirectory against a real OpenLDAP slapd (test/helpers/slapd.ts), over LDAPS and StartTLS.
 * Tests that change the directory work on groups of their own, since ava runs them concurrently.
 */
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { inspect } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { Client } from 'ldapts';
import { ErrorCode, isStripvaultError, type ErrorCode as ErrorCodeValue } from '../../appliance/errors.ts';
import type { DirectoryMember } from '../../keymgr/directory.ts';
import type { LdapDirectoryOptions } from '../../keymgr/ldap-config.ts';
import { openLdapConnection } from '../../keymgr/ldap-connection.ts';
import { LdapDirectory, ldapNameCharsMax } from '../../keymgr/ldap-directory.ts';
import { ldapDnCharsMax } from '../../keymgr/ldap-dn.ts';
import { slapdFixture as f, startSlapd, type SlapdServer } from '../helpers/slapd.ts';

let server: SlapdServer | undefined;

test.before(async () => {
  server = await startSlapd();
});

test.after.always(async () => {
  await server?.stop();
});

function slapd(): SlapdServer {
  if (server === undefined) throw new Error('slapd did not start');
  return server;
}

const modes = ['ldaps', 'starttls'] as const;
type Mode = (typeof modes)[number];

function options(overrides: Partial<LdapDirectoryOptions> = {}, mode: Mode = 'ldaps'): LdapDirectoryOptions {
  const s = slapd();
  return {
    url: mode === 'ldaps' ? s.ldapsUrl : s.ldapUrl,
    caCertificatePem: s.caCertificatePem,
    serviceBindDn: f.serviceDn,
    serviceBindPassword: f.servicePassword,
    userSearchBase: f.peopleBase,
    clientSearchBase: f.clientsBase,
    ...overrides,
  };
}

async function withDirectory<T>(
  fn: (directory: LdapDirectory) => Promise<T>,
  overrides: Partial<LdapDirectoryOptions> = {},
  mode: Mode = 'ldaps',
): Promise<T> {
  const directory = new LdapDirectory(options(overrides, mode));
  try {
    return await fn(directory);
  } finally {
    await directory.close();
  }
}

async function rejectsWith(t: ExecutionContext, promise: Promise<unknown>, code: ErrorCodeValue): Promise<unknown> {
  const error = await t.throwsAsync(promise);
  t.true(isStripvaultError(error, code), `expected ${code}, got ${inspect(error)}`);
  return error;
}

async function refusedLogin(t: ExecutionContext, directory: LdapDirectory, user: string, password: string): Promise<void> {
  const error = await rejectsWith(t, directory.authenticate(user, password), ErrorCode.AuthFailed);
  // One message and nothing else for every refusal: the answer must not tell the reasons apart.
  t.is((error as Error).message, 'authentication failed', JSON.stringify(user));
  t.is(isStripvaultError(error) ? error.detail : 'not ours', undefined);
}

const byKindAndName = (a: DirectoryMember, b: DirectoryMember): number =>
  a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name);

let groupCount = 0;
/** A new groupOfNames of this test's own, so concurrent tests do not see its changes. */
async function createGroup(members: readonly string[]): Promise<string> {
  const dn = `cn=test-group-${++groupCount},${f.groupsBase}`;
  await slapd().asAdmin((client) => client.add(dn, { objectClass: 'groupOfNames', cn: `test-group-${groupCount}`, member: [...members] }));
  return dn;
}

for (const mode of modes) {
  test(`a user logs in with the right password (${mode})`, async (t) => {
    const user = await withDirectory((d) => d.authenticate('alice', f.users.alice.password), {}, mode);
    t.deepEqual(user, { name: 'alice', ref: f.users.alice.dn });
  });

  test(`wrong CA: the server is not trusted and nothing is sent (${mode})`, async (t) => {
    await withDirectory(
      async (d) => {
        const error = await rejectsWith(t, d.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable);
        t.regex(String(isStripvaultError(error) ? error.detail?.['reason'] : ''), /certificate/);
        await rejectsWith(t, d.isMember(f.groups.finance, { kind: 'user', name: 'alice' }), ErrorCode.DirectoryUnavailable);
      },
      { caCertificatePem: slapd().foreignCaCertificatePem },
      mode,
    );
  });
}

test('the login name is looked up as the directory spells it, case-insensitively', async (t) => {
  const user = await withDirectory((d) => d.authenticate('ALICE', f.users.alice.password));
  t.deepEqual(user, { name: 'alice', ref: f.users.alice.dn });
});

test('a name made of filter syntax logs in when it is exactly an entry name', async (t) => {
  await withDirectory(async (d) => {
    const user = await d.authenticate(f.users.odd.name, f.users.odd.password);
    t.is(user.name, f.users.odd.name);
    // Its prefix followed by a star is not a wildcard.
    await refusedLogin(t, d, 'odd(1)*', f.users.odd.password);
    await refusedLogin(t, d, 'odd(1)*x*', f.users.odd.password);
  });
});

test('a wrong password is refused', async (t) => {
  await withDirectory(async (d) => {
    await refusedLogin(t, d, 'alice', f.users.bob.password);
    await refusedLogin(t, d, 'alice', `${f.users.alice.password}x`);
    await refusedLogin(t, d, 'bob', f.users.alice.password);
  });
});

test('an unknown user, and a name shared by two entries, are refused', async (t) => {
  await withDirectory(async (d) => {
    await refusedLogin(t, d, 'mallory', 'whatever-password');
    await refusedLogin(t, d, 'dup', f.users.dup.password);
    await refusedLogin(t, d, 'dup', f.users.dupContractor.password);
    // A client entry is not a user.
    await refusedLogin(t, d, 'app1', 'app1-has-no-password');
  });
});

test('malformed names are refused', async (t) => {
  await withDirectory(async (d) => {
    for (const name of ['', ' alice', 'alice ', 'al\nice', 'alice\u0000', 'a\u007f', 'a\u0085', '\ud800', 'a'.repeat(ldapNameCharsMax + 1)]) {
      await refusedLogin(t, d, name, f.users.alice.password);
    }
  });
});

test('an empty password is refused before the server is asked, though the server would accept it', async (t) => {
  const s = slapd();
  // The server: a bind as Alice with an empty password is an "unauthenticated bind", and succeeds.
  const raw = new Client({ url: s.ldapsUrl, tlsOptions: { ca: s.caCertificatePem }, timeout: 5000, connectTimeout: 5000 });
  try {
    await raw.bind(f.users.alice.dn, '');
    t.pass('slapd accepted an empty-password bind');
  } finally {
    await raw.unbind();
  }
  await withDirectory(async (d) => {
    for (const password of ['', ' ', '\t\n ']) await refusedLogin(t, d, 'alice', password);
  });
  // The guard runs before any connection: with nothing listening, the answer is still AUTH_FAILED.
  const nowhere = new LdapDirectory(options({ url: 'ldaps://127.0.0.1:1', connectTimeoutMs: 1000 }));
  await refusedLogin(t, nowhere, 'alice', '');
  await rejectsWith(t, nowhere.authenticate('alice', 'non-empty'), ErrorCode.DirectoryUnavailable);
  await nowhere.close();
});

const injections = [
  '*',
  'ali*',
  'a*e',
  '*)(uid=*',
  'admin)(uid=*',
  '*)(|(uid=*',
  'alice)(uid=*',
  'alice)(|(uid=*)',
  '(uid=alice)',
  'alice\\',
  'alice\\29',
  '\\2a',
  'alice\u0000',
  'alice\u0000)(uid=*',
  'alic(e',
];

test('filter injection matches nobody', async (t) => {
  await withDirectory(async (d) => {
    for (const name of injections) {
      // With Alice's or Admin's password: a name that matched either of them would log in.
      await refusedLogin(t, d, name, f.users.alice.password);
      await refusedLogin(t, d, name, f.users.admin.password);
      t.false(await d.isMember(f.groups.finance, { kind: 'user', name }), JSON.stringify(name));
      t.false(await d.isMember(f.groups.finance, { kind: 'client', name }), JSON.stringify(name));
    }
  });
});

test('isMember answers from the group entry, for users and clients', async (t) => {
  await withDirectory(async (d) => {
    const finance = f.groups.finance;
    t.true(await d.isMember(finance, { kind: 'user', name: 'alice' }));
    t.true(await d.isMember(finance, { kind: 'user', name: 'dave' }));
    t.true(await d.isMember(finance, { kind: 'client', name: 'app1' }));
    t.false(await d.isMember(finance, { kind: 'user', name: 'bob' }));
    t.false(await d.isMember(finance, { kind: 'client', name: 'app2' }));
    // Same name, other kind: the user alice is in finance, the client alice is not (and vice versa in ops).
    t.false(await d.isMember(finance, { kind: 'client', name: 'alice' }));
    t.true(await d.isMember(f.groups.ops, { kind: 'client', name: 'alice' }));
    t.false(await d.isMember(f.groups.ops, { kind: 'user', name: 'alice' }));
    // Group DNs are compared by the server, not as strings.
    t.true(await d.isMember('CN=Finance, OU=Groups, DC=stripvault, DC=test', { kind: 'user', name: 'alice' }));
  });
});

test('unknown groups and members are not members; malformed ones too', async (t) => {
  await withDirectory(async (d) => {
    t.false(await d.isMember(`cn=nope,${f.groupsBase}`, { kind: 'user', name: 'alice' }));
    t.false(await d.isMember('dc=elsewhere,dc=invalid', { kind: 'user', name: 'alice' }));
    t.false(await d.isMember(f.groups.finance, { kind: 'user', name: 'ghost' }));
    t.false(await d.isMember(f.groups.finance, { kind: 'user', name: 'dup' }));
    t.false(await d.isMember(f.groups.finance, { kind: 'user', name: '' }));
    t.false(await d.isMember(f.groups.finance, { kind: 'admin', name: 'alice' } as unknown as DirectoryMember));
    t.false(await d.isMember(f.groups.finance, null as unknown as DirectoryMember));
    t.deepEqual(await d.members(`cn=nope,${f.groupsBase}`), []);
  });
});

test('malformed group DNs are refused as invalid arguments', async (t) => {
  await withDirectory(async (d) => {
    for (const group of ['', 'finance', 'cn=', 'cn=a,,dc=b', 'cn=a;b', `cn=${'a'.repeat(ldapDnCharsMax)}`, 'cn=a\u0000']) {
      await rejectsWith(t, d.isMember(group, { kind: 'user', name: 'alice' }), ErrorCode.InvalidArgument);
      await rejectsWith(t, d.members(group), ErrorCode.InvalidArgument);
    }
  });
});

test('members maps member DNs back to users and clients, skipping dangling ones', async (t) => {
  await withDirectory(async (d) => {
    const finance = await d.members(f.groups.finance);
    t.deepEqual([...finance].sort(byKindAndName), [
      { kind: 'client', name: 'app1' },
      { kind: 'user', name: 'alice' },
      { kind: 'user', name: 'dave' },
    ]);
    t.true(Object.isFrozen(finance));
    const ops = await d.members(f.groups.ops);
    t.deepEqual([...ops].sort(byKindAndName), [
      { kind: 'client', name: 'alice' },
      { kind: 'user', name: 'bob' },
    ]);
    // Every listed member is a member by isMember too.
    for (const member of finance) t.true(await d.isMember(f.groups.finance, member));
    for (const member of ops) t.true(await d.isMember(f.groups.ops, member));
  });
});

test('memberUid groups (posixGroup) hold names', async (t) => {
  await withDirectory(
    async (d) => {
      t.is(d.config.membershipValue, 'name');
      t.true(await d.isMember(f.groups.legacy, { kind: 'user', name: 'alice' }));
      t.true(await d.isMember(f.groups.legacy, { kind: 'client', name: 'app2' }));
      t.false(await d.isMember(f.groups.legacy, { kind: 'user', name: 'bob' }));
      t.false(await d.isMember(f.groups.legacy, { kind: 'user', name: 'a*' }));
      // A bare name cannot say which kind it means: the client alice counts too.
      t.deepEqual([...(await d.members(f.groups.legacy))].sort(byKindAndName), [
        { kind: 'client', name: 'alice' },
        { kind: 'client', name: 'app2' },
        { kind: 'user', name: 'alice' },
      ]);
    },
    { membershipAttribute: 'memberUid' },
  );
});

test('a membership added or removed at run time is seen on the next call (StartTLS)', async (t) => {
  const group = await createGroup([f.users.carol.dn]);
  await withDirectory(
    async (d) => {
      const bob = { kind: 'user', name: 'bob' } as const;
      t.false(await d.isMember(group, bob));
      await slapd().addGroupValue(group, f.users.bob.dn);
      t.true(await d.isMember(group, bob));
      t.deepEqual([...(await d.members(group))].sort(byKindAndName), [
        { kind: 'user', name: 'bob' },
        { kind: 'user', name: 'carol' },
      ]);
      await slapd().removeGroupValue(group, f.users.bob.dn);
      t.false(await d.isMember(group, bob));
      t.deepEqual(await d.members(group), [{ kind: 'user', name: 'carol' }]);
    },
    {},
    'starttls',
  );
});

test('with a cache, an answer is reused until its TTL passes, then asked again', async (t) => {
  const group = await createGroup([f.users.carol.dn, f.users.bob.dn]);
  let now = 1_000_000;
  const directory = new LdapDirectory(options({ cacheMs: 10_000 }), { now: () => now });
  try {
    const bob = { kind: 'user', name: 'bob' } as const;
    t.true(await directory.isMember(group, bob));
    t.is((await directory.members(group)).length, 2);
    await slapd().removeGroupValue(group, f.users.bob.dn);
    now += 9_999;
    t.true(await directory.isMember(group, bob), 'cached');
    t.is((await directory.members(group)).length, 2, 'cached');
    now += 1;
    t.false(await directory.isMember(group, bob));
    t.deepEqual(await directory.members(group), [{ kind: 'user', name: 'carol' }]);
  } finally {
    await directory.close();
  }
});

for (const mode of modes) {
  test(`a certificate for another host is refused (${mode})`, async (t) => {
    const url = mode === 'ldaps' ? slapd().otherHostLdapsUrl : slapd().otherHostLdapUrl;
    await withDirectory(async (d) => {
      const error = await rejectsWith(t, d.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable);
      t.regex(String(isStripvaultError(error) ? error.detail?.['reason'] : ''), /does not match/);
    }, { url });
  });
}

/** Drops a client's current socket, as a server or network closing an idle connection would. */
async function dropSocket(client: Client): Promise<void> {
  const socket = Reflect.get(client, 'socket') as Socket | undefined;
  if (socket === undefined) throw new Error('ldapts keeps its socket elsewhere now; update this test');
  const closed = once(socket, 'close');
  socket.destroy();
  await closed;
}

for (const mode of modes) {
  test(`a dropped connection is not reopened behind our back (${mode})`, async (t) => {
    const config = new LdapDirectory(options({ operationTimeoutMs: 1000 }, mode)).config;
    const connection = await openLdapConnection(config);
    try {
      await dropSocket(connection.client);
      // ldapts would reconnect transparently; a new plain socket on ldap:// would carry this bind
      // in clear text. Ours allows one socket per connection, so the bind fails instead.
      const error = await t.throwsAsync(connection.client.bind(f.users.alice.dn, f.users.alice.password));
      if (mode === 'ldaps') t.regex(String(error), /reconnect refused/);
    } finally {
      await connection.close();
    }
  });
}

test('a wrong service password or a missing search base makes the directory unavailable', async (t) => {
  await withDirectory(
    async (d) => {
      await rejectsWith(t, d.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable);
      await rejectsWith(t, d.isMember(f.groups.finance, { kind: 'user', name: 'alice' }), ErrorCode.DirectoryUnavailable);
      await rejectsWith(t, d.members(f.groups.finance), ErrorCode.DirectoryUnavailable);
    },
    { serviceBindPassword: 'not-the-service-password' },
  );
  await withDirectory(
    (d) => rejectsWith(t, d.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable),
    { userSearchBase: `ou=nobody,${f.suffix}` },
  );
});

test('passwords never appear in errors', async (t) => {
  const secrets = [f.users.alice.password, f.servicePassword, 'wrong-Password-123'];
  const errors: unknown[] = [];
  const collect = async (promise: Promise<unknown>): Promise<void> => {
    errors.push(await t.throwsAsync(promise));
  };
  await withDirectory((d) => collect(d.authenticate('alice', 'wrong-Password-123')));
  await withDirectory((d) => collect(d.authenticate('alice', f.users.alice.password)), { caCertificatePem: slapd().foreignCaCertificatePem });
  await withDirectory((d) => collect(d.authenticate('alice', f.users.alice.password)), { serviceBindPassword: 'wrong-Password-123' });
  t.is(errors.length, 3);
  for (const error of errors) {
    const shown = `${inspect(error, { depth: 10 })} ${JSON.stringify(error)} ${String(error)}`;
    for (const secret of secrets) t.false(shown.includes(secret));
  }
  const directory = new LdapDirectory(options());
  const shown = `${inspect(directory, { depth: 10 })} ${JSON.stringify(directory)} ${JSON.stringify(directory.config)}`;
  t.false(shown.includes(f.servicePassword));
  await directory.close();
});

test('a stopped server makes the directory unavailable; callers fail closed', async (t) => {
  const own = await startSlapd();
  const directory = new LdapDirectory({ ...options(), url: own.ldapUrl });
  try {
    t.true(await directory.isMember(f.groups.finance, { kind: 'user', name: 'alice' }));
    await own.stop();
    await rejectsWith(t, directory.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable);
    await rejectsWith(t, directory.isMember(f.groups.finance, { kind: 'user', name: 'alice' }), ErrorCode.DirectoryUnavailable);
    await rejectsWith(t, directory.members(f.groups.finance), ErrorCode.DirectoryUnavailable);
  } finally {
    await directory.close();
    await own.stop();
  }
});

test('a closed directory answers nothing', async (t) => {
  const directory = new LdapDirectory(options());
  await directory.close();
  await rejectsWith(t, directory.isMember(f.groups.finance, { kind: 'user', name: 'alice' }), ErrorCode.DirectoryUnavailable);
  await rejectsWith(t, directory.authenticate('alice', f.users.alice.password), ErrorCode.DirectoryUnavailable);
});
