/**
 * Configuration of the LDAP directory, validated and frozen before any connection is made.
 * TLS is not optional: `ldaps://`, or `ldap://` upgraded with StartTLS before anything else is
 * sent, always verified against the configured CA. A password (the service account's or a user's)
 * therefore never crosses the network in clear text.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { ErrorCode, fail } from '../appliance/errors.ts';
import { directoryCacheMsMax } from './directory.ts';
import { isAttributeName, isWellFormedText, parseDn, type ParsedDn } from './ldap-dn.ts';

export const ldapUrlCharsMax = 512;
export const ldapConnectTimeoutMsDefault = 5_000;
export const ldapOperationTimeoutMsDefault = 10_000;
export const ldapTimeoutMsMin = 100;
export const ldapTimeoutMsMax = 120_000;
/** Entries a search may return, and so members a group may list. */
export const ldapSearchEntriesMax = 1_000;
/** Longest password accepted, the service account's or a user's. */
export const ldapPasswordCharsMax = 1024;
export const ldapCaPemBytesMax = 64 * 1024;
export const ldapCaCertificatesMax = 16;

export const ldapLoginAttributeDefault = 'uid';
export const ldapClientAttributeDefault = 'cn';
export const ldapMembershipAttributeDefault = 'member';

/**
 * What a group's membership attribute holds: member DNs (`member`, `uniqueMember`), or bare names
 * (`memberUid` of a posixGroup: a user's login name or a client's name).
 */
export type LdapMembershipValue = 'dn' | 'name';

export interface LdapDirectoryOptions {
  /** `ldaps://host[:port]`, or `ldap://host[:port]` (always upgraded with StartTLS). */
  readonly url: string;
  /** Only for `ldap://`, where it may be omitted and must not be false. */
  readonly startTls?: boolean;
  /** PEM of the CA certificate(s) that verify the server. */
  readonly caCertificatePem: string;
  /** The service account that searches for users, clients and groups. */
  readonly serviceBindDn: string;
  readonly serviceBindPassword: string;
  readonly userSearchBase: string;
  /** Default `uid`. */
  readonly userLoginAttribute?: string;
  /** Where the clients (application servers named in certificates) live. */
  readonly clientSearchBase: string;
  /** Default `cn`. */
  readonly clientNameAttribute?: string;
  /** Default `member`. */
  readonly membershipAttribute?: string;
  /** Default `name` when the attribute is `memberUid`, otherwise `dn`. */
  readonly membershipValue?: LdapMembershipValue;
  readonly connectTimeoutMs?: number;
  readonly operationTimeoutMs?: number;
  /** How long a membership answer may be reused; 0 (the default) asks every time. */
  readonly cacheMs?: number;
}

/** The validated configuration, without the service password (kept apart so it is never shown). */
export interface LdapDirectoryConfig {
  readonly url: string;
  readonly tls: 'ldaps' | 'starttls';
  readonly host: string;
  readonly port: number;
  readonly caCertificatePem: string;
  readonly serviceBindDn: ParsedDn;
  readonly userSearchBase: ParsedDn;
  readonly userLoginAttribute: string;
  readonly clientSearchBase: ParsedDn;
  readonly clientNameAttribute: string;
  readonly membershipAttribute: string;
  readonly membershipValue: LdapMembershipValue;
  readonly connectTimeoutMs: number;
  readonly operationTimeoutMs: number;
  readonly cacheMs: number;
}

const knownKeys: ReadonlySet<string> = new Set([
  'url',
  'startTls',
  'caCertificatePem',
  'serviceBindDn',
  'serviceBindPassword',
  'userSearchBase',
  'userLoginAttribute',
  'clientSearchBase',
  'clientNameAttribute',
  'membershipAttribute',
  'membershipValue',
  'connectTimeoutMs',
  'operationTimeoutMs',
  'cacheMs',
]);

function invalid(message: string): never {
  fail(ErrorCode.InvalidArgument, `LDAP directory configuration: ${message}`);
}

function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) invalid(`${field} is required`);
  return value;
}

function parseConfigDn(value: unknown, field: string): ParsedDn {
  try {
    return parseDn(requireString(value, field));
  } catch {
    invalid(`${field} is not a valid DN`);
  }
}

function attribute(value: unknown, field: string, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !isAttributeName(value)) invalid(`${field} is not an attribute name`);
  return value;
}

function timeout(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < ldapTimeoutMsMin || value > ldapTimeoutMsMax) {
    invalid(`${field} must be an integer from ${ldapTimeoutMsMin} to ${ldapTimeoutMsMax} ms`);
  }
  return value;
}

