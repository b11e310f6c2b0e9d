import test from 'ava';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { NbdRequestError, requestFailed, toWireError } from '../../appliance/nbd/errors.ts';
import { NbdErrno } from '../../appliance/nbd/protocol.ts';

const sv = (code: ErrorCode): StripvaultError => new StripvaultError(code, 'boom');

test('stripvault codes map to the NBD errors the design names', (t) => {
  t.is(toWireError(sv(ErrorCode.OutOfRange)).errno, NbdErrno.EINVAL);
  t.is(toWireError(sv(ErrorCode.InvalidArgument)).errno, NbdErrno.EINVAL);
  t.is(toWireError(sv(ErrorCode.VolumeUnavailable)).errno, NbdErrno.EIO);
  t.is(toWireError(sv(ErrorCode.NotEnoughShares)).errno, NbdErrno.EIO);
  t.is(toWireError(sv(ErrorCode.DeviceIo)).errno, NbdErrno.EIO);
  t.is(toWireError(sv(ErrorCode.VolumeClosed)).errno, NbdErrno.ESHUTDOWN);
  t.is(toWireError(sv(ErrorCode.StripChecksum)).errno, NbdErrno.EIO);
  t.regex(toWireError(sv(ErrorCode.NotEnoughShares)).message, /SV_NOT_ENOUGH_SHARES/);
});

test('validation errors keep their errno; unknown errors are EIO without leaking text', (t) => {
  t.deepEqual(toWireError(new NbdRequestError(NbdErrno.ENOSPC, 'past end')), { errno: NbdErrno.ENOSPC, message: 'past end' });
  t.deepEqual(toWireError(new Error('/secret/path exploded')), { errno: NbdErrno.EIO, message: 'internal error' });
  t.is(toWireError('a string').errno, NbdErrno.EIO);
  t.is(toWireError(undefined).errno, NbdErrno.EIO);
});

test('host errors: ENOSPC, EDQUOT and EFBIG are ENOSPC; EROFS is EPERM', (t) => {
  const sys = (code: string): Error => Object.assign(new Error(code), { code });
  t.is(toWireError(sys('ENOSPC')).errno, NbdErrno.ENOSPC);
  t.is(toWireError(sys('EDQUOT')).errno, NbdErrno.ENOSPC);
  t.is(toWireError(sys('EFBIG')).errno, NbdErrno.ENOSPC);
  t.is(toWireError(sys('EROFS')).errno, NbdErrno.EPERM);
  t.is(toWireError(sys('EBADF')).errno, NbdErrno.EIO);
});

test('a remote NBD error passes through a stacked export; unknown wire values read as EINVAL', (t) => {
  const remote = requestFailed(NbdErrno.ENOSPC, 'full', { command: 'WRITE' });
  t.is(remote.code, ErrorCode.NbdRequestFailed);
  t.is(remote.detail?.['nbdErrno'], NbdErrno.ENOSPC);
  t.is(toWireError(remote).errno, NbdErrno.ENOSPC);
  t.is(requestFailed(4242, '', {}).detail?.['nbdErrno'], NbdErrno.EINVAL);
});
