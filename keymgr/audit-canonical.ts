/**
 * Canonical JSON for hashing audit entries: object keys sorted by UTF-16 code units, no
 * whitespace, strings and numbers as ECMAScript's JSON.stringify writes them. For the values we
 * allow this is RFC 8785 (JCS), so a verifier in another language can recompute every hash.
 *
 * Only plain JSON goes in: null, booleans, safe integers, strings, arrays and plain objects.
 * Fractions are refused because their text form is where JSON implementations disagree.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';

/** Deeper values are a runaway structure, not an audit detail. */
export const canonicalDepthMax = 16;

// With the u flag a surrogate pair is one code point; only a lone surrogate is category Cs.
const loneSurrogate = /\p{Cs}/u;

function refuse(path: string, message: string): never {
  fail(ErrorCode.InvalidArgument, `${path}: ${message}`, { field: path });
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function write(value: unknown, path: string, depth: number, out: string[]): void {
  if (depth > canonicalDepthMax) refuse(path, `nested deeper than ${canonicalDepthMax}`);
  if (value === null || typeof value === 'boolean') {
    out.push(String(value));
  } else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) refuse(path, 'numbers must be safe integers');
    // -0 and 0 are one JSON number; String(-0) is "0" as JSON.stringify writes it.
    out.push(String(value));
  } else if (typeof value === 'string') {
    if (loneSurrogate.test(value)) refuse(path, 'strings must be well-formed Unicode (no lone surrogates)');
    out.push(JSON.stringify(value));
  } else if (Array.isArray(value)) {
    out.push('[');
    value.forEach((item, i) => {
      if (i > 0) out.push(',');
      write(item, `${path}[${i}]`, depth + 1, out);
    });
    out.push(']');
  } else if (isPlainObject(value)) {
    out.push('{');
    // Default sort compares UTF-16 code units, as JCS requires.
    Object.keys(value)
      .sort()
      .forEach((key, i) => {
        if (loneSurrogate.test(key)) refuse(path, 'keys must be well-formed Unicode');
        if (i > 0) out.push(',');
        out.push(JSON.stringify(key), ':');
        write(value[key], `${path}.${key}`, depth + 1, out);
      });
    out.push('}');
  } else {
    refuse(path, `${ArrayBuffer.isView(value) || value instanceof ArrayBuffer ? 'binary data' : typeof value} is not plain JSON`);
  }
}

/** SV_INVALID_ARGUMENT, naming the offending path under `root`, for anything but plain JSON. */
export function canonicalJson(value: unknown, root = 'value'): string {
  const out: string[] = [];
  write(value, root, 0, out);
  return out.join('');
}
