/**
 * Distinguished names (RFC 4514), parsed only as far as the LDAP directory needs: to refuse a
 * malformed or oversized DN before it reaches the server, to tell whether a member DN lies under
 * the user or the client search base, and to read a member's name from its first RDN. The server
 * stays the authority on matching; our comparison folds case, as the naming attributes of the
 * standard schemas (uid, cn, ou, dc, o) do.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';

/** Longer than any DN a sane directory hands out; bounds parsing and what we send. */
export const ldapDnCharsMax = 1024;
export const ldapDnRdnsMax = 32;
/** Attribute descriptions in configuration (`uid`, `member`, …). */
export const ldapAttributeCharsMax = 64;

export interface AttributeValueAssertion {
  /** Lower case. */
  readonly type: string;
  /** Unescaped. */
  readonly value: string;
}

/** One RDN: usually one assertion, several when multi-valued (`cn=a+sn=b`). */
export type Rdn = readonly AttributeValueAssertion[];

export interface ParsedDn {
  /** As given (already validated): what we send to the server. */
  readonly text: string;
  /** Most specific first, as written. */
  readonly rdns: readonly Rdn[];
  /** Case-folded canonical form of each RDN, for comparisons only. */
  readonly rdnKeys: readonly string[];
}

const descriptorPattern = /^[A-Za-z][A-Za-z0-9-]*$/;
const numericOidPattern = /^[0-9]+(\.[0-9]+)+$/;
const hexDigits = '0123456789abcdefABCDEF';

/** An attribute description we accept in configuration and DNs: a name or a numeric OID. */
export function isAttributeName(name: string): boolean {
  return name.length <= ldapAttributeCharsMax && (descriptorPattern.test(name) || numericOidPattern.test(name));
}

function invalid(reason: string): never {
  fail(ErrorCode.InvalidArgument, `invalid distinguished name: ${reason}`);
}

const controlCharacter = /[\u0000-\u001f\u007f]/;

/** @throws SV_INVALID_ARGUMENT */
export function parseDn(text: string): ParsedDn {
  if (typeof text !== 'string') invalid('not a string');
  if (text.length === 0) invalid('empty');
  if (text.length > ldapDnCharsMax) invalid(`longer than ${ldapDnCharsMax} characters`);
  if (!isWellFormedText(text)) invalid('not well-formed Unicode');
  const rdns: Rdn[] = [];
  let current: AttributeValueAssertion[] = [];
  let i = 0;
  const skipSpaces = (): void => {
    while (text[i] === ' ') i++;
  };
  for (;;) {
    skipSpaces();
    const typeStart = i;
    while (i < text.length && text[i] !== '=' && text[i] !== ',' && text[i] !== '+' && text[i] !== ' ') i++;
    const type = text.slice(typeStart, i);
    if (!isAttributeName(type)) invalid('bad attribute type');
    skipSpaces();
    if (text[i] !== '=') invalid('missing "="');
    i++;
    skipSpaces();
    const value = parseValue();
    if (value.length === 0) invalid('empty attribute value');
    current.push({ type: type.toLowerCase(), value });
    if (i >= text.length) {
      rdns.push(current);
      break;
    }
    const separator = text[i];
    i++;
    if (separator === ',') {
      rdns.push(current);
      current = [];
      if (rdns.length >= ldapDnRdnsMax) invalid(`more than ${ldapDnRdnsMax} RDNs`);
    } else if (separator !== '+') {
      invalid('unexpected character');
    }
  }

  function parseValue(): string {
    if (text[i] === '#') {
      // A BER-encoded value; kept as written, compared as written.
      const start = i++;
      while (i < text.length && hexDigits.includes(text[i] ?? '')) i++;
      if ((i - start - 1) % 2 !== 0 || i - start === 1) invalid('bad hex value');
      const raw = text.slice(start, i);
      skipSpaces();
      return raw.toLowerCase();
    }
    const bytes: number[] = [];
    let trailingSpaces = 0;
    while (i < text.length) {
      const ch = text[i] ?? '';
      if (ch === ',' || ch === '+') break;
      if (ch === '\\') {
        const next = text[i + 1] ?? '';
        const after = text[i + 2] ?? '';
        if (hexDigits.includes(next) && next !== '' && hexDigits.includes(after) && after !== '') {
          bytes.push(parseInt(next + after, 16));
          i += 3;
        } else if (next !== '' && ' "#+,;<=>\\'.includes(next)) {
          bytes.push(next.charCodeAt(0));
          i += 2;
        } else {
          invalid('bad escape');
        }
        trailingSpaces = 0;
        continue;
      }
      if ('";<>'.includes(ch) || controlCharacter.test(ch)) invalid('character must be escaped');
      const codePoint = text.codePointAt(i) ?? 0;
      const encoded = Buffer.from(String.fromCodePoint(codePoint), 'utf8');
      for (const b of encoded) bytes.push(b);
      i += codePoint > 0xffff ? 2 : 1;
      trailingSpaces = ch === ' ' ? trailingSpaces + 1 : 0;
    }
    // Unescaped trailing spaces are not part of the value (RFC 4514 requires escaping them).
    const kept = bytes.slice(0, bytes.length - trailingSpaces);
    let value: string;
    try {
      value = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(kept));
    } catch {
      invalid('escaped bytes are not UTF-8');
    }
    if (value.includes('\u0000')) invalid('NUL in value');
    return value;
  }

  const rdnKeys = rdns.map((rdn) =>
    [...rdn]
      .map((ava) => `${ava.type}=${escapeDnValue(ava.value.toLowerCase())}`)
      .sort()
      .join('+'),
  );
  return Object.freeze({ text, rdns: Object.freeze(rdns.map((r) => Object.freeze(r))), rdnKeys: Object.freeze(rdnKeys) });
}

/** RFC 4514 escaping of one attribute value. */
export function escapeDnValue(value: string): string {
  let out = '';
  for (let k = 0; k < value.length; k++) {
    const ch = value[k] ?? '';
    if ('"+,;<>\\='.includes(ch) || (ch === '#' && k === 0) || (ch === ' ' && (k === 0 || k === value.length - 1))) {
      out += `\\${ch}`;
    } else if (controlCharacter.test(ch)) {
      out += `\\${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
    } else {
      out += ch;
    }
  }
  return out;
}

/** Whether `dn` is `base` or lies below it. */
export function dnIsWithin(dn: ParsedDn, base: ParsedDn): boolean {
  const offset = dn.rdnKeys.length - base.rdnKeys.length;
  return offset >= 0 && base.rdnKeys.every((key, k) => dn.rdnKeys[offset + k] === key);
}

export function dnEquals(a: ParsedDn, b: ParsedDn): boolean {
  return a.rdnKeys.length === b.rdnKeys.length && dnIsWithin(a, b);
}

/** The canonical form as one string (a map key). */
export function dnKey(dn: ParsedDn): string {
  return dn.rdnKeys.join(',');
}

/** No lone UTF-16 surrogates (they cannot be encoded as UTF-8 for the wire). */
export function isWellFormedText(text: string): boolean {
  return !/[\ud800-\udfff]/u.test(text);
}
