import { stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { ErrorCode, fail } from '../errors.ts';
import { openBlockDevice } from './block-device.ts';
import type { BlockDeviceOptions } from './block-device.ts';
import { wrapOpenError } from './errno.ts';
import { openFileDevice } from './file-device.ts';
import type { HandleDevice } from './handle-device.ts';
import { openNbdDevice } from './nbd-device.ts';
import type { NbdDevice } from './nbd-device.ts';
import { isNbdUri } from './nbd-uri.ts';

export type OpenDeviceOptions = BlockDeviceOptions;

/**
 * Opens whatever `path` names as a storage device: a regular file, a block device, or a remote
 * NBD export (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH). Symlinks are followed,
 * so /dev/disk/by-id/… names work.
 */
export async function openDevice(path: string, options: OpenDeviceOptions = {}): Promise<HandleDevice | NbdDevice> {
  const id = options.id ?? path;
  if (isNbdUri(path)) return openNbdDevice(path, { id });
  let info: Stats;
  try {
    info = await stat(path);
  } catch (e) {
    throw wrapOpenError(id, path, e);
  }
  if (info.isFile()) return openFileDevice(path, { id });
  if (info.isBlockDevice()) return openBlockDevice(path, options);
  fail(ErrorCode.DeviceUnsupported, `device ${id}: ${path} is ${describe(info)}, not a regular file or block device`, {
    device: id,
    path,
    type: describe(info),
  });
}

function describe(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isCharacterDevice()) return 'a character device (use the block device node)';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isSocket()) return 'a socket';
  return 'of an unknown type';
}
