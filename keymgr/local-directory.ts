/**
 * The embedded default's directory, kept in the metadata store: local users with scrypt password
 * hashes, and groups that are the local COIs (a group reference is a COI name). Nothing is cached,
 * so a change is seen by the next question. User changes are audited like every other
 * access-control change, and refused when the audit log cannot be written.
 */
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import type { Store } from '../appliance/store/store.ts';
import { checkName } from '../appliance/store/validate.ts';
import { audited, type AuditLog } from './audit.ts';
import type { AuthenticatedUser, Directory, DirectoryMember } from './directory.ts';
import type { Actor } from './key-manager-api.ts';
import { validateMember, validateUserName } from './members.ts';
import { decoyPasswordHash, hashPassword, passwordBytesMax, verifyPassword } from './password-hash.ts';

export interface LocalDirectoryOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly now?: () => Date;
}

const authFailed = (): never => fail(ErrorCode.AuthFailed, 'authentication failed');

export class LocalDirectory implements Directory {
  readonly kind = 'local';
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #now: () => Date;

  constructor(options: LocalDirectoryOptions) {
    this.#store = options.store;
    this.#audit = options.audit;
    this.#now = options.now ?? (() => new Date());
  }

  async authenticate(user: string, password: string): Promise<AuthenticatedUser> {
    // Refused before any lookup: an empty password must never reach a comparison.
    if (typeof password !== 'string' || password.length === 0 || Buffer.byteLength(password, 'utf8') > passwordBytesMax) authFailed();
    let name: string | null;
    try {
      name = validateUserName(user);
    } catch {
      name = null;
    }
    let stored: string | null = null;
    if (name !== null) stored = await this.#unavailableIfStoreFails(() => this.#store.getLocalUserPasswordHash(name as string));
    // An unknown user costs one scrypt too, so timing does not tell which names exist.
    const ok = await verifyPassword(password, stored ?? decoyPasswordHash);
    if (!ok || stored === null || name === null) authFailed();
    return Object.freeze({ name: name as string, ref: `local:${name as string}` });
  }

  async isMember(group: string, member: DirectoryMember): Promise<boolean> {
    let m: DirectoryMember;
    let coi: string;
    try {
      m = validateMember(member);
      coi = checkName(group, 'group');
    } catch (e) {
      // An unknown (here: impossible) group or member is not a member, per the Directory contract.
      if (isStripvaultError(e, ErrorCode.InvalidArgument)) return false;
      throw e;
    }
    return await this.#unavailableIfStoreFails(() => this.#store.isLocalCoiMember(coi, m));
  }

  async members(group: string): Promise<readonly DirectoryMember[]> {
    let coi: string;
    try {
      coi = checkName(group, 'group');
    } catch {
      return [];
    }
    try {
      return await this.#unavailableIfStoreFails(() => this.#store.listCoiMembers(coi));
    } catch (e) {
      if (isStripvaultError(e, ErrorCode.StoreNotFound)) return [];
      throw e;
    }
  }

  async close(): Promise<void> {}

  /** SV_STORE_CONFLICT if the name is taken; SV_INVALID_ARGUMENT for a weak password. */
  async addUser(user: string, password: string, actor: Actor): Promise<void> {
    const name = validateUserName(user);
    const hash = await hashPassword(password);
    await audited(this.#audit, { actor: actor.name, action: 'directory.user.add', subject: `user:${name}`, detail: { user: name } }, () =>
      this.#store.addLocalUser({ name, passwordHash: hash, at: this.#now() }),
    );
  }

  async setPassword(user: string, password: string, actor: Actor): Promise<void> {
    const name = validateUserName(user);
    const hash = await hashPassword(password);
    await audited(this.#audit, { actor: actor.name, action: 'directory.user.password', subject: `user:${name}`, detail: { user: name } }, () =>
      this.#store.setLocalUserPasswordHash(name, hash, this.#now()),
    );
  }

  async removeUser(user: string, actor: Actor): Promise<void> {
    const name = validateUserName(user);
    if ((await this.#store.getLocalUserPasswordHash(name)) === null) fail(ErrorCode.NotFound, `no local user "${name}"`, { user: name });
    await audited(this.#audit, { actor: actor.name, action: 'directory.user.remove', subject: `user:${name}`, detail: { user: name } }, () =>
      this.#store.removeLocalUser(name),
    );
  }

  async listUsers(): Promise<readonly string[]> {
    return (await this.#store.listLocalUsers()).map((u) => u.name);
  }

  async #unavailableIfStoreFails<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (isStripvaultError(e, ErrorCode.StoreUnavailable)) fail(ErrorCode.DirectoryUnavailable, 'the local directory (metadata store) is unavailable', undefined, e);
      throw e;
    }
  }
}
