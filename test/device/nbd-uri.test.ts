import test from 'ava';
import { isNbdUri, nbdPortDefault, parseNbdUri } from '../../appliance/device/nbd-uri.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';

test('TCP and Unix-socket URIs parse to an address and a decoded export name', (t) => {
  t.deepEqual(parseNbdUri('nbd://127.0.0.1:10900/strip'), { address: { host: '127.0.0.1', port: 10900 }, exportName: 'strip' });
  t.deepEqual(parseNbdUri('nbd://storage.example'), { address: { host: 'storage.example', port: nbdPortDefault }, exportName: '' });
  t.deepEqual(parseNbdUri('nbd://storage.example/'), { address: { host: 'storage.example', port: nbdPortDefault }, exportName: '' });
  t.deepEqual(parseNbdUri('nbd://[::1]:7000/a%20b/c'), { address: { host: '::1', port: 7000 }, exportName: 'a b/c' });
  t.deepEqual(parseNbdUri('nbd+unix:///disk?socket=/run/nbd/a+b%20c.sock'), {
    address: { path: '/run/nbd/a+b c.sock' },
    exportName: 'disk',
  });
  t.deepEqual(parseNbdUri('NBD+UNIX:///?socket=/s'), { address: { path: '/s' }, exportName: '' });
});

test('TLS and other schemes are refused as unsupported; malformed URIs as invalid', (t) => {
  const unsupported = (uri: string, pattern: RegExp) => {
    const e = t.throws(() => parseNbdUri(uri), { instanceOf: StripvaultError, code: ErrorCode.DeviceUnsupported }, uri);
    t.regex(e?.message ?? '', pattern);
  };
  unsupported('nbds://host/x', /TLS/);
  unsupported('nbds+unix:///x?socket=/s', /TLS/);
  unsupported('nbd+vsock://2/x', /unsupported URI scheme/);
  for (const uri of [
    'nbd://',
    'nbd://host:0/x',
    'nbd://host:99999/x',
    'nbd://user:pw@host/x',
    'nbd://host/x#frag',
    'nbd://host/x?tls-certificates=/etc/pki',
    'nbd://host/%zz',
    'nbd+unix:///x',
    'nbd+unix:///x?socket=relative.sock',
    'nbd+unix://host/x?socket=/s',
    'nbd+unix:///x?socket=/s&socket=/t',
    'nbd+unix:///x?socket=/s&extra=1',
  ]) {
    t.throws(() => parseNbdUri(uri), { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument }, uri);
  }
});

test('isNbdUri recognises every nbd scheme and nothing else', (t) => {
  for (const s of ['nbd://h/x', 'nbds://h/x', 'nbd+unix:///x?socket=/s', 'NBD://h', 'nbd+vsock://2']) t.true(isNbdUri(s), s);
  for (const s of ['/dev/sdb', '/srv/nbd://x', 'file:///x', 'nbdish', 'relative/nbd:']) t.false(isNbdUri(s), s);
});
