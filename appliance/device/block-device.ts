import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { ErrorCode, fail } from '../errors.ts';
import { wrapOpenError } from './errno.ts';
import { HandleDevice } from './handle-device.ts';

export interface BlockDeviceOptions {
  /** Device id; defaults to the path. */
  id?: string;
  /**
   * Open with O_EXCL: Linux then refuses a block device that is mounted or held by another
   * exclusive opener (EBUSY), so stripvault cannot write over a live filesystem.
   */
  exclusive?: boolean;
}

/** sysfs reports block device sizes in 512-byte sectors whatever the device's own block size. */
export const sysfsSectorBytes = 512;

/**
 * Opens a raw block device (/dev/sdb, /dev/loop0, …) read-write. Node's fstat reports size 0
 * for block devices, so the size comes from sysfs.
 */
export async function openBlockDevice(path: string, options: BlockDeviceOptions = {}): Promise<HandleDevice> {
  const id = options.id ?? path;
  const flags = constants.O_RDWR | (options.exclusive === true ? constants.O_EXCL : 0);
  let handle: FileHandle;
  try {
    handle = await open(path, flags);
  } catch (e) {
    throw wrapOpenError(id, path, e);
  }
  try {
    const stat = await handle.stat({ bigint: true });
    if (!stat.isBlockDevice()) {
      fail(ErrorCode.DeviceUnsupported, `block device ${id}: ${path} is not a block device`, { device: id, path });
    }
    const sizeBytes = await blockDeviceSizeBytes(id, path, stat.rdev);
    return new HandleDevice({ id, path, kind: 'block', sizeBytes, handle });
  } catch (e) {
    await handle.close();
    throw wrapOpenError(id, path, e);
  }
}

async function blockDeviceSizeBytes(id: string, path: string, rdev: bigint): Promise<number> {
  const { major, minor } = decodeRdev(rdev);
  const sysfsPath = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await readFile(sysfsPath, 'utf8');
  } catch (e) {
    fail(ErrorCode.DeviceIo, `block device ${id}: cannot read its size from ${sysfsPath} (is /sys mounted?)`, {
      device: id,
      path,
      sysfsPath,
    }, e);
  }
  const trimmed = text.trim();
  const sizeBytes = /^\d+$/.test(trimmed) ? Number(trimmed) * sysfsSectorBytes : Number.NaN;
  if (!Number.isSafeInteger(sizeBytes)) {
    fail(ErrorCode.DeviceIo, `block device ${id}: unreadable size ${JSON.stringify(trimmed)} in ${sysfsPath}`, {
      device: id,
      path,
      sysfsPath,
    });
  }
  return sizeBytes;
}

/** Splits a Linux dev_t into major and minor numbers (glibc's gnu_dev_major/minor encoding). */
export function decodeRdev(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}
