/**
 * The CLI's side of the admin REST API: fetch with a deadline, the bearer token, and answers turned
 * back into StripvaultErrors with the server's stable code, so `stripvault` reports an API error
 * exactly as it reports a local one.
 */
import { isLoopbackHost } from '../admin-ui/api-server.ts';
import { apiTokenPath, isApiToken, readApiTokenFile } from '../admin-ui/api-token.ts';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';

export const apiUrlDefault = 'http://127.0.0.1:8080';
export const apiPathPrefix = '/api/v1';
/** Rotating a key or shredding re-writes every strip header of the volumes involved: minutes, not seconds. */
export const apiCallTimeoutMs = 10 * 60 * 1000;
/** Answers are JSON lists and PEM; anything larger is not our API. */
export const apiAnswerBytesMax = 16 * 1024 * 1024;

const knownCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** The --api URL: http(s), no credentials, query or fragment; plain http only to loopback. */
export function parseApiUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    fail(ErrorCode.InvalidArgument, `--api: ${JSON.stringify(text)} is not a URL (e.g. ${apiUrlDefault})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(ErrorCode.InvalidArgument, `--api: ${url.protocol} is not http: or https:`);
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    fail(ErrorCode.InvalidArgument, '--api: give only scheme, host, port and path (no user, query or fragment)');
  }
  // The token and officer shares would cross the network in clear text.
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    fail(ErrorCode.InvalidArgument, `--api: plain http is for loopback only; ${url.hostname} needs https`);
  }
  return url;
}

/**
 * The admin token, from the first of: --api-token-file, STRIPVAULT_API_TOKEN, DATA/api-token.
 * Undefined when none is there (commands that need it say so).
 */
export async function resolveApiToken(options: { tokenFile?: string | undefined; env: Readonly<Record<string, string | undefined>>; dataDir: string }): Promise<string | undefined> {
  if (options.tokenFile !== undefined) return readApiTokenFile(options.tokenFile);
  const fromEnv = options.env.STRIPVAULT_API_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') {
    const token = fromEnv.trim();
    if (!isApiToken(token)) fail(ErrorCode.InvalidArgument, 'STRIPVAULT_API_TOKEN does not hold an API token (64 hex digits)');
    return token;
  }
  try {
    return await readApiTokenFile(apiTokenPath(options.dataDir));
  } catch (e) {
    // Missing is normal (a workstation, not the appliance); present but unusable is not.
    if ((e as StripvaultError).detail?.errno === 'ENOENT') return undefined;
    throw e;
  }
}

export interface ApiCall {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** Below /api/v1, segments already encoded (see `segment`). */
  readonly path: string;
  readonly body?: unknown;
  /** Send the bearer token (every route but /status and /unseal). */
  readonly auth?: boolean;
}

/** One path segment, percent-encoded. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}

function networkFailure(url: URL, e: unknown, timeoutMs: number): never {
  const err = e as { name?: string; cause?: { code?: string } };
  if (err.name === 'TimeoutError') fail(ErrorCode.ApiUnavailable, `no answer from the appliance API at ${url.origin} within ${Math.round(timeoutMs / 1000)} s`);
  const code = err.cause?.code;
  if (code === 'ECONNREFUSED') {
    fail(ErrorCode.ApiUnavailable, `no appliance API at ${url.origin} (connection refused): is \`stripvault serve\` running? (or pass --api URL)`);
  }
  fail(ErrorCode.ApiUnavailable, `cannot reach the appliance API at ${url.origin}${code === undefined ? '' : ` (${code})`}`, code === undefined ? undefined : { errno: code });
}

export class ApiClient {
  readonly baseUrl: URL;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;

  constructor(options: { baseUrl: string; token?: string | undefined; timeoutMs?: number }) {
    this.baseUrl = parseApiUrl(options.baseUrl);
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? apiCallTimeoutMs;
  }

  #url(path: string): URL {
    const base = this.baseUrl.pathname.replace(/\/+$/, '');
    return new URL(`${base}${apiPathPrefix}${path}`, this.baseUrl);
  }

  async #send(call: ApiCall): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (call.auth !== false) {
      if (this.#token === undefined) {
        fail(ErrorCode.AuthFailed, 'no API token: pass --api-token-file FILE, set STRIPVAULT_API_TOKEN, or run where DATA/api-token is readable');
      }
      headers.authorization = `Bearer ${this.#token}`;
    }
    let body: string | undefined;
    if (call.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(call.body);
    }
    const url = this.#url(call.path);
    try {
      return await fetch(url, { method: call.method, headers, ...(body === undefined ? {} : { body }), signal: AbortSignal.timeout(this.#timeoutMs), redirect: 'error' });
    } catch (e) {
      networkFailure(this.baseUrl, e, this.#timeoutMs);
    }
  }

  async #text(res: Response): Promise<string> {
    const declared = Number(res.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > apiAnswerBytesMax) fail(ErrorCode.Internal, `the API answered with ${declared} bytes; at most ${apiAnswerBytesMax} expected`);
    try {
      const text = await res.text();
      if (text.length > apiAnswerBytesMax) fail(ErrorCode.Internal, `the API answered with more than ${apiAnswerBytesMax} bytes`);
      return text;
    } catch (e) {
      if (e instanceof StripvaultError) throw e;
      networkFailure(this.baseUrl, e, this.#timeoutMs);
    }
  }

  async #refusal(res: Response): Promise<never> {
    const text = await this.#text(res);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      fail(ErrorCode.Internal, `unexpected answer from the API: HTTP ${res.status}`);
    }
    const error = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    const code = typeof error?.code === 'string' ? error.code : undefined;
    const message = typeof error?.message === 'string' ? error.message : `HTTP ${res.status}`;
    if (code !== undefined && knownCodes.has(code)) throw new StripvaultError(code as ErrorCode, message, { httpStatus: res.status });
    fail(ErrorCode.Internal, `the API refused with ${code ?? `HTTP ${res.status}`}: ${message}`, { httpStatus: res.status });
  }

  /** A JSON call; undefined for 204 No Content. */
  async json<T>(call: ApiCall): Promise<T> {
    const res = await this.#send(call);
    if (!res.ok) return this.#refusal(res);
    if (res.status === 204) {
      await res.body?.cancel();
      return undefined as T;
    }
    const text = await this.#text(res);
    try {
      return JSON.parse(text) as T;
    } catch {
      fail(ErrorCode.Internal, `the API answered HTTP ${res.status} with something that is not JSON`);
    }
  }

  /** A call answered with text (PEM). */
  async text(call: ApiCall): Promise<string> {
    const res = await this.#send(call);
    if (!res.ok) return this.#refusal(res);
    return this.#text(res);
  }
}
