import { ErrorCode, StripvaultError } from '../errors.ts';

/** The errno name (e.g. 'EIO') of a Node system error, if it is one. */
export function errnoOf(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') return e.code;
  return undefined;
}

/** Maps a failure while opening or sizing a device path to the device error catalogue. */
export function wrapOpenError(id: string, path: string, e: unknown): StripvaultError {
  if (e instanceof StripvaultError) return e;
  const errno = errnoOf(e);
  const detail = { device: id, path, errno };
  if (errno === 'ENOENT') {
    return new StripvaultError(ErrorCode.DeviceNotFound, `device ${id}: ${path} does not exist`, detail, { cause: e });
  }
  if (errno === 'EISDIR') {
    return new StripvaultError(ErrorCode.DeviceUnsupported, `device ${id}: ${path} is a directory`, detail, {
      cause: e,
    });
  }
  return new StripvaultError(ErrorCode.DeviceIo, `device ${id}: cannot open ${path} (${errno ?? 'unknown'})`, detail, {
    cause: e,
  });
}
