/**
 * Sealed by default: an appliance starts holding no master key and collects officer shares until
 * T of them are in, then holds the master key in memory only, until seal().
 *
 * Each share is checked the moment it arrives (parser, key set, digest, not a second share from
 * the same officer), so the officer at the keyboard learns at once that their share is bad — and
 * which one it was — instead of T officers learning together that "the key is wrong". A rejected
 * share does not discard the others already accepted.
 *
 * Submissions are serialised: combining is asynchronous, and two shares arriving together must
 * not both complete (or both miss) the threshold. seal() and reset() take effect immediately: a
 * share submitted before them but not yet processed is refused (SV_SEALED), and a combine under
 * way is discarded and its key wiped.
 */
import { ErrorCode, assert, fail } from '../appliance/errors.ts';
import { checkKeySetRecord, combineOfficerShares, verifyOfficerShare } from './master-key.ts';
import type { KeySetOfficer, KeySetRecord, MasterKeyHolder } from './master-key.ts';
import { officersMax, parseOfficerShare } from './officer-share.ts';
import type { OfficerShareFields } from './officer-share.ts';

/** Pending shares never exceed T - 1 (the T-th completes the unseal); T is at most officersMax. */
export const pendingSharesMax = officersMax;

export interface UnsealProgress {
  readonly sealed: boolean;
  readonly keySetId: string;
  readonly threshold: number;
  /** Valid shares accepted towards this unseal (while sealed), or the threshold once unsealed. */
  readonly received: number;
  /** Names of the officers whose shares were accepted, in order of arrival. */
  readonly officers: readonly string[];
}

interface PendingShare {
  readonly officer: KeySetOfficer;
  readonly share: OfficerShareFields;
}

export class SealedState implements MasterKeyHolder {
  readonly keySet: KeySetRecord;
  #pending: PendingShare[] = [];
  #masterKey: Uint8Array | null = null;
  #unsealedBy: readonly string[] = [];
  // Raised by seal() and reset(): nothing submitted before may count afterwards.
  #era = 0;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(keySet: KeySetRecord) {
    this.keySet = checkKeySetRecord(keySet);
  }

  isSealed(): boolean {
    return this.#masterKey === null;
  }

  progress(): UnsealProgress {
    const sealed = this.isSealed();
    const officers = sealed ? this.#pending.map((p) => p.officer.name) : [...this.#unsealedBy];
    return Object.freeze({
      sealed,
      keySetId: this.keySet.keySetId,
      threshold: this.keySet.threshold,
      received: sealed ? this.#pending.length : this.keySet.threshold,
      officers: Object.freeze(officers),
    });
  }

  /**
   * Offers one officer's share text. Resolves with the progress after accepting it (unsealed
   * once it was the T-th); rejects with SV_OFFICER_SHARE_MALFORMED / _FOREIGN / _INVALID /
   * _DUPLICATE, SV_UNSEAL_VERIFY_FAILED, SV_ALREADY_UNSEALED, or SV_SEALED (seal()/reset() came
   * first). The text is never echoed.
   */
  submitShare(text: string): Promise<UnsealProgress> {
    // A share handed in before seal()/reset() belongs to the abandoned attempt, even if it is
    // processed after it.
    const era = this.#era;
    const run = this.#tail.then(() => this.#submit(text, era));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #submit(text: string, era: number): Promise<UnsealProgress> {
    if (this.#era !== era) fail(ErrorCode.Sealed, 'sealed or reset after this share was submitted; submit it again');
    if (!this.isSealed()) fail(ErrorCode.AlreadyUnsealed, `already unsealed (key set ${this.keySet.keySetId})`);
    const share = parseOfficerShare(text);
    let officer: KeySetOfficer;
    try {
      officer = verifyOfficerShare(this.keySet, share);
      const earlier = this.#pending.find((p) => p.officer.index === officer.index);
      if (earlier !== undefined) {
        fail(ErrorCode.OfficerShareDuplicate, `officer "${officer.name}" (#${officer.index}) has already submitted a share`, {
          officer: officer.name,
          officerIndex: officer.index,
        });
      }
    } catch (e) {
      share.shareBytes.fill(0);
      throw e;
    }
    assert(this.#pending.length < this.keySet.threshold && this.#pending.length < pendingSharesMax, 'pending shares stay below T');
    this.#pending.push({ officer, share });
    if (this.#pending.length < this.keySet.threshold) return this.progress();

    const contributors = this.#pending.map((p) => p.officer.name);
    let key: Uint8Array;
    try {
      key = await combineOfficerShares(
        this.keySet,
        this.#pending.map((p) => p.share),
      );
    } finally {
      // Whatever happens, T shares are never kept: either they became the key or they failed as a
      // set (each matched its digest, so an officer retrying would not help).
      if (this.#era === era) this.#wipePending();
    }
    if (this.#era !== era) {
      key.fill(0);
      fail(ErrorCode.Sealed, 'sealed or reset while the shares were being combined; submit them again');
    }
    this.#masterKey = key;
    this.#unsealedBy = Object.freeze(contributors);
    return this.progress();
  }

  /**
   * The master key, for the duration of a synchronous operation. The buffer is the state's own
   * and is zeroed by seal(): never keep a reference, never modify it. SV_SEALED while sealed.
   */
  masterKey(): Uint8Array {
    if (this.#masterKey === null) fail(ErrorCode.Sealed, `sealed: ${this.keySet.threshold} officer share(s) are needed to unseal`);
    return this.#masterKey;
  }

  /** Forgets the master key (zeroing it) and any shares collected so far. Idempotent. */
  seal(): void {
    this.#era++;
    this.#wipePending();
    if (this.#masterKey !== null) {
      this.#masterKey.fill(0);
      this.#masterKey = null;
    }
    this.#unsealedBy = [];
  }

  /** Abandons an unseal in progress: drops (zeroing) the shares collected so far. Stays sealed. */
  reset(): void {
    if (!this.isSealed()) return;
    this.#era++;
    this.#wipePending();
  }

  #wipePending(): void {
    for (const p of this.#pending) p.share.shareBytes.fill(0);
    this.#pending = [];
  }
}
