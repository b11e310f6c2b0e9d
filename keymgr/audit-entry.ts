/**
 * One audit entry: what a caller asks to record, how it is checked, hashed into the chain, and
 * written as one line of the audit file.
 *
 *   hash = SHA-256( canonicalJson({ action, actor, at, detail, seq, subject }) ‖ prevHash )
 *
 * over UTF-8, with prevHash as 64 lower-case hex characters (fixed length, so the concatenation
 * is unambiguous) and 64 zeros before entry 1. A file line is canonicalJson of the whole record
 * (the fields above plus hash and prevHash) and a "\n".
 *
 * The detail is for identifiers and facts — ids, names, fingerprints, counts — never keys,
 * shares, passwords or plaintext. We refuse binary values and property names that denote a
 * secret (`key`, `masterKey`, `password`, `share`...; `keyId` or `shareIndex` are fine) to catch
 * the usual slip; this is a seatbelt, not a proof, and code review remains the real check.
 */
import { createHash } from 'node:crypto';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import {
  auditActionBytesMax,
  auditActorBytesMax,
  auditGenesisHash,
  auditSubjectBytesMax,
  type AuditHead,
  type AuditRow,
} from '../appliance/store/audit.ts';
import { checkText } from '../appliance/store/validate.ts';
import { canonicalJson, isPlainObject } from './audit-canonical.ts';

export { auditGenesisHash };

/** The canonical JSON of one entry's detail; small, because details are identifiers, not payloads. */
export const auditEntryDetailBytesMax = 4096;
export const auditDetailDepthMax = 8;
/**
 * A file line. Covers any row the store accepts (its detail bound is larger than ours), with
 * room for JSON escaping of the text fields; a longer line is not one we wrote.
 */
export const auditLineBytesMax = 32 * 1024;

export interface AuditEntry {
  /** Who: an officer, user or client name, or 'system'. */
  readonly actor: string;
  /** Dotted lower-case words: `key.workgroup.create`, `coi.member.add`, `cert.revoke`, `unseal`. */
  readonly action: string;
  /** What the action is about: a COI, key id, certificate serial, volume... */
  readonly subject: string;
  /** Identifiers and facts only (see the module comment); defaults to {}. */
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** An entry as stored in both sinks. */
export type AuditRecord = AuditRow;

type AuditBody = Omit<AuditRecord, 'hash' | 'prevHash'>;

const actionPattern = /^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$/;
const hashPattern = /^[0-9a-f]{64}$/;
// Words that name a secret itself when they end a property name (after camelCase/snake split).
const secretLastWords: ReadonlySet<string> = new Set([
  'key', 'keys', 'secret', 'secrets', 'password', 'passwords', 'passphrase', 'passwd', 'pin', 'share', 'shares',
  'token', 'tokens', 'plaintext', 'seed', 'material', 'credential', 'credentials',
]);
// Words that mark a secret wherever they appear in a property name.
const secretAnyWords: ReadonlySet<string> = new Set(['secret', 'secrets', 'password', 'passphrase', 'passwd', 'plaintext', 'private']);
const controlCharacter = /\p{Cc}/u;

function invalid(field: string, message: string): never {
  fail(ErrorCode.InvalidArgument, `${field}: ${message}`, { field });
}

function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter((w) => w.length > 0)
    .map((w) => w.toLowerCase());
}

export function isSecretPropertyName(name: string): boolean {
  const parts = words(name);
  const last = parts.at(-1);
  return (last !== undefined && secretLastWords.has(last)) || parts.some((w) => secretAnyWords.has(w));
}

function checkDetailValue(value: unknown, path: string, depth: number): void {
  if (depth > auditDetailDepthMax) invalid(path, `nested deeper than ${auditDetailDepthMax}`);
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) invalid(path, 'binary values are never audited (no key material in audit records)');
  if (typeof value === 'string') {
    if (controlCharacter.test(value)) invalid(path, 'must not contain control characters');
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkDetailValue(item, `${path}[${i}]`, depth + 1));
  } else if (typeof value === 'object' && value !== null) {
    if (!isPlainObject(value)) invalid(path, 'must be plain JSON (no class instances such as KeyObject or Buffer)');
    for (const [key, item] of Object.entries(value)) {
      if (isSecretPropertyName(key)) invalid(`${path}.${key}`, 'names a secret; audit records carry identifiers (e.g. keyId), never key material');
      checkDetailValue(item, `${path}.${key}`, depth + 1);
    }
  }
}

