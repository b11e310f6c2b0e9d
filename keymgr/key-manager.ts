/**
 * The key manager over the metadata store (KeyManagerApi): init, unseal and seal; communities of
 * interest with their members and workgroup keys; virtual disks; the appliance CA's certificates.
 *
 * - Every change is appended to the audit log (`audited`) before it reaches the store, and is
 *   refused when the log cannot be written. Cheap checks (validation, existence, sealed) run
 *   first, so the log records operations that were going to be attempted, not typos. Audit
 *   details carry ids and names, never key bytes or share texts.
 * - The master key lives only in the SealedState; workgroup keys are stored wrapped (bound to
 *   their COI and id, workgroup-key.ts) and cached unwrapped while unsealed; the CA key is stored
 *   encrypted (ca-key-at-rest.ts) and decrypted only for the duration of one issuance.
 * - Membership of LDAP COIs is asked of the directory on every call; if it cannot answer, the
 *   answer is SV_DIRECTORY_UNAVAILABLE, never "member".
 *
 * `seal()` is the one operation that is not refused when the audit log is down: it only takes
 * capability away, and an officer who suspects a compromise must be able to lock the appliance.
 * It still tries to record the seal first and reports the audit failure after sealing.
 */
import { isIP } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, assert, fail, isStripvaultError } from '../appliance/errors.ts';
import type { Wrapper } from '../appliance/strip/header.ts';
import type { CoiRecord, Store, VirtualDiskRecord, WorkgroupKeyRecord, WrappedWorkgroupKey } from '../appliance/store/store.ts';
import { checkVirtualDiskName } from '../appliance/store/virtual-disks.ts';
import { checkText, checkUuid } from '../appliance/store/validate.ts';
import { auditActorBytesMax } from '../appliance/store/audit.ts';
import { ldapGroupBytesMax } from '../appliance/store/cois.ts';
import { audited, type AuditEntry, type AuditLog } from './audit.ts';
import { decryptCaKey, encryptCaKey } from './ca-key-at-rest.ts';
import type { Directory, DirectoryMember } from './directory.ts';
import type {
  Actor,
  CertificateInfo,
  CoiInfo,
  InitRequest,
  InitResult,
  IssuedClient,
  KeyManagerApi,
  KeyManagerStatus,
  VirtualDiskInfo,
} from './key-manager-api.ts';
import { checkKeySetRecord, masterKeyBytes, splitMasterKey, verifyOfficerShare, type KeySetOfficer, type MasterKeyHolder } from './master-key.ts';
import { validateMember } from './members.ts';
import { parseOfficerShare } from './officer-share.ts';
import { createCa, type CertificateAuthority } from './pki-ca.ts';
import { issueClientCertificate, issueServerCertificate, type IssuedCertificate } from './pki-issue.ts';
import { validateCaCommonName, validateClientName, validateCoiName } from './pki-names.ts';
import type { CertificateRecord, CertificateRegistry } from './pki-registry.ts';
import { normalizeSerial } from './pki-x509.ts';
import { SealedState, type UnsealProgress } from './sealed-state.ts';
import { ReadOnlyCertificateRegistry, StoreCertificateRegistry } from './store-certificate-registry.ts';
import { WorkgroupKeyCache } from './workgroup-key-cache.ts';
import { isWorkgroupKeyId, newWorkgroupKey, newWorkgroupKeyId, unwrapWorkgroupKey, wrapWorkgroupKey } from './workgroup-key.ts';

export const caCommonNameDefault = 'stripvault appliance CA';
/** Ten years: the CA outlives several generations of the certificates it signs. */
export const caValidDaysDefault = 10 * 365;
/** One year for clients and servers unless asked otherwise. */
export const leafValidDaysDefault = 365;

export interface KeyManagerOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  /** Needed for LDAP COIs; without it their membership is SV_DIRECTORY_UNAVAILABLE. */
  readonly directory?: Directory;
  /** Clock for records and certificates; tests move it. */
  readonly now?: () => Date;
}

/** A workgroup key as officers see it: no key bytes. */
export interface WorkgroupKeyInfo {
  readonly id: string;
  readonly coi: string;
  readonly state: 'active' | 'retired' | 'destroyed';
  readonly createdAt: Date;
  readonly retiredAt?: Date;
  readonly destroyedAt?: Date;
}

