import test from 'ava';
import { ErrorCode, fail, isStripvaultError } from '../../appliance/errors.ts';
import { accessControlledRegistry } from '../../appliance/nbd/access.ts';
import { staticExportRegistry } from '../../appliance/nbd/backend.ts';
import type { ExportRegistry } from '../../appliance/nbd/backend.ts';
import type { NbdPeer } from '../../appliance/nbd/peer.ts';
import { MiB, memory } from './helpers.ts';

const alice: NbdPeer = { remoteAddress: '192.0.2.1', loopback: false, tls: true, clientName: 'alice', certificateSerial: '0a' };
const anonymous: NbdPeer = { remoteAddress: '127.0.0.1', loopback: true, tls: false };

function counting(inner: ExportRegistry): ExportRegistry & { gets: string[] } {
  const gets: string[] = [];
  return { gets, list: (p) => inner.list(p), get: (name, p) => (gets.push(name), inner.get(name, p)) };
}

const policy = (peer: NbdPeer): string[] | 'all' => (peer.clientName === 'alice' ? ['a', 'b'] : peer.loopback ? 'all' : []);

test('list and get show only what the policy allows; the default export is judged by its real name', async (t) => {
  const inner = counting(staticExportRegistry([memory('a', MiB), memory('b', MiB), memory('c', MiB)], 'c'));
  const r = accessControlledRegistry(inner, policy);
  t.deepEqual((await r.list(alice)).map((e) => e.name), ['a', 'b']);
  t.deepEqual((await r.list(anonymous)).map((e) => e.name), ['a', 'b', 'c']);
  t.deepEqual((await r.list({ ...anonymous, loopback: false })).map((e) => e.name), []);
  t.is((await r.get('a', alice))?.name, 'a');
  t.is(await r.get('c', alice), undefined);
  t.is(await r.get('nope', alice), undefined);
  t.is(await r.get('', alice), undefined);
  t.is((await r.get('', anonymous))?.name, 'c');
  // a forbidden name never reaches the inner registry, so its errors cannot tell that it exists
  t.deepEqual(inner.gets, ['a', '', '']);
});

test('a policy or registry that throws fails the request; SV_SEALED passes through unchanged', async (t) => {
  const sealed = accessControlledRegistry(staticExportRegistry([memory('a', MiB)]), () => fail(ErrorCode.Sealed, 'sealed'));
  const e1 = await t.throwsAsync(async () => sealed.get('a', alice));
  t.true(isStripvaultError(e1, ErrorCode.Sealed));
  const e2 = await t.throwsAsync(async () => sealed.list(alice));
  t.true(isStripvaultError(e2, ErrorCode.Sealed));
  const innerSealed = accessControlledRegistry({ list: () => fail(ErrorCode.Sealed, 'sealed'), get: () => fail(ErrorCode.Sealed, 'sealed') }, policy);
  t.true(isStripvaultError(await t.throwsAsync(async () => innerSealed.get('a', alice)), ErrorCode.Sealed));
  t.is(await innerSealed.get('c', alice), undefined);
  t.deepEqual(await innerSealed.list({ ...anonymous, loopback: false }), []);
});
