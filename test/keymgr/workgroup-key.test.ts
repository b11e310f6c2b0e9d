/** Workgroup key wrapping bound to COI and id, and the CA key encrypted at rest under the master key. */
import test from 'ava';
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, StripvaultError, fail } from '../../appliance/errors.ts';
import { decryptCaKey, encryptCaKey } from '../../keymgr/ca-key-at-rest.ts';
import { wrapUnderMaster, type MasterKeyHolder } from '../../keymgr/master-key.ts';
import { createCa } from '../../keymgr/pki-ca.ts';
import { WorkgroupKeyCache, cachedWorkgroupKeysMax } from '../../keymgr/workgroup-key-cache.ts';
import { newWorkgroupKey, newWorkgroupKeyId, unwrapWorkgroupKey, wrapWorkgroupKey } from '../../keymgr/workgroup-key.ts';

const holder = (key = randomBytes(32)): MasterKeyHolder => ({ masterKey: () => key });
const sealed: MasterKeyHolder = { masterKey: () => fail(ErrorCode.Sealed, 'sealed') };

test('a workgroup key unwraps only for its own COI id, key id and master key', (t) => {
  const master = holder();
  const binding = { coiId: randomUUID(), keyId: newWorkgroupKeyId() };
  const key = newWorkgroupKey();
  const wrapped = wrapWorkgroupKey(master, binding, key);
  t.is(wrapped.length, 40);
  t.deepEqual(Buffer.from(unwrapWorkgroupKey(master, binding, wrapped)), key);
  t.deepEqual(wrapWorkgroupKey(master, binding, key), wrapped, 'deterministic (RFC 3394)');

  const others: Array<[string, MasterKeyHolder, typeof binding]> = [
    ['another COI', master, { ...binding, coiId: randomUUID() }],
    ['another key id', master, { ...binding, keyId: newWorkgroupKeyId() }],
    ['another master key', holder(), binding],
  ];
  for (const [why, h, b] of others) t.throws(() => unwrapWorkgroupKey(h, b, wrapped), { instanceOf: StripvaultError, code: ErrorCode.KeyUnwrap }, why);
  const flipped = new Uint8Array(wrapped);
  flipped[7]! ^= 1;
  t.throws(() => unwrapWorkgroupKey(master, binding, flipped), { code: ErrorCode.KeyUnwrap });
  // Not the generic master-key wrap either: the derivation is this purpose's alone.
  t.notDeepEqual(Buffer.from(wrapUnderMaster(master, key)), Buffer.from(wrapped));

  t.throws(() => wrapWorkgroupKey(sealed, binding, key), { code: ErrorCode.Sealed });
  t.throws(() => unwrapWorkgroupKey(sealed, binding, wrapped), { code: ErrorCode.Sealed });
  for (const bad of [{ ...binding, coiId: 'finance' }, { ...binding, keyId: 'AB'.repeat(16) }, { ...binding, keyId: 'ab' }, null]) {
    t.throws(() => wrapWorkgroupKey(master, bad as never, key), { code: ErrorCode.InvalidArgument });
  }
  t.throws(() => wrapWorkgroupKey(master, binding, new Uint8Array(32)), { code: ErrorCode.InvalidArgument }, 'all-zero key');
  t.throws(() => unwrapWorkgroupKey(master, binding, wrapped.subarray(0, 39)), { code: ErrorCode.InvalidArgument });
  t.regex(newWorkgroupKeyId(), /^[0-9a-f]{32}$/);
});

test('the cache hands out copies, is bounded, and zeroes what it drops', (t) => {
  const cache = new WorkgroupKeyCache();
  const key = Uint8Array.from(randomBytes(32));
  cache.put('a', key);
  const copy = cache.copy('a')!;
  copy.fill(0);
  t.notDeepEqual(cache.copy('a'), copy);
  cache.wipe('a');
  t.true(key.every((b) => b === 0), 'zeroed on wipe');
  t.is(cache.copy('a'), undefined);
  const first = Uint8Array.from(randomBytes(32));
  cache.put('0', first);
  for (let i = 1; i <= cachedWorkgroupKeysMax; i++) cache.put(String(i), Uint8Array.from(randomBytes(32)));
  t.is(cache.ids().length, cachedWorkgroupKeysMax);
  t.true(first.every((b) => b === 0), 'the oldest was evicted and zeroed');
  cache.wipeAll();
  t.deepEqual(cache.ids(), []);
});

test('the CA key at rest opens only under its master key and next to its certificate', async (t) => {
  const ca = await createCa({ commonName: 'Test CA', validDays: 30 });
  const other = await createCa({ commonName: 'Other CA', validDays: 30 });
  const master = holder();
  const blob = encryptCaKey(master, ca.caKey, ca.caCertPem);
  const der = ca.caKey.export({ type: 'pkcs8', format: 'der' });
  t.false(blob.includes(der.subarray(64, 96)), 'no plaintext in the blob');
  t.true(decryptCaKey(master, blob, ca.caCertPem).equals(ca.caKey));
  t.not(encryptCaKey(master, ca.caKey, ca.caCertPem).toString('hex'), blob.toString('hex'), 'fresh nonce each time');

  t.throws(() => decryptCaKey(holder(), blob, ca.caCertPem), { code: ErrorCode.KeyUnwrap }, 'another master key');
  t.throws(() => decryptCaKey(master, blob, other.caCertPem), { code: ErrorCode.KeyUnwrap }, 'another CA certificate');
  const flipped = Buffer.from(blob);
  flipped[40]! ^= 1;
  t.throws(() => decryptCaKey(master, flipped, ca.caCertPem), { code: ErrorCode.KeyUnwrap }, 'altered');
  const version = Buffer.from(blob);
  version[0] = 2;
  t.throws(() => decryptCaKey(master, version, ca.caCertPem), { code: ErrorCode.KeyUnwrap }, 'unknown version');
  t.throws(() => decryptCaKey(master, blob.subarray(0, 20), ca.caCertPem), { code: ErrorCode.KeyUnwrap }, 'truncated');
  t.throws(() => decryptCaKey(master, new Uint8Array(0), ca.caCertPem), { code: ErrorCode.InvalidArgument }, 'empty');
  t.throws(() => decryptCaKey(master, blob, 'not a PEM'), { code: ErrorCode.InvalidArgument });
  t.throws(() => encryptCaKey(sealed, ca.caKey, ca.caCertPem), { code: ErrorCode.Sealed });
  t.throws(() => decryptCaKey(sealed, blob, ca.caCertPem), { code: ErrorCode.Sealed });
});