/** Lends a master key we hold ourselves (during init) through the MasterKeyHolder seam. */
function holderOf(masterKey: Uint8Array): MasterKeyHolder {
  return { masterKey: () => masterKey };
}

function actorName(actor: Actor): string {
  if (typeof actor !== 'object' || actor === null || typeof actor.name !== 'string') fail(ErrorCode.InvalidArgument, 'actor must be { name }');
  return checkText(actor.name, 'actor.name', auditActorBytesMax);
}

/** The API promises SV_NOT_FOUND for unknown names; the store speaks SV_STORE_NOT_FOUND. */
async function found<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreNotFound)) fail(ErrorCode.NotFound, e.message, e.detail === undefined ? undefined : { ...e.detail }, e);
    throw e;
  }
}

/** Whether a lookup finds its record (SV_STORE_NOT_FOUND: no). */
async function exists(work: Promise<unknown>): Promise<boolean> {
  try {
    await work;
    return true;
  } catch (e) {
    if (isStripvaultError(e, ErrorCode.StoreNotFound)) return false;
    throw e;
  }
}

function coiInfo(record: CoiRecord): CoiInfo {
  return Object.freeze({
    name: record.name,
    source: record.source,
    ...(record.ldapGroup === null ? {} : { ldapGroup: record.ldapGroup }),
    ...(record.activeKeyId === null ? {} : { workgroupKeyId: record.activeKeyId }),
    createdAt: record.createdAt,
  });
}

function diskInfo(record: VirtualDiskRecord): VirtualDiskInfo {
  return Object.freeze({ name: record.name, volumeId: record.volumeId, volumeName: record.volumeName, coi: record.coi, createdAt: record.createdAt });
}

function keyInfo(record: WorkgroupKeyRecord): WorkgroupKeyInfo {
  return Object.freeze({
    id: record.id,
    coi: record.coi,
    state: record.state,
    createdAt: record.createdAt,
    ...(record.retiredAt === null ? {} : { retiredAt: record.retiredAt }),
    ...(record.destroyedAt === null ? {} : { destroyedAt: record.destroyedAt }),
  });
}

function certificateInfo(record: CertificateRecord): CertificateInfo {
  return Object.freeze({
    serial: record.serial,
    kind: record.kind,
    subject: record.subject,
    notBefore: record.notBefore,
    notAfter: record.notAfter,
    ...(record.revokedAt === undefined ? {} : { revokedAt: record.revokedAt }),
  });
}

function checkLdapGroup(value: unknown): string {
  return checkText(value, 'ldapGroup', ldapGroupBytesMax);
}

export class KeyManager implements KeyManagerApi {
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #directory: Directory | undefined;
  readonly #now: () => Date;
  readonly #cache = new WorkgroupKeyCache();
  readonly #registry: StoreCertificateRegistry;
  #state: SealedState | null = null;
  // Share submissions one at a time: the duplicate check and the submission must not interleave.
  #unsealTail: Promise<unknown> = Promise.resolve();

  private constructor(options: KeyManagerOptions) {
    this.#store = options.store;
    this.#audit = options.audit;
    this.#directory = options.directory;
    this.#now = options.now ?? (() => new Date());
    this.#registry = new StoreCertificateRegistry(options.store);
  }

  /** Opens the key manager on a store, sealed (or uninitialized). */
  static async open(options: KeyManagerOptions): Promise<KeyManager> {
    if (typeof options !== 'object' || options === null || options.store === undefined || options.audit === undefined) {
      fail(ErrorCode.InvalidArgument, 'KeyManager.open needs { store, audit }');
    }
    const manager = new KeyManager(options);
    await manager.#load();
    return manager;
  }

  // ---- sealed state ------------------------------------------------------------------------

  /** The key set's sealed state; loaded lazily so an appliance notices another one's init. */
  async #load(): Promise<SealedState | null> {
    if (this.#state !== null) return this.#state;
    const row = await this.#store.getKeySet();
    if (row === null) return null;
    const record = checkKeySetRecord(row.record);
    if (record.keySetId !== row.keySetId) fail(ErrorCode.KeySetInvalid, 'key set record: id does not match its row', { keySetId: row.keySetId });
    this.#state ??= new SealedState(record);
    return this.#state;
  }