/** Validates what a caller asks to record; SV_INVALID_ARGUMENT names the offending field. */
export function checkAuditEntry(entry: AuditEntry): Omit<AuditBody, 'seq' | 'at'> {
  if (typeof entry !== 'object' || entry === null) invalid('audit', 'must be an object');
  const actor = checkText(entry.actor, 'audit.actor', auditActorBytesMax);
  const action = checkText(entry.action, 'audit.action', auditActionBytesMax);
  if (!actionPattern.test(action)) invalid('audit.action', 'must be dotted lower-case words like key.workgroup.create');
  const subject = checkText(entry.subject, 'audit.subject', auditSubjectBytesMax);
  const detail = entry.detail ?? {};
  if (!isPlainObject(detail)) invalid('audit.detail', 'must be a plain object');
  checkDetailValue(detail, 'audit.detail', 0);
  const json = canonicalJson(detail, 'audit.detail');
  if (Buffer.byteLength(json, 'utf8') > auditEntryDetailBytesMax) invalid('audit.detail', `more than ${auditEntryDetailBytesMax} bytes of JSON`);
  // A private copy: the caller may mutate its object after we hashed ours.
  return { actor, action, subject, detail: JSON.parse(json) as Record<string, unknown> };
}

export function auditHash(body: AuditBody, prevHash: string): string {
  const { seq, at, actor, action, subject, detail } = body;
  const text = canonicalJson({ seq, at, actor, action, subject, detail }, 'audit') + prevHash;
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** The next record after `head`. */
export function sealAuditRecord(head: AuditHead, entry: Omit<AuditBody, 'seq' | 'at'>, at: Date): AuditRecord {
  const body: AuditBody = { seq: head.seq + 1, at: at.toISOString(), ...entry };
  return { ...body, prevHash: head.hash, hash: auditHash(body, head.hash) };
}

/** True if the record's hash is the hash of its contents and prevHash. */
export function auditHashMatches(record: AuditRecord): boolean {
  try {
    return hashPattern.test(record.prevHash) && auditHash(record, record.prevHash) === record.hash;
  } catch (e) {
    // A value canonical JSON refuses (a fraction, say) was not written by us.
    if (isStripvaultError(e, ErrorCode.InvalidArgument)) return false;
    throw e;
  }
}

export function auditLine(record: AuditRecord): string {
  const { seq, at, actor, action, subject, detail, prevHash, hash } = record;
  return canonicalJson({ seq, at, actor, action, subject, detail, prevHash, hash }, 'audit') + '\n';
}

const lineFields = ['action', 'actor', 'at', 'detail', 'hash', 'prevHash', 'seq', 'subject'] as const;

/**
 * A file line (without its "\n") back into a record, or the reason it is not one. Checks form
 * only; whether the hash matches is the caller's question (auditHashMatches).
 */
export function parseAuditLine(line: string): AuditRecord | { readonly error: string } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { error: 'not JSON' };
  }
  if (!isPlainObject(value)) return { error: 'not a JSON object' };
  const keys = Object.keys(value).sort();
  if (keys.length !== lineFields.length || keys.some((k, i) => k !== lineFields[i])) return { error: 'wrong fields' };
  const { seq, at, actor, action, subject, detail, prevHash, hash } = value;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return { error: 'bad seq' };
  if (typeof at !== 'string' || Number.isNaN(Date.parse(at)) || new Date(at).toISOString() !== at) return { error: 'bad timestamp' };
  if (typeof actor !== 'string' || typeof action !== 'string' || typeof subject !== 'string') return { error: 'bad text field' };
  if (!isPlainObject(detail)) return { error: 'bad detail' };
  if (typeof prevHash !== 'string' || !hashPattern.test(prevHash) || typeof hash !== 'string' || !hashPattern.test(hash)) {
    return { error: 'bad hash' };
  }
  const record: AuditRecord = { seq, at, actor, action, subject, detail, prevHash, hash };
  let canonical: string;
  try {
    canonical = auditLine(record);
  } catch {
    return { error: 'not canonical JSON' };
  }
  // Rewritten spacing or key order changes no hash but is still an edit of the file.
  if (canonical !== line + '\n') return { error: 'not canonical JSON' };
  return record;
}

/** Same entry in both sinks: equal hashes over equal contents. */
export function sameAuditRecord(a: AuditRecord, b: AuditRecord): boolean {
  return auditLine(a) === auditLine(b);
}
