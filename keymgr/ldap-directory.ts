/**
 * The directory in an LDAP server (through ldapts): users log in with an LDAP simple bind, and a
 * community of interest is an LDAP group whose members are users and clients.
 *
 * Every call opens its own verified TLS connection (see ldap-connection.ts), binds as the service
 * account to search, and closes it; a user's password is checked by a bind as that user on a
 * second, separate connection. Names are never spliced into filter strings: filters are built as
 * ldapts filter objects, which travel as BER structures, so `*`, `(`, `)`, `\` and NUL in a name
 * are literal characters that match only themselves.
 */
import { EqualityFilter, OrFilter, ResultCodeError, type Client, type Entry } from 'ldapts';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import type { AuthenticatedUser, Directory, DirectoryMember } from './directory.ts';
import {
  isUsablePassword,
  ldapSearchEntriesMax,
  validateLdapDirectoryOptions,
  type LdapDirectoryConfig,
  type LdapDirectoryOptions,
} from './ldap-config.ts';
import { openLdapConnection, unavailable } from './ldap-connection.ts';
import { dnEquals, dnIsWithin, dnKey, isWellFormedText, parseDn, type ParsedDn } from './ldap-dn.ts';

/** Longest user login or client name we look up. */
export const ldapNameCharsMax = 256;
/** Cached membership answers kept at most (only when caching is on). */
export const ldapCacheEntriesMax = 10_000;
/** Names per OR filter when members() confirms many names at once. */
export const ldapFilterTermsMax = 100;

/** The only message of a refused login, whatever the reason, so it reveals nothing. */
const authFailedMessage = 'authentication failed';

/**
 * LDAP result codes of a bind as the user that mean "no" (rather than "cannot answer"):
 * constraintViolation (a locked account under ppolicy), noSuchObject (removed since the search),
 * invalidDNSyntax, inappropriateAuthentication, invalidCredentials, insufficientAccessRights,
 * unwillingToPerform (e.g. an unauthenticated bind the server disallows).
 */
const bindRefusalCodes: ReadonlySet<number> = new Set([19, 32, 34, 48, 49, 50, 53]);

const controlCharacters = /[\u0000-\u001f\u007f-\u009f]/;

function authFailed(): never {
  fail(ErrorCode.AuthFailed, authFailedMessage);
}

/** A login or client name we are willing to search for. */
export function isUsableName(name: unknown): name is string {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    name.length <= ldapNameCharsMax &&
    name.trim() === name &&
    !controlCharacters.test(name) &&
    isWellFormedText(name)
  );
}

function attributeValues(entry: Entry, attribute: string): string[] {
  const wanted = attribute.toLowerCase();
  for (const [key, value] of Object.entries(entry)) {
    if (key.toLowerCase() !== wanted) continue;
    const values = Array.isArray(value) ? value : [value];
    return values.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : String(v)));
  }
  return [];
}

function tryParseDn(text: string): ParsedDn | null {
  try {
    return parseDn(text);
  } catch {
    return null;
  }
}

/** The value of `attribute` that names the entry as `name` was asked for (the directory's spelling). */
function canonicalName(values: readonly string[], name: string): string {
  return values.find((v) => v === name) ?? values.find((v) => v.toLowerCase() === name.toLowerCase()) ?? name;
}

interface FoundEntry {
  readonly dn: ParsedDn;
  readonly values: readonly string[];
}

interface MemberCandidate {
  readonly kind: DirectoryMember['kind'];
  readonly dn: ParsedDn | null;
  readonly name: string;
}

export interface LdapDirectoryDeps {
  /** The clock of the cache; tests move it. */
  readonly now?: () => number;
}

export class LdapDirectory implements Directory {
  readonly kind = 'ldap';
  readonly config: LdapDirectoryConfig;
  readonly #servicePassword: string;
  readonly #now: () => number;
  readonly #cache = new Map<string, { readonly expiresAt: number; readonly value: boolean | readonly DirectoryMember[] }>();
  #closed = false;

  /** @throws SV_INVALID_ARGUMENT for a configuration that is incomplete, malformed or without TLS */
  constructor(options: LdapDirectoryOptions, deps: LdapDirectoryDeps = {}) {
    const { config, serviceBindPassword } = validateLdapDirectoryOptions(options);
    this.config = config;
    this.#servicePassword = serviceBindPassword;
    this.#now = deps.now ?? Date.now;
  }