  async #initialized(): Promise<SealedState> {
    const state = await this.#load();
    if (state === null) fail(ErrorCode.NotInitialized, 'the key manager is not initialized (run init with the security officers)');
    return state;
  }

  async #unsealed(): Promise<SealedState> {
    const state = await this.#initialized();
    if (state.isSealed()) fail(ErrorCode.Sealed, `sealed: ${state.keySet.threshold} officer share(s) are needed to unseal`);
    return state;
  }

  async status(): Promise<KeyManagerStatus> {
    const state = await this.#load();
    if (state === null) return Object.freeze({ initialized: false, sealed: true });
    return Object.freeze({ initialized: true, sealed: state.isSealed(), unseal: state.progress() });
  }

  async init(request: InitRequest, actor: Actor): Promise<InitResult> {
    const who = actorName(actor);
    if (typeof request !== 'object' || request === null) fail(ErrorCode.InvalidArgument, 'init request must be an object');
    const caCommonName = validateCaCommonName(request.caCommonName ?? caCommonNameDefault);
    if ((await this.#load()) !== null) fail(ErrorCode.AlreadyInitialized, 'the key manager is already initialized');
    const now = this.#now();

    const masterKey = new Uint8Array(randomBytes(masterKeyBytes));
    let split: Awaited<ReturnType<typeof splitMasterKey>>;
    let ca: CertificateAuthority;
    let caKeyEncrypted: Buffer;
    try {
      split = await splitMasterKey(masterKey, { officers: request.officers, threshold: request.threshold, now: () => now });
      ca = await createCa({ commonName: caCommonName, validDays: caValidDaysDefault, now });
      caKeyEncrypted = encryptCaKey(holderOf(masterKey), ca.caKey, ca.caCertPem);
    } finally {
      masterKey.fill(0);
    }
    const { keySet } = split;
    const entry: AuditEntry = {
      actor: who,
      action: 'keymgr.init',
      subject: `keyset:${keySet.keySetId}`,
      detail: { keySetId: keySet.keySetId, threshold: keySet.threshold, officers: keySet.officers.map((o) => o.name), caCommonName },
    };
    try {
      await audited(this.#audit, entry, () =>
        this.#store.initKeyManagerRoot({
          keySetId: keySet.keySetId,
          keySetRecord: keySet as unknown as Record<string, unknown>,
          caCertPem: ca.caCertPem,
          caKeyEncrypted,
          createdAt: now,
        }),
      );
    } catch (e) {
      if (isStripvaultError(e, ErrorCode.StoreConflict)) fail(ErrorCode.AlreadyInitialized, 'the key manager is already initialized', undefined, e);
      throw e;
    }
    this.#state = new SealedState(keySet);
    return Object.freeze({
      keySetId: keySet.keySetId,
      shares: Object.freeze(split.shares.map((s) => Object.freeze({ officer: s.officer, share: s.text }))),
      caCertificatePem: ca.caCertPem,
    });
  }

  submitShare(shareText: string, actor: Actor): Promise<UnsealProgress> {
    const run = this.#unsealTail.then(() => this.#submitShare(shareText, actor));
    this.#unsealTail = run.catch(() => undefined);
    return run;
  }

  async #submitShare(shareText: string, actor: Actor): Promise<UnsealProgress> {
    const who = actorName(actor);
    const state = await this.#initialized();
    const subject = `keyset:${state.keySet.keySetId}`;
    let officer: KeySetOfficer;
    try {
      if (!state.isSealed()) fail(ErrorCode.AlreadyUnsealed, `already unsealed (key set ${state.keySet.keySetId})`);
      const fields = parseOfficerShare(shareText);
      try {
        officer = verifyOfficerShare(state.keySet, fields);
      } finally {
        fields.shareBytes.fill(0);
      }
      if (state.progress().officers.includes(officer.name)) {
        fail(ErrorCode.OfficerShareDuplicate, `officer "${officer.name}" (#${officer.index}) has already submitted a share`, {
          officer: officer.name,
          officerIndex: officer.index,
        });
      }
    } catch (e) {
      await this.#auditRejectedShare(who, subject, e);
      throw e;
    }
    const received = state.progress().received + 1;
    const entry: AuditEntry = {
      actor: who,
      action: 'keymgr.unseal.share.accept',
      subject,
      detail: { officer: officer.name, officerIndex: officer.index, received, threshold: state.keySet.threshold, unseals: received === state.keySet.threshold },
    };
    return await audited(this.#audit, entry, async () => {
      try {
        return await state.submitShare(shareText);
      } catch (e) {
        // Checked above, so only the combine can fail here (an inconsistent record, or a seal
        // meanwhile); the acceptance is on record, so is its failure — if the log lets us.
        await this.#auditRejectedShare(who, subject, e).catch(() => undefined);
        throw e;
      }
    });
  }

  /** A refused share is recorded by its error code and (when known) the officer it claims to be. */
  async #auditRejectedShare(who: string, subject: string, e: unknown): Promise<void> {
    if (!isStripvaultError(e)) return;
    const officer = e.detail?.['officer'];
    const officerIndex = e.detail?.['officerIndex'];
    await this.#audit.append({
      actor: who,
      action: 'keymgr.unseal.share.reject',
      subject,
      detail: {
        reason: e.code,
        ...(typeof officer === 'string' ? { officer } : {}),
        ...(typeof officerIndex === 'number' ? { officerIndex } : {}),
      },
    });
  }

  async seal(actor: Actor): Promise<void> {
    const who = actorName(actor);
    const state = await this.#initialized();
    let auditFailure: unknown = null;
    try {
      await this.#audit.append({ actor: who, action: 'keymgr.seal', subject: `keyset:${state.keySet.keySetId}`, detail: { wasSealed: state.isSealed() } });
    } catch (e) {
      auditFailure = e;
    }
    state.seal();
    this.#cache.wipeAll();
    if (auditFailure !== null) throw auditFailure;
  }

  // ---- communities of interest ---------------------------------------------------------------

  async createCoi(name: string, options: { ldapGroup?: string }, actor: Actor): Promise<CoiInfo> {
    const who = actorName(actor);
    const coi = validateCoiName(name);
    const ldapGroup = options?.ldapGroup === undefined ? null : checkLdapGroup(options.ldapGroup);
    const state = await this.#unsealed();
    if (await exists(this.#store.getCoi(coi))) fail(ErrorCode.StoreConflict, `a COI named "${coi}" already exists`, { coi });
    const coiId = randomUUID();
    const { id: keyId, wrapped } = this.#newWrappedKey(state, coiId);
    const entry: AuditEntry = {
      actor: who,
      action: 'coi.create',
      subject: `coi:${coi}`,
      detail: { source: ldapGroup === null ? 'local' : 'ldap', ...(ldapGroup === null ? {} : { ldapGroup }), workgroupKeyId: keyId },
    };
    const record = await audited(this.#audit, entry, () =>
      this.#store.createCoi({ id: coiId, name: coi, ldapGroup, createdAt: this.#now(), firstKey: { id: keyId, wrapped, createdAt: this.#now() } }),
    );
    return coiInfo(record);
  }

  async listCois(): Promise<readonly CoiInfo[]> {
    return Object.freeze((await this.#store.listCois()).map(coiInfo));
  }

  async getCoi(name: string): Promise<CoiInfo> {
    return coiInfo(await found(this.#store.getCoi(validateCoiName(name))));
  }

  async removeCoi(name: string, actor: Actor): Promise<void> {
    const who = actorName(actor);
    const coi = validateCoiName(name);
    await found(this.#store.getCoi(coi));
    const disks = await this.#store.listVirtualDisks({ coi });
    if (disks.length > 0) {
      const virtualDisks = disks.map((d) => d.name);
      fail(ErrorCode.StoreConflict, `COI "${coi}" still presents virtual disks: ${virtualDisks.join(', ')}`, { coi, virtualDisks });
    }
    const keyIds = (await this.#store.listWorkgroupKeys({ coi })).filter((k) => k.state !== 'destroyed').map((k) => k.id);
    const entry: AuditEntry = { actor: who, action: 'coi.remove', subject: `coi:${coi}`, detail: { destroyedKeyIds: keyIds } };
    await audited(this.#audit, entry, async () => {
      for (const id of keyIds) this.#cache.wipe(id);
      const { removedKeyIds } = await found(this.#store.removeCoi(coi));
      for (const id of removedKeyIds) this.#cache.wipe(id);
    });
  }

  async #localCoi(coi: string): Promise<CoiRecord> {
    const record = await found(this.#store.getCoi(coi));
    if (record.source !== 'local') {
      fail(ErrorCode.InvalidArgument, `COI "${coi}" takes its members from the directory group; change the group instead`, { coi });
    }
    return record;
  }

  async addMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void> {
    const who = actorName(actor);
    const name = validateCoiName(coi);
    const m = validateMember(member);
    await this.#localCoi(name);
    if (await this.#store.isLocalCoiMember(name, m)) {
      fail(ErrorCode.StoreConflict, `${m.kind} "${m.name}" is already a member of COI "${name}"`, { coi: name, kind: m.kind });
    }
    const entry: AuditEntry = { actor: who, action: 'coi.member.add', subject: `coi:${name}`, detail: { memberKind: m.kind, member: m.name } };
    await audited(this.#audit, entry, () => found(this.#store.addCoiMember(name, m, this.#now())));
  }

  async removeMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void> {
    const who = actorName(actor);
    const name = validateCoiName(coi);
    const m = validateMember(member);
    await this.#localCoi(name);
    if (!(await this.#store.isLocalCoiMember(name, m))) {
      fail(ErrorCode.NotFound, `${m.kind} "${m.name}" is not a member of COI "${name}"`, { coi: name, kind: m.kind });
    }
    const entry: AuditEntry = { actor: who, action: 'coi.member.remove', subject: `coi:${name}`, detail: { memberKind: m.kind, member: m.name } };
    await audited(this.#audit, entry, () => found(this.#store.removeCoiMember(name, m)));
  }

  async listMembers(coi: string): Promise<readonly DirectoryMember[]> {
    const record = await found(this.#store.getCoi(validateCoiName(coi)));
    if (record.ldapGroup === null) return Object.freeze(await found(this.#store.listCoiMembers(record.name)));
    const group = record.ldapGroup;
    return Object.freeze([...(await this.#askDirectory(`members of ${group}`, (d) => d.members(group)))]);
  }

  async coisOf(member: DirectoryMember): Promise<readonly string[]> {
    const m = validateMember(member);
    const local = await this.#store.listLocalCoisOf(m);
    const ldap = (await this.#store.listCois()).filter((c) => c.ldapGroup !== null);
    const answers = await Promise.allSettled(
      ldap.map((c) => this.#askDirectory(`membership in ${c.ldapGroup}`, (d) => d.isMember(c.ldapGroup as string, m))),
    );
    const ofLdap: string[] = [];
    answers.forEach((answer, i) => {
      if (answer.status === 'rejected') throw answer.reason;
      // Anything but a plain `true` is not membership.
      if (answer.value === true) ofLdap.push(ldap[i]!.name);
    });
    return Object.freeze([...local, ...ofLdap].sort());
  }

  /** Fails closed: no directory, a directory error, or a malformed answer is SV_DIRECTORY_UNAVAILABLE. */
  async #askDirectory<T>(what: string, ask: (directory: Directory) => Promise<T>): Promise<T> {
    const directory = this.#directory;
    if (directory === undefined) fail(ErrorCode.DirectoryUnavailable, `no directory is configured to answer ${what}`);
    let answer: T;
    try {
      answer = await ask(directory);
    } catch (e) {
      if (isStripvaultError(e, ErrorCode.DirectoryUnavailable)) throw e;
      return fail(ErrorCode.DirectoryUnavailable, `the directory could not answer ${what}`, undefined, e);
    }
    if (answer === undefined || answer === null) fail(ErrorCode.DirectoryUnavailable, `the directory gave no answer for ${what}`);
    return answer;
  }

  // ---- virtual disks -------------------------------------------------------------------------

  async presentVolume(request: { name: string; volumeId: string; coi: string }, actor: Actor): Promise<VirtualDiskInfo> {
    const who = actorName(actor);
    if (typeof request !== 'object' || request === null) fail(ErrorCode.InvalidArgument, 'request must be { name, volumeId, coi }');
    const name = checkVirtualDiskName(request.name);
    const volumeId = checkUuid(request.volumeId, 'volumeId');
    const coi = validateCoiName(request.coi);
    const volume = await found(this.#store.getVolume(volumeId));
    const coiRecord = await found(this.#store.getCoi(coi));
    if (coiRecord.activeKeyId === null) fail(ErrorCode.KeyDestroyed, `COI "${coi}" has no active workgroup key`, { coi });
    const existing = await this.#store.listVirtualDisks({ volumeId });
    if (existing.some((d) => d.coi === coi)) fail(ErrorCode.StoreConflict, `volume "${volume.name}" is already presented to COI "${coi}"`, { coi });
    if (await exists(this.#store.getVirtualDisk(name))) {
      fail(ErrorCode.StoreConflict, `a virtual disk named "${name}" already exists`, { virtualDisk: name });
    }
    const entry: AuditEntry = {
      actor: who,
      action: 'vdisk.present',
      subject: `vdisk:${name}`,
      detail: { volumeId, volumeName: volume.name, coi, workgroupKeyId: coiRecord.activeKeyId },
    };
    const record = await audited(this.#audit, entry, () => found(this.#store.createVirtualDisk({ name, volumeId, coi, createdAt: this.#now() })));
    return diskInfo(record);
  }

  async withdrawVirtualDisk(name: string, actor: Actor): Promise<void> {
    const who = actorName(actor);
    const disk = await found(this.#store.getVirtualDisk(checkVirtualDiskName(name)));
    const entry: AuditEntry = { actor: who, action: 'vdisk.withdraw', subject: `vdisk:${disk.name}`, detail: { volumeId: disk.volumeId, coi: disk.coi } };
    await audited(this.#audit, entry, () => found(this.#store.removeVirtualDisk(disk.name)));
  }

  async listVirtualDisks(filter: { volumeId?: string; coi?: string } = {}): Promise<readonly VirtualDiskInfo[]> {
    const volumeId = filter?.volumeId === undefined ? undefined : checkUuid(filter.volumeId, 'filter.volumeId');
    const coi = filter?.coi === undefined ? undefined : validateCoiName(filter.coi);
    const records = await this.#store.listVirtualDisks({ ...(volumeId === undefined ? {} : { volumeId }), ...(coi === undefined ? {} : { coi }) });
    return Object.freeze(records.map(diskInfo));
  }

  async virtualDisksFor(member: DirectoryMember): Promise<readonly VirtualDiskInfo[]> {
    const cois = await this.coisOf(member);
    if (cois.length === 0) return Object.freeze([]);
    return Object.freeze((await this.#store.listVirtualDisks({ cois })).map(diskInfo));
  }

  // ---- workgroup keys ------------------------------------------------------------------------

  /** A copy of the unwrapped key, from the cache or unwrapped (and cached) now. */
  #unwrapped(state: SealedState, row: WrappedWorkgroupKey): Wrapper {
    let key = this.#cache.copy(row.id);
    if (key === undefined) {
      const unwrapped = unwrapWorkgroupKey(state, { coiId: row.coiId, keyId: row.id }, row.wrapped);
      this.#cache.put(row.id, unwrapped);
      key = new Uint8Array(unwrapped);
    }
    return Object.freeze({ id: Buffer.from(row.id, 'hex'), key });
  }

  /**
   * The keys as fresh copies, which the caller owns: zero them (close the volume) when done.
   * seal() and destroyWorkgroupKey() zero the key manager's own copies, not these.
   */
  async wrappersForVolume(volumeId: string): Promise<readonly Wrapper[]> {
    const id = checkUuid(volumeId, 'volumeId');
    const state = await this.#unsealed();
    const rows = await this.#store.wrappedKeysForVolume(id);
    if (rows.length === 0) await found(this.#store.getVolume(id));
    // Sealed meanwhile (the store answered asynchronously): masterKey() throws SV_SEALED.
    return Object.freeze(rows.map((row) => this.#unwrapped(state, row)));
  }

  async wrapperForCoi(coi: string): Promise<Wrapper> {
    const name = validateCoiName(coi);
    const state = await this.#unsealed();
    const row = await found(this.#store.activeWrappedKey(name));
    if (row === null) fail(ErrorCode.KeyDestroyed, `COI "${name}" has no active workgroup key`, { coi: name });
    return this.#unwrapped(state, row);
  }

  #newWrappedKey(state: SealedState, coiId: string): { id: string; wrapped: Uint8Array } {
    const id = newWorkgroupKeyId();
    const key = newWorkgroupKey();
    try {
      return { id, wrapped: wrapWorkgroupKey(state, { coiId, keyId: id }, key) };
    } finally {
      key.fill(0);
    }
  }

  async rotateWorkgroupKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }> {
    const who = actorName(actor);
    const name = validateCoiName(coi);
    const state = await this.#unsealed();
    const record = await found(this.#store.getCoi(name));
    const oldKeyId = record.activeKeyId;
    if (oldKeyId === null) fail(ErrorCode.KeyDestroyed, `COI "${name}" has no active workgroup key to rotate; create one`, { coi: name });
    const next = this.#newWrappedKey(state, record.id);
    const entry: AuditEntry = { actor: who, action: 'key.workgroup.rotate', subject: `coi:${name}`, detail: { oldKeyId, newKeyId: next.id } };
    await audited(this.#audit, entry, () => found(this.#store.rotateWorkgroupKey(name, oldKeyId, { ...next, createdAt: this.#now() })));
    return Object.freeze({ oldKeyId, newKeyId: next.id });
  }

  /**
   * Gives a COI whose keys were all destroyed a new active key (SV_STORE_CONFLICT if it has one:
   * rotate instead). Returns the new key's id.
   */
  async createWorkgroupKey(coi: string, actor: Actor): Promise<string> {
    const who = actorName(actor);
    const name = validateCoiName(coi);
    const state = await this.#unsealed();
    const record = await found(this.#store.getCoi(name));
    if (record.activeKeyId !== null) fail(ErrorCode.StoreConflict, `COI "${name}" already has an active workgroup key; rotate it instead`, { coi: name });
    const next = this.#newWrappedKey(state, record.id);
    const entry: AuditEntry = { actor: who, action: 'key.workgroup.create', subject: `coi:${name}`, detail: { newKeyId: next.id } };
    await audited(this.#audit, entry, () => found(this.#store.rotateWorkgroupKey(name, null, { ...next, createdAt: this.#now() })));
    return next.id;
  }

  /** Works sealed too: deleting needs no key. Destroying a destroyed key changes nothing. */
  async destroyWorkgroupKey(keyId: string, actor: Actor): Promise<void> {
    const who = actorName(actor);
    if (!isWorkgroupKeyId(keyId)) fail(ErrorCode.InvalidArgument, 'keyId must be 32 lower-case hex digits');
    const record = await found(this.#store.getWorkgroupKey(keyId));
    if (record.state === 'destroyed') {
      this.#cache.wipe(keyId);
      return;
    }
    const entry: AuditEntry = { actor: who, action: 'key.workgroup.destroy', subject: `key:${keyId}`, detail: { keyId, coi: record.coi, state: record.state } };
    await audited(this.#audit, entry, async () => {
      // Memory first: if the store write fails, the cached copy is gone anyway.
      this.#cache.wipe(keyId);
      await found(this.#store.destroyWorkgroupKey(keyId, this.#now()));
    });
  }

  async listWorkgroupKeys(filter: { coi?: string } = {}): Promise<readonly WorkgroupKeyInfo[]> {
    const coi = filter?.coi === undefined ? undefined : validateCoiName(filter.coi);
    if (coi !== undefined) await found(this.#store.getCoi(coi));
    return Object.freeze((await this.#store.listWorkgroupKeys(coi === undefined ? {} : { coi })).map(keyInfo));
  }

  /** For the crypto-shred check: of `keyIds`, those whose wrapped bytes are still in the store. */
  async workgroupKeyMaterialPresent(keyIds: readonly string[]): Promise<readonly string[]> {
    return Object.freeze(await this.#store.workgroupKeysWithMaterial(keyIds));
  }

  /** For the crypto-shred check: ids of the workgroup keys this key manager holds unwrapped. */
  cachedKeyIds(): readonly string[] {
    return Object.freeze(this.#cache.ids());
  }

  /**
   * Zeroes cached keys that are no longer usable in the store (destroyed or removed, possibly by
   * another appliance). Returns the ids dropped.
   */
  async forgetDestroyedKeys(): Promise<readonly string[]> {
    const cached = this.#cache.ids();
    const live = new Set(await this.#store.workgroupKeysWithMaterial(cached));
    const dropped = cached.filter((id) => !live.has(id));
    for (const id of dropped) this.#cache.wipe(id);
    return Object.freeze(dropped);
  }

  // ---- certificates --------------------------------------------------------------------------

  /** The CA with its key decrypted for one issuance. */
  async #ca(state: SealedState): Promise<CertificateAuthority> {
    const row = await this.#store.getApplianceCa();
    assert(row !== null, 'an initialized key manager has a CA');
    return { caCertPem: row.certPem, caKey: decryptCaKey(state, row.keyEncrypted, row.certPem) };
  }

  /** Records each issued certificate in the store, audited first. */
  #auditedRegistry(who: string): CertificateRegistry {
    const inner = this.#registry;
    return {
      record: (entry) =>
        audited(
          this.#audit,
          {
            actor: who,
            action: 'cert.issue',
            subject: `cert:${entry.serial}`,
            detail: { serial: entry.serial, kind: entry.kind, subject: entry.subject, notAfter: entry.notAfter.toISOString() },
          },
          () => inner.record(entry),
        ),
      find: (serial) => inner.find(serial),
      revoke: (serial, at) => inner.revoke(serial, at),
      listCertificates: () => inner.listCertificates(),
    };
  }

  #issued(issued: IssuedCertificate, caCertificatePem: string): IssuedClient {
    assert(issued.privateKeyPem !== undefined, 'the key manager generates the key pair');
    return Object.freeze({ serial: issued.serial, certificatePem: issued.certPem, privateKeyPem: issued.privateKeyPem, caCertificatePem });
  }

  async issueClientCertificate(clientName: string, options: { validDays?: number }, actor: Actor): Promise<IssuedClient> {
    const who = actorName(actor);
    const name = validateClientName(clientName);
    const state = await this.#unsealed();
    const ca = await this.#ca(state);
    const issued = await issueClientCertificate(ca, this.#auditedRegistry(who), {
      clientName: name,
      validDays: options?.validDays ?? leafValidDaysDefault,
      now: this.#now(),
    });
    return this.#issued(issued, ca.caCertPem);
  }

  /** `hostNames` may mix DNS names and IP literals; the latter become iPAddress SANs. */
  async issueServerCertificate(hostNames: readonly string[], options: { validDays?: number }, actor: Actor): Promise<IssuedClient> {
    const who = actorName(actor);
    if (!Array.isArray(hostNames)) fail(ErrorCode.InvalidArgument, 'hostNames must be an array');
    const names = hostNames.filter((h) => typeof h !== 'string' || isIP(h) === 0);
    const ips = hostNames.filter((h) => typeof h === 'string' && isIP(h) !== 0);
    const state = await this.#unsealed();
    const ca = await this.#ca(state);
    const issued = await issueServerCertificate(ca, this.#auditedRegistry(who), {
      hostNames: names,
      ips,
      validDays: options?.validDays ?? leafValidDaysDefault,
      now: this.#now(),
    });
    return this.#issued(issued, ca.caCertPem);
  }

  /** SV_CERT_UNKNOWN for a serial never issued; revoking twice keeps the first time (and is not re-audited). */
  async revokeCertificate(serial: string, actor: Actor): Promise<CertificateInfo> {
    const who = actorName(actor);
    const key = normalizeSerial(serial);
    const record = await this.#registry.find(key);
    if (record === undefined) fail(ErrorCode.CertUnknown, `no certificate with serial ${key} was issued`, { serial: key });
    if (record.revokedAt !== undefined) return certificateInfo(record);
    const entry: AuditEntry = { actor: who, action: 'cert.revoke', subject: `cert:${key}`, detail: { serial: key, kind: record.kind, subject: record.subject } };
    return certificateInfo(await audited(this.#audit, entry, () => this.#registry.revoke(key, this.#now())));
  }

  async listCertificates(): Promise<readonly CertificateInfo[]> {
    return Object.freeze((await this.#registry.listCertificates()).map(certificateInfo));
  }

  async caCertificatePem(): Promise<string> {
    const row = await this.#store.getApplianceCa();
    if (row === null) fail(ErrorCode.NotInitialized, 'the key manager is not initialized: there is no CA yet');
    return row.certPem;
  }

  /** For checkClientCertificate on the TLS front end: reads only (issue and revoke here, audited). */
  certificateRegistry(): CertificateRegistry {
    return new ReadOnlyCertificateRegistry(this.#registry);
  }
}
