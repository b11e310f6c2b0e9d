import { randomBytes } from 'node:crypto';
import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import {
  dnEquals,
  dnIsWithin,
  dnKey,
  escapeDnValue,
  isAttributeName,
  ldapDnCharsMax,
  ldapDnRdnsMax,
  parseDn,
} from '../../keymgr/ldap-dn.ts';

test('parses RDNs, escapes and multi-valued RDNs', (t) => {
  const dn = parseDn('uid=odd(1)*x\\5Cy,OU=People,dc=example,dc=test');
  t.is(dn.rdns.length, 4);
  t.deepEqual(dn.rdns[0], [{ type: 'uid', value: 'odd(1)*x\\y' }]);
  t.deepEqual(dn.rdns[1], [{ type: 'ou', value: 'People' }]);
  t.deepEqual(parseDn('cn=Smith\\, John,dc=x').rdns[0], [{ type: 'cn', value: 'Smith, John' }]);
  t.deepEqual(parseDn('cn=Jos\\C3\\A9,dc=x').rdns[0], [{ type: 'cn', value: 'José' }]);
  t.deepEqual(parseDn('cn=a+sn=b,dc=x').rdns[0], [
    { type: 'cn', value: 'a' },
    { type: 'sn', value: 'b' },
  ]);
  t.deepEqual(parseDn('cn=\\ lead and trail\\ ,dc=x').rdns[0], [{ type: 'cn', value: ' lead and trail ' }]);
  t.deepEqual(parseDn('1.3.6.1.4.1.1466.0=#04024869,dc=x').rdns[0], [{ type: '1.3.6.1.4.1.1466.0', value: '#04024869' }]);
  t.deepEqual(parseDn('cn=a=b,dc=x').rdns[0], [{ type: 'cn', value: 'a=b' }]);
  t.is(parseDn('cn=😀,dc=x').rdns[0]?.[0]?.value, '😀');
});

test('canonical form: case, spacing around separators, escaping and RDN order do not matter', (t) => {
  const a = parseDn('CN=Finance, OU=Groups, DC=Example, DC=Test');
  const b = parseDn('cn=finance,ou=groups,dc=example,dc=test');
  t.true(dnEquals(a, b));
  t.is(dnKey(a), dnKey(b));
  t.true(dnEquals(parseDn('cn=a\\2Cb,dc=x'), parseDn('cn=a\\,b,dc=x')));
  t.true(dnEquals(parseDn('cn=a+sn=b,dc=x'), parseDn('sn=B+cn=A,dc=x')));
  t.false(dnEquals(parseDn('cn=a,dc=x'), parseDn('cn=a,dc=y')));
  t.is(a.text, 'CN=Finance, OU=Groups, DC=Example, DC=Test');
});

test('dnIsWithin compares whole RDNs', (t) => {
  const base = parseDn('ou=people,dc=example,dc=test');
  t.true(dnIsWithin(parseDn('uid=alice,ou=people,dc=example,dc=test'), base));
  t.true(dnIsWithin(parseDn('uid=a,ou=contractors,ou=People,dc=example,dc=test'), base));
  t.true(dnIsWithin(base, base));
  t.false(dnIsWithin(parseDn('dc=example,dc=test'), base));
  t.false(dnIsWithin(parseDn('uid=alice,ou=clients,dc=example,dc=test'), base));
  // One RDN whose value merely ends like the base is not below it.
  t.false(dnIsWithin(parseDn('cn=x\\,ou=people,dc=example,dc=test'), base));
  t.false(dnIsWithin(parseDn('uid=alice,ou=otherpeople,dc=example,dc=test'), base));
});

test('malformed DNs are refused', (t) => {
  const bad = [
    '',
    'alice',
    '=alice',
    'cn=',
    'cn=a,',
    ',cn=a',
    'cn=a,,dc=x',
    'c n=a',
    '1cn=a',
    'cn=a;dc=x',
    'cn="quoted"',
    'cn=a<b',
    'cn=a>b',
    'cn=a\\',
    'cn=a\\zz',
    'cn=a\\4',
    'cn=\\ff',
    'cn=a\\00',
    'cn=a\u0000',
    'cn=a\nb',
    'cn=#abc',
    'cn=#',
    'cn=a\ud800',
    `cn=${'a'.repeat(ldapDnCharsMax)}`,
    Array.from({ length: ldapDnRdnsMax + 1 }, (_, i) => `dc=d${i}`).join(','),
  ];
  for (const text of bad) {
    const error = t.throws(() => parseDn(text), undefined, JSON.stringify(text));
    t.true(isStripvaultError(error, ErrorCode.InvalidArgument), JSON.stringify(text));
  }
  t.true(isStripvaultError(t.throws(() => parseDn(42 as unknown as string)), ErrorCode.InvalidArgument));
  t.is(parseDn(Array.from({ length: ldapDnRdnsMax }, (_, i) => `dc=d${i}`).join(',')).rdns.length, ldapDnRdnsMax);
});

test('escapeDnValue round-trips through parseDn', (t) => {
  const samples = ['plain', ' lead', 'trail ', '#hash', 'a,b+c"d\\e<f>g;h=i', 'tab\tinside', 'José 😀', '  '];
  for (let i = 0; i < 200; i++) {
    // Random printable-ish strings, NUL excluded (parseDn refuses it by design).
    samples.push(
      String.fromCharCode(...[...randomBytes(1 + (i % 12))].map((b) => (b % 0x7e) + 1)).replace(/\u0000/g, 'x'),
    );
  }
  for (const value of samples) {
    const parsed = parseDn(`cn=${escapeDnValue(value)},dc=x`);
    t.is(parsed.rdns[0]?.[0]?.value, value, JSON.stringify(value));
  }
});

test('isAttributeName', (t) => {
  for (const name of ['uid', 'cn', 'memberUid', 'sAMAccountName', 'x-attr', '2.5.4.3']) t.true(isAttributeName(name), name);
  for (const name of ['', '1uid', 'u id', 'uid=', 'uid*', '2', '2.', '.2.5', 'a'.repeat(65)]) t.false(isAttributeName(name), name);
});