function parseUrl(value: unknown, startTls: unknown): Pick<LdapDirectoryConfig, 'url' | 'tls' | 'host' | 'port'> {
  const text = requireString(value, 'url');
  if (text.length > ldapUrlCharsMax) invalid(`url is longer than ${ldapUrlCharsMax} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    invalid('url is not a URL');
  }
  if (url.protocol !== 'ldap:' && url.protocol !== 'ldaps:') invalid('url must be ldaps:// or ldap:// (with StartTLS)');
  if (url.username !== '' || url.password !== '') invalid('url must not carry credentials');
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') {
    invalid('url must be scheme://host[:port] only');
  }
  const bracketed = url.hostname.startsWith('[') && url.hostname.endsWith(']');
  const host = bracketed ? url.hostname.slice(1, -1) : url.hostname;
  if (host === '' || (bracketed && isIP(host) !== 6)) invalid('url has no usable host');
  if (startTls !== undefined && typeof startTls !== 'boolean') invalid('startTls must be a boolean');
  const tls = url.protocol === 'ldaps:' ? 'ldaps' : 'starttls';
  if (tls === 'starttls' && startTls === false) invalid('ldap:// without StartTLS would send passwords in clear text');
  if (tls === 'ldaps' && startTls === true) invalid('startTls applies to ldap:// only; ldaps:// is already TLS');
  const port = url.port === '' ? (tls === 'ldaps' ? 636 : 389) : Number(url.port);
  const hostPart = bracketed ? `[${host}]` : host;
  return { url: `${url.protocol}//${hostPart}:${port}`, tls, host, port };
}

function parseCa(value: unknown): string {
  const pem = requireString(value, 'caCertificatePem');
  if (Buffer.byteLength(pem, 'utf8') > ldapCaPemBytesMax) invalid(`caCertificatePem is larger than ${ldapCaPemBytesMax} bytes`);
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) invalid('caCertificatePem holds no PEM certificate');
  if (blocks.length > ldapCaCertificatesMax) invalid(`caCertificatePem holds more than ${ldapCaCertificatesMax} certificates`);
  for (const block of blocks) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch {
      invalid('caCertificatePem holds a certificate that does not parse');
    }
    if (!cert.ca) invalid('caCertificatePem holds a certificate that is not a CA');
  }
  return blocks.join('\n');
}

/**
 * Refused: empty or whitespace-only (an unauthenticated bind would "succeed"), too long, or not
 * encodable. Shared by the service password and users' passwords.
 */
export function isUsablePassword(password: unknown): password is string {
  return (
    typeof password === 'string' &&
    password.trim().length > 0 &&
    password.length <= ldapPasswordCharsMax &&
    isWellFormedText(password)
  );
}

/**
 * @returns the frozen configuration and, apart, the service password.
 * @throws SV_INVALID_ARGUMENT naming the field (never echoing a value)
 */
export function validateLdapDirectoryOptions(options: LdapDirectoryOptions): {
  config: LdapDirectoryConfig;
  serviceBindPassword: string;
} {
  if (typeof options !== 'object' || options === null) invalid('options must be an object');
  for (const key of Object.keys(options)) {
    // A misspelt option (say `startTLS`) must not be silently ignored.
    if (!knownKeys.has(key)) invalid(`unknown option ${JSON.stringify(key.slice(0, 64))}`);
  }
  const target = parseUrl(options.url, options.startTls);
  const caCertificatePem = parseCa(options.caCertificatePem);
  const serviceBindDn = parseConfigDn(options.serviceBindDn, 'serviceBindDn');
  if (!isUsablePassword(options.serviceBindPassword)) {
    invalid(`serviceBindPassword is required (non-blank, at most ${ldapPasswordCharsMax} characters)`);
  }
  const membershipAttribute = attribute(options.membershipAttribute, 'membershipAttribute', ldapMembershipAttributeDefault);
  const membershipValue = options.membershipValue ?? (membershipAttribute.toLowerCase() === 'memberuid' ? 'name' : 'dn');
  if (membershipValue !== 'dn' && membershipValue !== 'name') invalid('membershipValue must be "dn" or "name"');
  const cacheMs = options.cacheMs ?? 0;
  if (typeof cacheMs !== 'number' || !Number.isInteger(cacheMs) || cacheMs < 0 || cacheMs > directoryCacheMsMax) {
    invalid(`cacheMs must be an integer from 0 to ${directoryCacheMsMax}`);
  }
  const config: LdapDirectoryConfig = {
    ...target,
    caCertificatePem,
    serviceBindDn,
    userSearchBase: parseConfigDn(options.userSearchBase, 'userSearchBase'),
    userLoginAttribute: attribute(options.userLoginAttribute, 'userLoginAttribute', ldapLoginAttributeDefault),
    clientSearchBase: parseConfigDn(options.clientSearchBase, 'clientSearchBase'),
    clientNameAttribute: attribute(options.clientNameAttribute, 'clientNameAttribute', ldapClientAttributeDefault),
    membershipAttribute,
    membershipValue,
    connectTimeoutMs: timeout(options.connectTimeoutMs, 'connectTimeoutMs', ldapConnectTimeoutMsDefault),
    operationTimeoutMs: timeout(options.operationTimeoutMs, 'operationTimeoutMs', ldapOperationTimeoutMsDefault),
    cacheMs,
  };
  return { config: Object.freeze(config), serviceBindPassword: options.serviceBindPassword };
}
