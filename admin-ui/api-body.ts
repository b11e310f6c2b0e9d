/**
 * Request bodies of the admin API: JSON only, bounded, parsed by us (not body-parser) so that a
 * parse error never quotes the body back — it may hold an officer share — and so the raw bytes can
 * be zeroed once parsed. Then every field is checked: unknown fields refused, types and bounds
 * enforced, all as SV_INVALID_ARGUMENT naming the field.
 *
 * Requiring `application/json` also keeps web pages out: a browser sends such a request cross-origin
 * only after a CORS preflight, which this API never grants, so a page the operator visits cannot
 * post to the API on localhost (a form or a `text/plain` fetch is refused with 415).
 */
import type { IncomingMessage } from 'node:http';
import { ErrorCode, fail } from '../appliance/errors.ts';
import { ApiRefusal } from './api-errors.ts';

export const apiBodyBytesMax = 64 * 1024;

const jsonContentType = /^application\/json\s*(?:;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length !== '0';
}

/**
 * The parsed body, or undefined when the request has none. 413 past `apiBodyBytesMax` (judged on
 * Content-Length before reading when there is one), 415 for anything but JSON in UTF-8, 400 for
 * malformed JSON or UTF-8 — always with a fixed message.
 */
export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  if (!hasBody(req)) return undefined;
  const type = req.headers['content-type'];
  if (type === undefined || !jsonContentType.test(type)) {
    throw new ApiRefusal(415, ErrorCode.InvalidArgument, 'request body must be JSON (Content-Type: application/json)');
  }
  const declared = Number(req.headers['content-length']);
  const tooLarge = () => new ApiRefusal(413, ErrorCode.InvalidArgument, `request body exceeds ${apiBodyBytesMax} bytes`);
  if (Number.isFinite(declared) && declared > apiBodyBytesMax) throw tooLarge();
  const raw = await readRaw(req, tooLarge);
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(raw);
    return JSON.parse(text) as unknown;
  } catch {
    throw new ApiRefusal(400, ErrorCode.InvalidArgument, 'request body is not valid JSON');
  } finally {
    raw.fill(0);
  }
}

/**
 * Listeners rather than `for await`: leaving an async iterator early destroys the request and with
 * it the socket, and the client would never see the 413. Past the limit the rest is left unread
 * (the answer closes the connection).
 */
function readRaw(req: IncomingMessage, tooLarge: () => Error): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const wipe = () => {
      for (const c of chunks) c.fill(0);
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      chunks.push(chunk);
      if (bytes > apiBodyBytesMax) {
        cleanup();
        wipe();
        // Keep draining into nothing so the socket is not left with a full receive buffer.
        req.resume();
        reject(tooLarge());
      }
    };
    const onEnd = () => {
      cleanup();
      const raw = Buffer.concat(chunks);
      wipe();
      resolve(raw);
    };
    const onError = () => {
      cleanup();
      wipe();
      reject(new ApiRefusal(400, ErrorCode.InvalidArgument, 'request body could not be read'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

export type Fields = Readonly<Record<string, unknown>>;

/**
 * The body as an object holding only `allowed` fields and every `required` one. A missing body
 * counts as `{}`, so routes without fields accept an empty POST.
 */
export function objectBody(body: unknown, required: readonly string[], optional: readonly string[] = []): Fields {
  const value = body === undefined ? {} : body;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(ErrorCode.InvalidArgument, 'request body must be a JSON object');
  const allowed = new Set([...required, ...optional]);
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) fail(ErrorCode.InvalidArgument, `unknown field ${JSON.stringify(key.slice(0, 64))}`, { field: key.slice(0, 64) });
  }
  for (const key of required) {
    if (!Object.hasOwn(value, key)) fail(ErrorCode.InvalidArgument, `missing field "${key}"`, { field: key });
  }
  return value as Fields;
}

export function stringField(value: unknown, field: string, charsMax: number): string {
  if (typeof value !== 'string') fail(ErrorCode.InvalidArgument, `${field} must be a string`, { field });
  if (value.length === 0 || value.length > charsMax) fail(ErrorCode.InvalidArgument, `${field} must be 1..${charsMax} characters`, { field });
  return value;
}

export function integerField(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail(ErrorCode.InvalidArgument, `${field} must be an integer in ${min}..${max}`, { field });
  }
  return value;
}

export function arrayField(value: unknown, field: string, min: number, max: number): readonly unknown[] {
  if (!Array.isArray(value) || value.length < min || value.length > max) {
    fail(ErrorCode.InvalidArgument, `${field} must be an array of ${min}..${max} items`, { field });
  }
  return value;
}
