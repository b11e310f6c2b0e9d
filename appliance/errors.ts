/**
 * The error catalogue. Every error stripvault raises on purpose carries a stable
 * `code` (what callers, the CLI, the API and the NBD error mapping switch on) and
 * optional structured `detail`. Messages are for people and may change; codes may not.
 */

export const ErrorCode = {
  // argument and configuration validation
  InvalidArgument: 'SV_INVALID_ARGUMENT',
  InvalidGeometry: 'SV_INVALID_GEOMETRY',
  OutOfRange: 'SV_OUT_OF_RANGE',
  // split engine
  ShareRejected: 'SV_SHARE_REJECTED',
  NotEnoughShares: 'SV_NOT_ENOUGH_SHARES',
  // strip format
  StripBadMagic: 'SV_STRIP_BAD_MAGIC',
  StripUnknownVersion: 'SV_STRIP_UNKNOWN_VERSION',
  StripTruncated: 'SV_STRIP_TRUNCATED',
  StripInconsistent: 'SV_STRIP_INCONSISTENT',
  StripChecksum: 'SV_STRIP_CHECKSUM',
  StripHeaderAuth: 'SV_STRIP_HEADER_AUTH',
  StripNoKeyForWrapper: 'SV_STRIP_NO_KEY_FOR_WRAPPER',
  // storage devices
  DeviceIo: 'SV_DEVICE_IO',
  DeviceGone: 'SV_DEVICE_GONE',
  DeviceOutOfRange: 'SV_DEVICE_OUT_OF_RANGE',
  DeviceTooSmall: 'SV_DEVICE_TOO_SMALL',
  DeviceClosed: 'SV_DEVICE_CLOSED',
  DeviceNotFound: 'SV_DEVICE_NOT_FOUND',
  DeviceUnsupported: 'SV_DEVICE_UNSUPPORTED',
  DeviceExists: 'SV_DEVICE_EXISTS',
  // volumes
  VolumeUnavailable: 'SV_VOLUME_UNAVAILABLE',
  VolumeClosed: 'SV_VOLUME_CLOSED',
  VolumeMismatch: 'SV_VOLUME_MISMATCH',
  // metadata store
  StoreNotFound: 'SV_STORE_NOT_FOUND',
  StoreConflict: 'SV_STORE_CONFLICT',
  StoreMigration: 'SV_STORE_MIGRATION',
  StoreUnavailable: 'SV_STORE_UNAVAILABLE',
  // NBD front end and client
  NbdProtocol: 'SV_NBD_PROTOCOL',
  NbdRefused: 'SV_NBD_REFUSED',
  NbdRequestFailed: 'SV_NBD_REQUEST_FAILED',
  NbdConnectionClosed: 'SV_NBD_CONNECTION_CLOSED',
  // key wrapping
  KeyUnwrap: 'SV_KEY_UNWRAP',
  // PKI: a peer certificate that is not ours, not valid now, or not for this use; revoked; not in the registry
  CertInvalid: 'SV_CERT_INVALID',
  CertRevoked: 'SV_CERT_REVOKED',
  CertUnknown: 'SV_CERT_UNKNOWN',
  // key manager: master key, officer shares, sealed state
  Sealed: 'SV_SEALED',
  AlreadyUnsealed: 'SV_ALREADY_UNSEALED',
  KeySetInvalid: 'SV_KEY_SET_INVALID',
  OfficerShareMalformed: 'SV_OFFICER_SHARE_MALFORMED',
  OfficerShareInvalid: 'SV_OFFICER_SHARE_INVALID',
  OfficerShareForeign: 'SV_OFFICER_SHARE_FOREIGN',
  OfficerShareDuplicate: 'SV_OFFICER_SHARE_DUPLICATE',
  UnsealInsufficient: 'SV_UNSEAL_INSUFFICIENT',
  UnsealVerifyFailed: 'SV_UNSEAL_VERIFY_FAILED',
  // audit log: both codes mean the audited operation must be refused
  AuditUnavailable: 'SV_AUDIT_UNAVAILABLE',
  AuditTampered: 'SV_AUDIT_TAMPERED',
  // directory, communities of interest, access control
  AuthFailed: 'SV_AUTH_FAILED',
  DirectoryUnavailable: 'SV_DIRECTORY_UNAVAILABLE',
  NotFound: 'SV_NOT_FOUND',
  AccessDenied: 'SV_ACCESS_DENIED',
  NotInitialized: 'SV_NOT_INITIALIZED',
  AlreadyInitialized: 'SV_ALREADY_INITIALIZED',
  KeyDestroyed: 'SV_KEY_DESTROYED',
  // outstanding write list
  OwlCorrupt: 'SV_OWL_CORRUPT',
  // admin REST API: too many failed attempts; no API answering; an unexpected failure (no details)
  RateLimited: 'SV_RATE_LIMITED',
  ApiUnavailable: 'SV_API_UNAVAILABLE',
  Internal: 'SV_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class StripvaultError extends Error {
  readonly code: ErrorCode;
  readonly detail: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, detail?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StripvaultError';
    this.code = code;
    this.detail = detail === undefined ? undefined : Object.freeze({ ...detail });
  }
}

export function fail(code: ErrorCode, message: string, detail?: Record<string, unknown>, cause?: unknown): never {
  throw new StripvaultError(code, message, detail, cause === undefined ? undefined : { cause });
}

export function isStripvaultError(e: unknown, code?: ErrorCode): e is StripvaultError {
  return e instanceof StripvaultError && (code === undefined || e.code === code);
}

/** A broken invariant is a bug, not bad input: crash loudly (TigerBeetle style). */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`);
}
