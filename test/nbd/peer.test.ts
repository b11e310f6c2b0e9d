import test from 'ava';
import { isLoopback, peerOfSocket, tlsModeFor } from '../../appliance/nbd/peer.ts';

test('peerOfSocket: loopback by address; a Unix socket counts as local; nobody starts with TLS', (t) => {
  t.deepEqual(peerOfSocket({ remoteAddress: '127.0.0.1' }), { remoteAddress: '127.0.0.1', loopback: true, tls: false });
  t.deepEqual(peerOfSocket({ remoteAddress: '::ffff:127.0.0.9' }), { remoteAddress: '::ffff:127.0.0.9', loopback: true, tls: false });
  t.deepEqual(peerOfSocket({ remoteAddress: '192.0.2.7' }), { remoteAddress: '192.0.2.7', loopback: false, tls: false });
  t.deepEqual(peerOfSocket({ remoteAddress: '::ffff:192.0.2.7' }), { remoteAddress: '::ffff:192.0.2.7', loopback: false, tls: false });
  t.deepEqual(peerOfSocket({}), { remoteAddress: 'unix', loopback: true, tls: false });
  // a reverse-DNS-looking string is not an address
  t.false(peerOfSocket({ remoteAddress: '127.0.0.1.example' }).loopback);
  t.false(isLoopback(''));
});

test('tlsModeFor: plain text only on loopback, whatever is configured', (t) => {
  const local = peerOfSocket({ remoteAddress: '::1' });
  const unix = peerOfSocket({});
  const remote = peerOfSocket({ remoteAddress: '198.51.100.1' });
  for (const mode of ['off', 'optional', 'required'] as const) {
    t.is(tlsModeFor(mode, local), mode);
    t.is(tlsModeFor(mode, unix), mode);
  }
  t.is(tlsModeFor('off', remote), 'refuse');
  t.is(tlsModeFor('optional', remote), 'required');
  t.is(tlsModeFor('required', remote), 'required');
});
