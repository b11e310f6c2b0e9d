/**
 * The error → HTTP mapping and the unseal rate-limit window, as units.
 */
import test from 'ava';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { ApiRefusal, httpStatusForCode, internalErrorMessage, toApiError } from '../../admin-ui/api-errors.ts';
import { FailureWindow } from '../../admin-ui/failure-window.ts';

test('stable codes map to their statuses; the rest to a bare 500', (t) => {
  t.is(httpStatusForCode(ErrorCode.OfficerShareForeign), 422);
  t.is(httpStatusForCode(ErrorCode.Sealed), 503);
  t.is(httpStatusForCode(ErrorCode.DeviceIo), undefined);
  t.deepEqual(toApiError(new StripvaultError(ErrorCode.NotFound, 'no COI x')), { status: 404, body: { error: { code: 'SV_NOT_FOUND', message: 'no COI x' } } });
  t.deepEqual(toApiError(new ApiRefusal(413, ErrorCode.InvalidArgument, 'too big')).status, 413);
  for (const e of [new Error('x'), null, undefined, 42, new StripvaultError(ErrorCode.KeyUnwrap, 'unwrap failed for key 1234')]) {
    t.deepEqual(toApiError(e), { status: 500, body: { error: { code: 'SV_INTERNAL', message: internalErrorMessage } } });
  }
});

test('a message quoting a secret is replaced, in any whitespace form of it', (t) => {
  const share = 'svshare1.ABCDEFGHIJKLMNOP';
  const spaced = 'svshare1.ABCD EFGH\nIJKL MNOP';
  t.is(toApiError(new StripvaultError(ErrorCode.OfficerShareInvalid, `bad share ${share}`), [share]).body.error.message, 'refused');
  t.is(toApiError(new StripvaultError(ErrorCode.OfficerShareInvalid, `bad share ${share}`), [spaced]).body.error.message, 'refused');
  t.is(toApiError(new StripvaultError(ErrorCode.OfficerShareInvalid, 'bad share'), [share]).body.error.message, 'bad share');
  t.is(toApiError(new StripvaultError(ErrorCode.OfficerShareInvalid, 'bad share'), ['', '   ']).body.error.message, 'bad share');
});

test('the failure window admits max failures per window, counting attempts in flight', (t) => {
  let now = 0;
  const w = new FailureWindow({ max: 2, windowMs: 1000, now: () => now });
  t.is(w.begin(), 0);
  t.is(w.begin(), 0);
  t.true(w.begin() > 0, 'two in flight fill the window');
  w.end(false);
  t.is(w.begin(), 0, 'a success frees its place');
  w.end(true);
  w.end(true);
  now = 400;
  t.is(w.begin(), 600);
  now = 1000;
  t.is(w.begin(), 0);
  w.end(false);
  t.throws(() => new FailureWindow({ max: 0, windowMs: 1 }));
});
