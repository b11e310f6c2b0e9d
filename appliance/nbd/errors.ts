/**
 * The one place that decides which NBD error a client sees for a failure,
 * and which stripvault error our client raises for an NBD error it receives.
 */
import { ErrorCode, StripvaultError, isStripvaultError } from '../errors.ts';
import { NbdErrno } from './protocol.ts';

/** A request refused by validation, with the error the spec prescribes for that case. */
export class NbdRequestError extends Error {
  readonly errno: NbdErrno;
  constructor(errno: NbdErrno, message: string) {
    super(message);
    this.name = 'NbdRequestError';
    this.errno = errno;
  }
}

const errnoByCode: Partial<Record<ErrorCode, NbdErrno>> = {
  [ErrorCode.InvalidArgument]: NbdErrno.EINVAL,
  [ErrorCode.OutOfRange]: NbdErrno.EINVAL,
  [ErrorCode.VolumeUnavailable]: NbdErrno.EIO,
  [ErrorCode.NotEnoughShares]: NbdErrno.EIO,
  [ErrorCode.DeviceIo]: NbdErrno.EIO,
  // a volume closing under a client means failover or shutdown: ESHUTDOWN tells the client to disconnect and reconnect
  [ErrorCode.VolumeClosed]: NbdErrno.ESHUTDOWN,
};

/** Host errors a backend may let escape (node:fs). The spec asks for EDQUOT and EFBIG as ENOSPC. */
const errnoBySystemCode: Record<string, NbdErrno> = {
  ENOSPC: NbdErrno.ENOSPC,
  EDQUOT: NbdErrno.ENOSPC,
  EFBIG: NbdErrno.ENOSPC,
  EROFS: NbdErrno.EPERM,
  EPERM: NbdErrno.EPERM,
  EACCES: NbdErrno.EPERM,
};

const knownErrnos = new Set<number>(Object.values(NbdErrno));

export interface WireError {
  errno: NbdErrno;
  /** Safe to show the client: codes and our own messages, never a host error's text. */
  message: string;
}

export function toWireError(e: unknown): WireError {
  if (e instanceof NbdRequestError) return { errno: e.errno, message: e.message };
  if (isStripvaultError(e)) {
    if (e.code === ErrorCode.NbdRequestFailed) {
      // a stacked remote export: pass the remote's own verdict through
      const remote = e.detail?.['nbdErrno'];
      if (typeof remote === 'number' && knownErrnos.has(remote)) return { errno: remote as NbdErrno, message: e.message };
    }
    return { errno: errnoByCode[e.code] ?? NbdErrno.EIO, message: `${e.code}: ${e.message}` };
  }
  const sys = (e as { code?: unknown } | null)?.code;
  if (typeof sys === 'string' && errnoBySystemCode[sys] !== undefined) {
    return { errno: errnoBySystemCode[sys], message: sys };
  }
  return { errno: NbdErrno.EIO, message: 'internal error' };
}

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(NbdErrno)) if (value === errno) return name;
  return `error ${errno}`;
}

/** What our client raises for an error reply; detail.nbdErrno keeps the wire value (unknown ones read as EINVAL, per spec). */
export function requestFailed(errno: number, message: string, detail: Record<string, unknown>): StripvaultError {
  const effective = knownErrnos.has(errno) ? errno : NbdErrno.EINVAL;
  const text = message === '' ? errnoName(effective) : `${errnoName(effective)}: ${message}`;
  return new StripvaultError(ErrorCode.NbdRequestFailed, `NBD request failed: ${text}`, {
    ...detail,
    nbdErrno: effective,
    nbdError: errnoName(effective),
  });
}
