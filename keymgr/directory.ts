/**
 * Who belongs to which group, and who may log in: the directory behind communities of interest.
 * Two implementations: the local directory kept in the metadata store (the embedded default), and
 * LDAP (`ldap-directory.ts`, through ldapts). The key manager asks the directory on every access
 * decision, so a membership change takes effect without a restart (an implementation may cache
 * for at most `directoryCacheMsMax`).
 */

/** Longest a directory answer may be reused before asking again. */
export const directoryCacheMsMax = 30_000;

/** A user (a person who logs in) or a client (an application server holding a certificate). */
export interface DirectoryMember {
  readonly kind: 'user' | 'client';
  /** User login name, or the client name its certificate carries. */
  readonly name: string;
}

export interface AuthenticatedUser {
  readonly name: string;
  /** Where the directory keeps the user (an LDAP DN; `local:<name>` for the local directory). */
  readonly ref: string;
}

export interface Directory {
  /** `ldap` or `local`; shown to administrators. */
  readonly kind: string;
  /**
   * Checks a user's password. An empty password never succeeds (an LDAP "unauthenticated bind"
   * would), nor does a name the directory cannot resolve to exactly one user.
   * @throws SV_AUTH_FAILED (one message for every refusal, so it reveals nothing), SV_DIRECTORY_UNAVAILABLE
   */
  authenticate(user: string, password: string): Promise<AuthenticatedUser>;
  /**
   * Whether `member` is in `group` now. `group` is the directory's group reference (an LDAP group
   * DN). An unknown group or member is `false`, not an error.
   * @throws SV_DIRECTORY_UNAVAILABLE when the directory cannot answer (callers fail closed)
   */
  isMember(group: string, member: DirectoryMember): Promise<boolean>;
  /** Every member of `group` (bounded by the implementation's limit). @throws SV_DIRECTORY_UNAVAILABLE */
  members(group: string): Promise<readonly DirectoryMember[]>;
  close(): Promise<void>;
}
