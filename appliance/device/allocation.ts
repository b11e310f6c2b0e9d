/** Where on a storage device a new strip goes: first fit among the gaps the existing strips leave. */
import { ErrorCode, fail } from '../errors.ts';

/** Strips start on this boundary so they stay aligned for block devices and O_DIRECT later. */
export const stripAlignBytes = 1024 * 1024;

export interface Region {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export function allocateRegion(deviceBytes: number, used: readonly Region[], bytes: number, alignBytes = stripAlignBytes): number {
  const sorted = [...used].sort((a, b) => a.offsetBytes - b.offsetBytes);
  let cursor = 0;
  for (const r of sorted) {
    if (r.offsetBytes - cursor >= bytes) return cursor;
    cursor = Math.max(cursor, Math.ceil((r.offsetBytes + r.lengthBytes) / alignBytes) * alignBytes);
  }
  if (deviceBytes - cursor >= bytes) return cursor;
  fail(ErrorCode.DeviceTooSmall, `no free region of ${bytes} bytes (largest tail gap ${Math.max(0, deviceBytes - cursor)})`, {
    bytes,
    deviceBytes,
  });
}
