import { ErrorCode, fail } from '../errors.ts';

/**
 * Largest single read or write a device accepts. Bounds the memory one request can pin;
 * matches the 32 MiB NBD payload limit most clients and servers use.
 */
export const ioBytesMax = 32 * 1024 * 1024;

/**
 * Validates one request against a device of `sizeBytes`. Zero-length requests are allowed
 * anywhere in [0, sizeBytes] so callers need no special case for empty payloads.
 */
export function checkIoRange(deviceId: string, sizeBytes: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) {
    fail(ErrorCode.InvalidArgument, `device ${deviceId}: offset and length must be integers`, {
      device: deviceId,
      offset,
      length,
    });
  }
  if (length < 0 || length > ioBytesMax) {
    fail(ErrorCode.InvalidArgument, `device ${deviceId}: request length ${length} outside [0, ${ioBytesMax}]`, {
      device: deviceId,
      offset,
      length,
      ioBytesMax,
    });
  }
  if (offset < 0 || offset + length > sizeBytes) {
    fail(
      ErrorCode.DeviceOutOfRange,
      `device ${deviceId}: [${offset}, ${offset + length}) is outside [0, ${sizeBytes})`,
      { device: deviceId, offset, length, sizeBytes },
    );
  }
}
