/**
 * Transmission-phase request validation, done in full before anything touches
 * the backend (nbdkit style). Pure: the request and what was negotiated in,
 * the spec's error for the first rule broken out (or undefined if valid).
 */
import type { NbdRequest } from './codec.ts';
import { NbdRequestError } from './errors.ts';
import { Command, CommandFlag, NbdErrno } from './protocol.ts';

export interface TransmissionContext {
  readonly sizeBytes: number;
  readonly blockSizeMin: number;
  /** The maximum payload we advertised: min(export.blockSizeMax, requestBytesMax). */
  readonly payloadBytesMax: number;
  readonly readOnly: boolean;
  readonly structuredReplies: boolean;
  /** The base:allocation context id, if one was selected for this export. */
  readonly metaContextId: number | undefined;
}

export const commandNames: Record<number, string> = {
  [Command.Read]: 'READ',
  [Command.Write]: 'WRITE',
  [Command.Disc]: 'DISC',
  [Command.Flush]: 'FLUSH',
  [Command.Trim]: 'TRIM',
  [Command.Cache]: 'CACHE',
  [Command.WriteZeroes]: 'WRITE_ZEROES',
  [Command.BlockStatus]: 'BLOCK_STATUS',
};

/** FUA is valid on every command once SEND_FUA is advertised (we always advertise it). */
function flagsAllowed(type: number, ctx: TransmissionContext): number {
  const fua = CommandFlag.Fua;
  switch (type) {
    case Command.Read:
      return fua | (ctx.structuredReplies ? CommandFlag.Df : 0);
    case Command.WriteZeroes:
      return fua | CommandFlag.NoHole | CommandFlag.FastZero;
    case Command.BlockStatus:
      return fua | CommandFlag.ReqOne;
    default:
      return fua;
  }
}

function invalid(message: string): NbdRequestError {
  return new NbdRequestError(NbdErrno.EINVAL, message);
}

export function validateRequest(req: NbdRequest, ctx: TransmissionContext): NbdRequestError | undefined {
  const name = commandNames[req.type];
  if (name === undefined || req.type === Command.Disc) {
    // DISC never gets here: the session handles it before validation
    return invalid(`unknown command ${req.type}`);
  }
  const badFlags = req.flags & ~flagsAllowed(req.type, ctx);
  if (badFlags !== 0) return invalid(`${name}: flags 0x${badFlags.toString(16)} not valid for this command`);

  if (req.type === Command.BlockStatus && ctx.metaContextId === undefined) {
    return invalid('BLOCK_STATUS without a selected metadata context');
  }
  if (req.type === Command.Flush) {
    if (req.offset !== 0 || req.length !== 0) return invalid('FLUSH: offset and length must be zero');
    return undefined;
  }
  const writes = req.type === Command.Write || req.type === Command.Trim || req.type === Command.WriteZeroes;
  if (writes && ctx.readOnly) return new NbdRequestError(NbdErrno.EPERM, `${name}: export is read-only`);

  if (req.type === Command.Read && req.length > ctx.payloadBytesMax) {
    return new NbdRequestError(NbdErrno.EOVERFLOW, `READ: length ${req.length} exceeds maximum payload ${ctx.payloadBytesMax}`);
  }
  if (req.type === Command.Write && req.length > ctx.payloadBytesMax) {
    return invalid(`WRITE: length ${req.length} exceeds maximum payload ${ctx.payloadBytesMax}`);
  }

  // offset may be an approximate float above 2^53; that is far beyond any export, so the comparison still holds
  if (req.offset > ctx.sizeBytes || req.length > ctx.sizeBytes - req.offset) {
    const errno = req.type === Command.Write || req.type === Command.WriteZeroes ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
    return new NbdRequestError(errno, `${name}: range ${req.offset}+${req.length} beyond export size ${ctx.sizeBytes}`);
  }
  const end = req.offset + req.length;
  if (req.offset % ctx.blockSizeMin !== 0 || (req.length % ctx.blockSizeMin !== 0 && end !== ctx.sizeBytes)) {
    return invalid(`${name}: range ${req.offset}+${req.length} not aligned to minimum block size ${ctx.blockSizeMin}`);
  }
  if (req.type === Command.BlockStatus && req.length === 0) {
    // a reply must hold at least one nonzero extent, which a zero-length query cannot have
    return invalid('BLOCK_STATUS: zero length');
  }
  if (req.type === Command.WriteZeroes && (req.flags & CommandFlag.FastZero) !== 0) {
    // we cannot promise zeroing is faster than writing, so the spec wants a quick ENOTSUP
    return new NbdRequestError(NbdErrno.ENOTSUP, 'WRITE_ZEROES: fast zero not supported');
  }
  return undefined;
}