  async authenticate(user: string, password: string): Promise<AuthenticatedUser> {
    // Before any traffic: an empty password would make the bind below an unauthenticated bind,
    // which many servers answer with success.
    if (!isUsablePassword(password) || !isUsableName(user)) authFailed();
    const found = await this.#asService((client) => this.#findOne(client, this.config.userSearchBase, this.config.userLoginAttribute, user));
    if (found === null) authFailed();
    const connection = await openLdapConnection(this.config);
    try {
      await connection.client.bind(found.dn.text, password);
    } catch (e) {
      if (e instanceof ResultCodeError && bindRefusalCodes.has(e.code)) authFailed();
      unavailable('the login bind did not complete', e);
    } finally {
      await connection.close();
    }
    return { name: canonicalName(found.values, user), ref: found.dn.text };
  }

  async isMember(group: string, member: DirectoryMember): Promise<boolean> {
    const groupDn = parseDn(group);
    if (!isDirectoryMember(member)) return false;
    const cacheKey = `m\u0000${dnKey(groupDn)}\u0000${member.kind}\u0000${member.name}`;
    const cached = this.#cached(cacheKey);
    if (typeof cached === 'boolean') return cached;
    const answer = await this.#asService(async (client) => {
      const [base, attribute] = this.#baseOf(member.kind);
      const found = await this.#findOne(client, base, attribute, member.name);
      if (found === null) return false;
      const value = this.config.membershipValue === 'dn' ? found.dn.text : canonicalName(found.values, member.name);
      const entries = await this.#search(client, groupDn, {
        scope: 'base',
        filter: new EqualityFilter({ attribute: this.config.membershipAttribute, value }),
        attributes: ['1.1'],
        sizeLimit: 1,
      });
      return entries !== null && entries.length === 1;
    });
    this.#remember(cacheKey, answer);
    return answer;
  }

  async members(group: string): Promise<readonly DirectoryMember[]> {
    const groupDn = parseDn(group);
    const cacheKey = `g\u0000${dnKey(groupDn)}`;
    const cached = this.#cached(cacheKey);
    if (Array.isArray(cached)) return cached;
    const answer = await this.#asService(async (client) => {
      const attribute = this.config.membershipAttribute;
      const entries = await this.#search(client, groupDn, { scope: 'base', attributes: [attribute], sizeLimit: 1 });
      const entry = entries?.[0];
      if (entry === undefined) return [];
      // The bound: a group larger than this lists its first members only.
      const values = attributeValues(entry, attribute).slice(0, ldapSearchEntriesMax);
      const candidates: MemberCandidate[] =
        this.config.membershipValue === 'name'
          ? values.filter(isUsableName).flatMap((name) => [
              { kind: 'user' as const, dn: null, name },
              { kind: 'client' as const, dn: null, name },
            ])
          : await this.#candidatesFromDns(client, values);
      return this.#confirm(client, candidates);
    });
    const frozen = Object.freeze(answer.map((m) => Object.freeze({ ...m })));
    this.#remember(cacheKey, frozen);
    return frozen;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#cache.clear();
  }

  #baseOf(kind: DirectoryMember['kind']): [ParsedDn, string] {
    return kind === 'user'
      ? [this.config.userSearchBase, this.config.userLoginAttribute]
      : [this.config.clientSearchBase, this.config.clientNameAttribute];
  }

  /** Runs `fn` on a fresh connection bound as the service account. */
  async #asService<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    if (this.#closed) unavailable('the directory is closed');
    const connection = await openLdapConnection(this.config);
    try {
      try {
        await connection.client.bind(this.config.serviceBindDn.text, this.#servicePassword);
      } catch (e) {
        unavailable('the service account bind failed', e);
      }
      return await fn(connection.client);
    } catch (e) {
      if (isStripvaultError(e)) throw e;
      unavailable('a directory operation failed', e);
    } finally {
      await connection.close();
    }
  }

  /** Entries of a search; null when the base does not exist. */
  async #search(client: Client, base: ParsedDn, options: Parameters<Client['search']>[1]): Promise<Entry[] | null> {
    try {
      const result = await client.search(base.text, options);
      return result.searchEntries;
    } catch (e) {
      if (e instanceof ResultCodeError && e.code === 32) return null; // noSuchObject
      throw e;
    }
  }

  /** The one entry below `base` whose `attribute` equals `name`; null for none or several. */
  async #findOne(client: Client, base: ParsedDn, attribute: string, name: string): Promise<FoundEntry | null> {
    const entries = await this.#search(client, base, {
      scope: 'sub',
      filter: new EqualityFilter({ attribute, value: name }),
      attributes: [attribute],
      sizeLimit: 2,
    });
    if (entries === null) unavailable('a search base does not exist');
    const entry = entries[0];
    if (entries.length !== 1 || entry === undefined) return null;
    const dn = tryParseDn(entry.dn);
    if (dn === null || !dnIsWithin(dn, base)) return null;
    return { dn, values: attributeValues(entry, attribute) };
  }

  /** Every entry below `base` whose `attribute` is one of `names`. */
  async #findMany(client: Client, base: ParsedDn, attribute: string, names: readonly string[]): Promise<FoundEntry[]> {
    const found: FoundEntry[] = [];
    for (let start = 0; start < names.length; start += ldapFilterTermsMax) {
      const chunk = names.slice(start, start + ldapFilterTermsMax);
      const entries = await this.#search(client, base, {
        scope: 'sub',
        filter: new OrFilter({ filters: chunk.map((value) => new EqualityFilter({ attribute, value })) }),
        attributes: [attribute],
        sizeLimit: ldapSearchEntriesMax,
      });
      if (entries === null) unavailable('a search base does not exist');
      for (const entry of entries) {
        const dn = tryParseDn(entry.dn);
        if (dn !== null && dnIsWithin(dn, base)) found.push({ dn, values: attributeValues(entry, attribute) });
      }
    }
    return found;
  }

  /** Member DNs to (kind, DN, probable name): the name from the first RDN, or read from the entry. */
  async #candidatesFromDns(client: Client, values: readonly string[]): Promise<MemberCandidate[]> {
    const candidates: MemberCandidate[] = [];
    for (const value of values) {
      const dn = tryParseDn(value);
      if (dn === null) continue;
      const inUsers = dnIsWithin(dn, this.config.userSearchBase);
      const inClients = dnIsWithin(dn, this.config.clientSearchBase);
      if (!inUsers && !inClients) continue;
      // Nested bases: the deeper one is the more specific claim.
      const kind =
        inUsers && inClients
          ? this.config.clientSearchBase.rdnKeys.length > this.config.userSearchBase.rdnKeys.length
            ? 'client'
            : 'user'
          : inUsers
            ? 'user'
            : 'client';
      const [, attribute] = this.#baseOf(kind);
      const first = dn.rdns[0];
      const rdnName = first !== undefined && first.length === 1 && first[0]?.type === attribute.toLowerCase() ? first[0].value : null;
      if (rdnName !== null) {
        candidates.push({ kind, dn, name: rdnName });
        continue;
      }
      const entries = await this.#search(client, dn, { scope: 'base', attributes: [attribute], sizeLimit: 1 });
      const read = entries?.[0] === undefined ? [] : attributeValues(entries[0], attribute);
      const only = read.length === 1 ? read[0] : undefined;
      if (only !== undefined) candidates.push({ kind, dn, name: only });
    }
    return candidates;
  }

  /**
   * Keeps the candidates that isMember would accept: the name resolves to exactly one entry of
   * its kind (and, for DN membership, to that very DN). Names come back spelt as the directory has them.
   */
  async #confirm(client: Client, candidates: readonly MemberCandidate[]): Promise<DirectoryMember[]> {
    const confirmed: DirectoryMember[] = [];
    const seen = new Set<string>();
    for (const kind of ['user', 'client'] as const) {
      const ofKind = candidates.filter((c) => c.kind === kind && isUsableName(c.name));
      if (ofKind.length === 0) continue;
      const [base, attribute] = this.#baseOf(kind);
      const names = [...new Set(ofKind.map((c) => c.name))];
      const entries = await this.#findMany(client, base, attribute, names);
      for (const candidate of ofKind) {
        const folded = candidate.name.toLowerCase();
        const matching = entries.filter((e) => e.values.some((v) => v.toLowerCase() === folded));
        const only = matching[0];
        if (matching.length !== 1 || only === undefined) continue;
        if (candidate.dn !== null && !dnEquals(candidate.dn, only.dn)) continue;
        const name = canonicalName(only.values, candidate.name);
        const key = `${kind}\u0000${name}`;
        if (seen.has(key)) continue;
        seen.add(key);
        confirmed.push({ kind, name });
      }
    }
    return confirmed;
  }

  #cached(key: string): boolean | readonly DirectoryMember[] | undefined {
    const hit = this.#cache.get(key);
    if (hit === undefined) return undefined;
    if (this.#now() < hit.expiresAt) return hit.value;
    this.#cache.delete(key);
    return undefined;
  }

  #remember(key: string, value: boolean | readonly DirectoryMember[]): void {
    if (this.config.cacheMs === 0 || this.#closed) return;
    if (this.#cache.size >= ldapCacheEntriesMax) {
      const oldest = this.#cache.keys().next();
      if (oldest.done !== true) this.#cache.delete(oldest.value);
    }
    this.#cache.delete(key);
    this.#cache.set(key, { expiresAt: this.#now() + this.config.cacheMs, value });
  }
}

function isDirectoryMember(member: unknown): member is DirectoryMember {
  if (typeof member !== 'object' || member === null) return false;
  const { kind, name } = member as { kind?: unknown; name?: unknown };
  return (kind === 'user' || kind === 'client') && isUsableName(name);
}
