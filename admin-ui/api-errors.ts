/**
 * The one place that turns an error into an HTTP answer: a status and the JSON body
 * `{ "error": { "code": "SV_…", "message": "…" } }`. Clients switch on `code`, never on the status or
 * the message; the status only tells generic HTTP tooling roughly what happened.
 *
 * Choices worth knowing:
 * - Officer-share refusals (malformed, invalid, foreign, duplicate) and unseal failures are 422: the
 *   request was well-formed JSON with a `share` string, the key manager refused what it holds. 400
 *   is kept for requests that do not follow the API's own rules (bad JSON, wrong types, unknown fields).
 * - Sealed and not initialized are 503, like the other "not now" states (audit log, directory,
 *   store unavailable): retrying later, after an unseal or init, can succeed.
 * - Anything not listed is a bug or a failure the caller cannot act on: 500 `SV_INTERNAL` with a fixed
 *   message, so no stack trace, path or internal detail reaches the client (it is logged instead).
 */
import { ErrorCode, StripvaultError, isStripvaultError } from '../appliance/errors.ts';

export interface ApiErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export interface ApiErrorAnswer {
  readonly status: number;
  readonly body: ApiErrorBody;
}

/** Shorter strings than this appear in ordinary messages by chance; they are not worth scrubbing. */
const secretQuoteCharsMin = 8;

export const internalErrorMessage = 'internal error; see the appliance log';

const statusByCode: ReadonlyMap<string, number> = new Map<string, number>([
  [ErrorCode.InvalidArgument, 400],
  [ErrorCode.InvalidGeometry, 400],
  [ErrorCode.OutOfRange, 400],
  [ErrorCode.OfficerShareMalformed, 422],
  [ErrorCode.OfficerShareInvalid, 422],
  [ErrorCode.OfficerShareForeign, 422],
  [ErrorCode.OfficerShareDuplicate, 422],
  [ErrorCode.UnsealInsufficient, 422],
  [ErrorCode.UnsealVerifyFailed, 422],
  [ErrorCode.AuthFailed, 401],
  [ErrorCode.AccessDenied, 403],
  [ErrorCode.NotFound, 404],
  [ErrorCode.StoreNotFound, 404],
  [ErrorCode.DeviceNotFound, 404],
  [ErrorCode.CertUnknown, 404],
  [ErrorCode.StoreConflict, 409],
  [ErrorCode.AlreadyInitialized, 409],
  [ErrorCode.AlreadyUnsealed, 409],
  [ErrorCode.KeyDestroyed, 409],
  [ErrorCode.DeviceExists, 409],
  [ErrorCode.CertRevoked, 409],
  [ErrorCode.RateLimited, 429],
  [ErrorCode.Sealed, 503],
  [ErrorCode.NotInitialized, 503],
  [ErrorCode.AuditUnavailable, 503],
  [ErrorCode.AuditTampered, 503],
  [ErrorCode.DirectoryUnavailable, 503],
  [ErrorCode.StoreUnavailable, 503],
  [ErrorCode.VolumeUnavailable, 503],
]);

/**
 * A refusal at the HTTP layer whose status is not the code's usual one: 413 (body too large) and
 * 415 (not JSON) still carry SV_INVALID_ARGUMENT, a 404 for an unknown route SV_NOT_FOUND.
 */
export class ApiRefusal extends StripvaultError {
  readonly status: number;
  constructor(status: number, code: ErrorCode, message: string) {
    super(code, message);
    this.name = 'ApiRefusal';
    this.status = status;
  }
}

/** The HTTP status for a stable code; undefined for codes the API does not pass through. */
export function httpStatusForCode(code: string): number | undefined {
  return statusByCode.get(code);
}

export function errorBody(code: string, message: string): ApiErrorBody {
  return { error: { code, message } };
}

/** Shares may be pasted with whitespace that the parser ignores, so the compact form counts too. */
function quotesSecret(message: string, secret: string): boolean {
  const forms = [secret.trim(), secret.replace(/\s+/g, '')];
  return forms.some((f) => f.length >= secretQuoteCharsMin && message.includes(f));
}

/**
 * `secrets` are strings that must never appear in an answer (a share being submitted): a message
 * that quotes one is replaced by a fixed one. The key manager promises never to quote them; this
 * holds even if some layer below breaks that promise.
 */
export function toApiError(e: unknown, secrets: readonly string[] = []): ApiErrorAnswer {
  if (isStripvaultError(e)) {
    const status = e instanceof ApiRefusal ? e.status : statusByCode.get(e.code);
    if (status !== undefined) {
      const quotes = secrets.some((s) => quotesSecret(e.message, s));
      return { status, body: errorBody(e.code, quotes ? 'refused' : e.message) };
    }
  }
  return { status: 500, body: errorBody(ErrorCode.Internal, internalErrorMessage) };
}
