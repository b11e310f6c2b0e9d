import test from 'ava';
import type { NbdRequest } from '../../appliance/nbd/codec.ts';
import { validateRequest } from '../../appliance/nbd/validate.ts';
import type { TransmissionContext } from '../../appliance/nbd/validate.ts';
import { Command, CommandFlag, NbdErrno } from '../../appliance/nbd/protocol.ts';

const ctx: TransmissionContext = {
  sizeBytes: 1 << 20,
  blockSizeMin: 512,
  payloadBytesMax: 64 * 1024,
  readOnly: false,
  structuredReplies: true,
  metaContextId: 1,
};

function req(type: number, offset: number, length: number, flags = 0): NbdRequest {
  return { type, offset, length, flags, cookie: 1n };
}

function errno(r: NbdRequest, c: TransmissionContext = ctx): number | undefined {
  return validateRequest(r, c)?.errno;
}

test('valid requests pass', (t) => {
  t.is(errno(req(Command.Read, 0, 4096)), undefined);
  t.is(errno(req(Command.Write, 512, 512, CommandFlag.Fua)), undefined);
  t.is(errno(req(Command.Flush, 0, 0)), undefined);
  t.is(errno(req(Command.Trim, 0, 1 << 20)), undefined);
  t.is(errno(req(Command.WriteZeroes, 0, 1 << 20, CommandFlag.NoHole | CommandFlag.Fua)), undefined);
  t.is(errno(req(Command.Cache, 0, 1 << 20)), undefined);
  t.is(errno(req(Command.BlockStatus, 0, 1 << 20, CommandFlag.ReqOne)), undefined);
  t.is(errno(req(Command.Read, 0, 4096, CommandFlag.Df)), undefined);
  // zero-length requests are unspecified by the spec; we accept them
  t.is(errno(req(Command.Read, 1 << 20, 0)), undefined);
  t.is(errno(req(Command.Write, 0, 0)), undefined);
});

test('unknown commands and flags are EINVAL', (t) => {
  t.is(errno(req(42, 0, 0)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Resize, 0, 0)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Read, 0, 512, CommandFlag.NoHole)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Write, 0, 512, 0x100)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Trim, 0, 512, CommandFlag.ReqOne)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Read, 0, 512, CommandFlag.Df), { ...ctx, structuredReplies: false }), NbdErrno.EINVAL);
});

test('out of range: ENOSPC for writes, EINVAL for the rest', (t) => {
  const end = ctx.sizeBytes;
  t.is(errno(req(Command.Write, end - 512, 1024)), NbdErrno.ENOSPC);
  t.is(errno(req(Command.WriteZeroes, end, 512)), NbdErrno.ENOSPC);
  t.is(errno(req(Command.Read, end - 512, 1024)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Trim, end + 512, 0)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Cache, end, 512)), NbdErrno.EINVAL);
  t.is(errno(req(Command.BlockStatus, end, 512)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Read, 2 ** 64 - 1, 512)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Write, 2 ** 63, 0)), NbdErrno.ENOSPC);
});

test('lengths over the maximum payload: EOVERFLOW for reads, EINVAL for writes, allowed without payload', (t) => {
  t.is(errno(req(Command.Read, 0, 128 * 1024)), NbdErrno.EOVERFLOW);
  t.is(errno(req(Command.Write, 0, 128 * 1024)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Trim, 0, 128 * 1024)), undefined);
  t.is(errno(req(Command.WriteZeroes, 0, 128 * 1024)), undefined);
});

test('alignment to the minimum block size; the export end counts as aligned', (t) => {
  t.is(errno(req(Command.Read, 100, 512)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Write, 0, 100)), NbdErrno.EINVAL);
  const odd = { ...ctx, sizeBytes: (1 << 20) + 100 };
  t.is(errno(req(Command.Read, 1 << 20, 100), odd), undefined);
});

test('read-only exports refuse writes with EPERM, before range checks', (t) => {
  const ro = { ...ctx, readOnly: true };
  t.is(errno(req(Command.Write, 0, 512), ro), NbdErrno.EPERM);
  t.is(errno(req(Command.Trim, 0, 512), ro), NbdErrno.EPERM);
  t.is(errno(req(Command.WriteZeroes, ctx.sizeBytes, 512), ro), NbdErrno.EPERM);
  t.is(errno(req(Command.Read, 0, 512), ro), undefined);
  t.is(errno(req(Command.Flush, 0, 0), ro), undefined);
});

test('command-specific rules', (t) => {
  t.is(errno(req(Command.Flush, 512, 0)), NbdErrno.EINVAL);
  t.is(errno(req(Command.Flush, 0, 512)), NbdErrno.EINVAL);
  t.is(errno(req(Command.BlockStatus, 0, 512), { ...ctx, metaContextId: undefined }), NbdErrno.EINVAL);
  t.is(errno(req(Command.BlockStatus, 0, 0)), NbdErrno.EINVAL);
  t.is(errno(req(Command.WriteZeroes, 0, 512, CommandFlag.FastZero)), NbdErrno.ENOTSUP);
  // an invalid request is invalid before it is "not supported"
  t.is(errno(req(Command.WriteZeroes, ctx.sizeBytes, 512, CommandFlag.FastZero)), NbdErrno.ENOSPC);
});
