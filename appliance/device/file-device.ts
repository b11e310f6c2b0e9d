import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, fail } from '../errors.ts';
import { errnoOf, wrapOpenError } from './errno.ts';
import { HandleDevice } from './handle-device.ts';

export interface FileDeviceOptions {
  /** Device id; defaults to the path. */
  id?: string;
}

export interface CreateFileDeviceOptions extends FileDeviceOptions {
  /** Replace (and zero) an existing non-empty file. Without it such a file is refused. */
  overwrite?: boolean;
}

/**
 * Creates a sparse regular file of `sizeBytes` and opens it as a device. An existing empty
 * file is reused; an existing non-empty one is refused unless `overwrite`, because it may be
 * another volume's strips.
 */
export async function createFileDevice(
  path: string,
  sizeBytes: number,
  options: CreateFileDeviceOptions = {},
): Promise<HandleDevice> {
  const id = options.id ?? path;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    fail(ErrorCode.InvalidArgument, `file device ${id}: size ${sizeBytes} must be a positive integer`, {
      device: id,
      sizeBytes,
    });
  }
  const { handle, created } = await openOrCreate(id, path);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      fail(ErrorCode.DeviceUnsupported, `file device ${id}: ${path} is not a regular file`, { device: id, path });
    }
    if (stat.size > 0 && options.overwrite !== true) {
      fail(ErrorCode.DeviceExists, `file device ${id}: ${path} already holds ${stat.size} bytes`, {
        device: id,
        path,
        sizeBytes: stat.size,
      });
    }
    // Truncating to zero first drops every old extent, so the result is all zeros and sparse.
    await handle.truncate(0);
    await handle.truncate(sizeBytes);
    await handle.sync();
    if (created) await syncDirectory(dirname(path));
  } catch (e) {
    await handle.close();
    throw wrapOpenError(id, path, e);
  }
  return new HandleDevice({ id, path, kind: 'file', sizeBytes, handle });
}

/** Opens an existing regular file as a device; its size is the file's size now. */
export async function openFileDevice(path: string, options: FileDeviceOptions = {}): Promise<HandleDevice> {
  const id = options.id ?? path;
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDWR);
  } catch (e) {
    throw wrapOpenError(id, path, e);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      fail(ErrorCode.DeviceUnsupported, `file device ${id}: ${path} is not a regular file`, { device: id, path });
    }
    return new HandleDevice({ id, path, kind: 'file', sizeBytes: stat.size, handle });
  } catch (e) {
    await handle.close();
    throw wrapOpenError(id, path, e);
  }
}

async function openOrCreate(id: string, path: string): Promise<{ handle: FileHandle; created: boolean }> {
  try {
    return { handle: await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600), created: true };
  } catch (e) {
    if (errnoOf(e) !== 'EEXIST') throw wrapOpenError(id, path, e);
  }
  try {
    return { handle: await open(path, constants.O_RDWR), created: false };
  } catch (e) {
    throw wrapOpenError(id, path, e);
  }
}

/** Makes a newly created directory entry durable, not only the file's contents. */
async function syncDirectory(path: string): Promise<void> {
  const dir = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
