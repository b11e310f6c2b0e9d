import { inspect } from 'node:util';
import test, { type ExecutionContext } from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { directoryCacheMsMax } from '../../keymgr/directory.ts';
import {
  isUsablePassword,
  ldapCaPemBytesMax,
  ldapConnectTimeoutMsDefault,
  ldapOperationTimeoutMsDefault,
  ldapPasswordCharsMax,
  ldapTimeoutMsMax,
  ldapTimeoutMsMin,
  ldapUrlCharsMax,
  validateLdapDirectoryOptions,
  type LdapDirectoryOptions,
} from '../../keymgr/ldap-config.ts';
import { LdapDirectory } from '../../keymgr/ldap-directory.ts';
import { createCa, issueServerCertificate, MemoryCertificateRegistry } from '../../keymgr/pki.ts';

const servicePassword = 'Service-Password-Never-Shown';

const pki = (async () => {
  const ca = await createCa({ commonName: 'stripvault ldap config test CA', validDays: 60 });
  const leaf = await issueServerCertificate(ca, new MemoryCertificateRegistry(), { hostNames: ['ldap.example.test'], validDays: 30 });
  return { caPem: ca.caCertPem, leafPem: leaf.certPem };
})();

async function valid(overrides: Record<string, unknown> = {}): Promise<LdapDirectoryOptions> {
  return {
    url: 'ldaps://ldap.example.test',
    caCertificatePem: (await pki).caPem,
    serviceBindDn: 'cn=svc,ou=services,dc=example,dc=test',
    serviceBindPassword: servicePassword,
    userSearchBase: 'ou=people,dc=example,dc=test',
    clientSearchBase: 'ou=clients,dc=example,dc=test',
    ...overrides,
  } as LdapDirectoryOptions;
}

function refused(t: ExecutionContext, options: LdapDirectoryOptions, label: string): void {
  const error = t.throws(() => new LdapDirectory(options), undefined, label);
  t.true(isStripvaultError(error, ErrorCode.InvalidArgument), `${label}: ${inspect(error)}`);
  t.false(inspect(error).includes(servicePassword), label);
}

test('defaults: uid logins, cn clients, member DNs, no cache, named timeouts', async (t) => {
  const directory = new LdapDirectory(await valid());
  const { config } = directory;
  t.is(directory.kind, 'ldap');
  t.is(config.url, 'ldaps://ldap.example.test:636');
  t.is(config.tls, 'ldaps');
  t.is(config.userLoginAttribute, 'uid');
  t.is(config.clientNameAttribute, 'cn');
  t.is(config.membershipAttribute, 'member');
  t.is(config.membershipValue, 'dn');
  t.is(config.cacheMs, 0);
  t.is(config.connectTimeoutMs, ldapConnectTimeoutMsDefault);
  t.is(config.operationTimeoutMs, ldapOperationTimeoutMsDefault);
  t.true(Object.isFrozen(config));
  t.throws(() => {
    (config as { cacheMs: number }).cacheMs = 5;
  });
  // The service password is kept out of the configuration and out of anything printable.
  t.false(`${JSON.stringify(config)} ${inspect(directory, { depth: 10 })} ${JSON.stringify(directory)}`.includes(servicePassword));
  await directory.close();
});

test('ldap:// means StartTLS; ports default by scheme; IPv6 hosts', async (t) => {
  const plain = validateLdapDirectoryOptions(await valid({ url: 'ldap://ldap.example.test' })).config;
  t.is(plain.tls, 'starttls');
  t.is(plain.url, 'ldap://ldap.example.test:389');
  const explicit = validateLdapDirectoryOptions(await valid({ url: 'ldap://ldap.example.test:1389/', startTls: true })).config;
  t.is(explicit.tls, 'starttls');
  t.is(explicit.port, 1389);
  const v6 = validateLdapDirectoryOptions(await valid({ url: 'ldaps://[::1]:1636' })).config;
  t.is(v6.host, '::1');
  t.is(v6.url, 'ldaps://[::1]:1636');
});

test('memberUid means names; other choices are kept', async (t) => {
  t.is(validateLdapDirectoryOptions(await valid({ membershipAttribute: 'memberUid' })).config.membershipValue, 'name');
  const custom = validateLdapDirectoryOptions(
    await valid({
      membershipAttribute: 'uniqueMember',
      userLoginAttribute: 'sAMAccountName',
      clientNameAttribute: 'dNSHostName',
      cacheMs: directoryCacheMsMax,
      connectTimeoutMs: ldapTimeoutMsMin,
      operationTimeoutMs: ldapTimeoutMsMax,
    }),
  ).config;
  t.is(custom.membershipValue, 'dn');
  t.is(custom.userLoginAttribute, 'sAMAccountName');
  t.is(custom.cacheMs, directoryCacheMsMax);
});

test('a configuration without TLS is refused', async (t) => {
  refused(t, await valid({ url: 'ldap://ldap.example.test', startTls: false }), 'ldap without StartTLS');
  refused(t, await valid({ url: 'ldaps://ldap.example.test', startTls: true }), 'StartTLS inside LDAPS');
  refused(t, await valid({ startTls: 'yes' }), 'startTls not boolean');
  refused(t, await valid({ caCertificatePem: undefined }), 'no CA');
  refused(t, await valid({ caCertificatePem: '' }), 'empty CA');
  refused(t, await valid({ caCertificatePem: 'not a pem' }), 'CA not PEM');
  refused(t, await valid({ caCertificatePem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }), 'CA garbage');
  refused(t, await valid({ caCertificatePem: (await pki).leafPem }), 'CA is a leaf');
  refused(t, await valid({ caCertificatePem: (await pki).caPem.repeat(Math.ceil(ldapCaPemBytesMax / 1000)) }), 'CA too large');
  refused(t, await valid({ rejectUnauthorized: false }), 'unknown option');
  refused(t, await valid({ startTLS: true }), 'misspelt option');
});

test('bad URLs are refused', async (t) => {
  for (const url of [
    '',
    'ldap.example.test',
    'http://ldap.example.test',
    'ldapi:///var/run/slapd.sock',
    'ldaps://user:pw@ldap.example.test',
    'ldaps://ldap.example.test/dc=example,dc=test',
    'ldaps://ldap.example.test?uid',
    'ldaps://ldap.example.test#x',
    'ldaps://ldap.example.test:99999',
    'ldaps://',
    `ldaps://${'a'.repeat(ldapUrlCharsMax)}.test`,
    42,
  ]) {
    refused(t, await valid({ url }), `url ${String(url).slice(0, 40)}`);
  }
});

test('a blank or oversized service password is refused (it would be an unauthenticated bind)', async (t) => {
  for (const serviceBindPassword of [undefined, '', ' ', '\t\n', 'x'.repeat(ldapPasswordCharsMax + 1), '\ud800', 7]) {
    refused(t, await valid({ serviceBindPassword }), `password ${JSON.stringify(serviceBindPassword)?.slice(0, 20)}`);
  }
});

test('bad DNs, attributes, timeouts and cache TTLs are refused', async (t) => {
  const bad: Record<string, unknown>[] = [
    { serviceBindDn: '' },
    { serviceBindDn: 'svc' },
    { userSearchBase: 'ou=people,,dc=example' },
    { userSearchBase: undefined },
    { clientSearchBase: 'ou=clients;dc=x' },
    { userLoginAttribute: 'uid=*' },
    { userLoginAttribute: '' },
    { clientNameAttribute: 'c n' },
    { membershipAttribute: '(member)' },
    { membershipAttribute: 'a'.repeat(65) },
    { membershipValue: 'uid' },
    { connectTimeoutMs: 0 },
    { connectTimeoutMs: ldapTimeoutMsMin - 1 },
    { operationTimeoutMs: ldapTimeoutMsMax + 1 },
    { operationTimeoutMs: 1.5 },
    { operationTimeoutMs: '1000' },
    { cacheMs: -1 },
    { cacheMs: directoryCacheMsMax + 1 },
    { cacheMs: Number.NaN },
  ];
  for (const overrides of bad) refused(t, await valid(overrides), JSON.stringify(overrides));
  const notAnObject = t.throws(() => validateLdapDirectoryOptions(null as unknown as LdapDirectoryOptions));
  t.true(isStripvaultError(notAnObject, ErrorCode.InvalidArgument));
});

test('isUsablePassword', (t) => {
  t.true(isUsablePassword('a'));
  t.true(isUsablePassword(' padded '));
  t.true(isUsablePassword('x'.repeat(ldapPasswordCharsMax)));
  for (const bad of ['', ' ', '\u00a0\t', 'x'.repeat(ldapPasswordCharsMax + 1), 'a\udc00', null, undefined, 1]) {
    t.false(isUsablePassword(bad), JSON.stringify(bad));
  }
});
