/**
 * An in-memory key manager and volume-key operations with the documented semantics of
 * `KeyManagerApi` / `VolumeKeyOps` (keymgr/key-manager-api.ts), for testing the layers above them
 * (the admin API, the CLI) without the real key manager: sealed → SV_SEALED, not initialized →
 * SV_NOT_INITIALIZED, unknown names → SV_NOT_FOUND, duplicates → SV_STORE_CONFLICT, bad shares →
 * their SV_OFFICER_SHARE_* code. No cryptography: shares, keys and PEMs are random placeholders.
 *
 * Where the two interfaces share a method name (`presentVolume`, `withdrawVirtualDisk`) the fake
 * follows VolumeKeyOps (by volume name; the last virtual disk of a volume is refused). `init`
 * leaves the key manager unsealed (the master key was just made); `seal` then needs T shares.
 *
 * Test hooks: `volumes` (what `presentVolume` can find), `calls` (every operation with its actor),
 * `failNext` (the next call to any method throws it), `foreignShare()` (a well-formed share of
 * another key set).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, fail } from '../../appliance/errors.ts';
import type { Wrapper } from '../../appliance/strip/header.ts';
import type { DirectoryMember } from '../../keymgr/directory.ts';
import type {
  Actor,
  CertificateInfo,
  CoiInfo,
  InitRequest,
  InitResult,
  IssuedClient,
  KeyManagerApi,
  KeyManagerStatus,
  ShredReport,
  VirtualDiskInfo,
  VolumeKeyOps,
} from '../../keymgr/key-manager-api.ts';
import { validateClientName, validateCoiName, validateHostName, validateIpAddress } from '../../keymgr/pki-names.ts';
import type { UnsealProgress } from '../../keymgr/sealed-state.ts';
import { isIP } from 'node:net';

const sharePrefix = 'svshare1.';
const shareBodyChars = 76;

interface Coi {
  info: CoiInfo;
  members: DirectoryMember[];
  keyIds: string[];
}

interface Cert {
  info: CertificateInfo;
}

const fakePem = (label: string) => `-----BEGIN ${label}-----\n${randomBytes(48).toString('base64')}\n-----END ${label}-----\n`;

export class FakeKeyManager implements KeyManagerApi, VolumeKeyOps {
  /** Volumes that exist, by name → id. */
  readonly volumes = new Map<string, string>();
  readonly calls: { op: string; actor: string }[] = [];
  /** Thrown (once) by the next method called. */
  failNext: unknown = undefined;

  #initialized = false;
  #sealed = true;
  #keySetId = '';
  #threshold = 0;
  #caPem = '';
  /** share text → officer name */
  #shares = new Map<string, string>();
  #pending: string[] = [];
  #unsealedBy: string[] = [];
  #cois = new Map<string, Coi>();
  #vdisks = new Map<string, VirtualDiskInfo>();
  #certs = new Map<string, Cert>();
  #shredded = new Set<string>();
  #destroyedKeys = new Set<string>();

  #enter(op: string, actor?: Actor): void {
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    if (actor !== undefined) this.calls.push({ op, actor: actor.name });
  }

  #needInit(): void {
    if (!this.#initialized) fail(ErrorCode.NotInitialized, 'the key manager is not initialized');
  }

  #needKeys(): void {
    this.#needInit();
    if (this.#sealed) fail(ErrorCode.Sealed, `sealed: ${this.#threshold} officer share(s) are needed to unseal`);
  }

  #coi(name: string): Coi {
    const c = this.#cois.get(name);
    if (c === undefined) fail(ErrorCode.NotFound, `no COI named ${name}`);
    return c;
  }

  #newKeyId(): string {
    return randomBytes(16).toString('hex');
  }

  #progress(): UnsealProgress {
    return {
      sealed: this.#sealed,
      keySetId: this.#keySetId,
      threshold: this.#threshold,
      received: this.#sealed ? this.#pending.length : this.#threshold,
      officers: this.#sealed ? [...this.#pending] : [...this.#unsealedBy],
    };
  }

  /** A share that parses but belongs to another key set. */
  foreignShare(): string {
    return sharePrefix + 'F' + randomBytes(57).toString('base64url');
  }

  async status(): Promise<KeyManagerStatus> {
    this.#enter('status');
    return this.#initialized ? { initialized: true, sealed: this.#sealed, unseal: this.#progress() } : { initialized: false, sealed: true };
  }

  async init(request: InitRequest, actor: Actor): Promise<InitResult> {
    this.#enter('init', actor);
    if (this.#initialized) fail(ErrorCode.AlreadyInitialized, `already initialized (key set ${this.#keySetId})`);
    const folded = new Set(request.officers.map((o) => o.toLowerCase()));
    if (folded.size !== request.officers.length) fail(ErrorCode.InvalidArgument, 'an officer is listed twice');
    if (!Number.isInteger(request.threshold) || request.threshold < 1 || request.threshold > request.officers.length) {
      fail(ErrorCode.InvalidArgument, 'threshold must be 1..officers');
    }
    this.#initialized = true;
    this.#sealed = false;
    this.#keySetId = randomUUID();
    this.#threshold = request.threshold;
    this.#unsealedBy = [];
    this.#caPem = fakePem('CERTIFICATE');
    const shares = request.officers.map((officer) => {
      let share = sharePrefix + 'S' + randomBytes(57).toString('base64url');
      share = share.slice(0, sharePrefix.length + shareBodyChars);
      this.#shares.set(share, officer);
      return { officer, share };
    });
    return { keySetId: this.#keySetId, shares, caCertificatePem: this.#caPem };
  }

  async submitShare(shareText: string, actor: Actor): Promise<UnsealProgress> {
    this.#enter('submitShare', actor);
    this.#needInit();
    if (!this.#sealed) fail(ErrorCode.AlreadyUnsealed, `already unsealed (key set ${this.#keySetId})`);
    const text = shareText.replace(/\s+/g, '');
    if (!text.startsWith(sharePrefix)) fail(ErrorCode.OfficerShareMalformed, `not a valid officer share: an officer share starts with "${sharePrefix}"`);
    if (text[sharePrefix.length] === 'F') fail(ErrorCode.OfficerShareForeign, 'this share belongs to another key set');
    const officer = this.#shares.get(text);
    if (officer === undefined) fail(ErrorCode.OfficerShareInvalid, 'the share does not match any officer of this key set');
    if (this.#pending.includes(officer)) fail(ErrorCode.OfficerShareDuplicate, `officer "${officer}" has already submitted a share`);
    this.#pending.push(officer);
    if (this.#pending.length >= this.#threshold) {
      this.#sealed = false;
      this.#unsealedBy = this.#pending;
      this.#pending = [];
    }
    return this.#progress();
  }

  async seal(actor: Actor): Promise<void> {
    this.#enter('seal', actor);
    this.#needInit();
    this.#sealed = true;
    this.#pending = [];
  }

  async createCoi(name: string, options: { ldapGroup?: string }, actor: Actor): Promise<CoiInfo> {
    this.#enter('createCoi', actor);
    validateCoiName(name);
    this.#needKeys();
    if (this.#cois.has(name)) fail(ErrorCode.StoreConflict, `COI ${name} already exists`);
    const info: CoiInfo = {
      name,
      source: options.ldapGroup === undefined ? 'local' : 'ldap',
      ...(options.ldapGroup === undefined ? {} : { ldapGroup: options.ldapGroup }),
      workgroupKeyId: this.#newKeyId(),
      createdAt: new Date(),
    };
    this.#cois.set(name, { info, members: [], keyIds: [info.workgroupKeyId!] });
    return info;
  }

  async listCois(): Promise<readonly CoiInfo[]> {
    this.#enter('listCois');
    this.#needInit();
    return [...this.#cois.values()].map((c) => c.info);
  }

  async removeCoi(name: string, actor: Actor): Promise<void> {
    this.#enter('removeCoi', actor);
    this.#coi(name);
    if ([...this.#vdisks.values()].some((v) => v.coi === name)) fail(ErrorCode.StoreConflict, `COI ${name} still has virtual disks`);
    this.#cois.delete(name);
  }

  async addMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void> {
    this.#enter('addMember', actor);
    const c = this.#coi(coi);
    if (c.info.source === 'ldap') fail(ErrorCode.InvalidArgument, `COI ${coi} takes its members from LDAP; change the directory group`);
    if (c.members.some((m) => m.kind === member.kind && m.name === member.name)) fail(ErrorCode.StoreConflict, `${member.kind} ${member.name} is already a member`);
    c.members.push({ kind: member.kind, name: member.name });
  }

  async removeMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void> {
    this.#enter('removeMember', actor);
    const c = this.#coi(coi);
    const i = c.members.findIndex((m) => m.kind === member.kind && m.name === member.name);
    if (i < 0) fail(ErrorCode.NotFound, `${member.kind} ${member.name} is not a member of ${coi}`);
    c.members.splice(i, 1);
  }

  async listMembers(coi: string): Promise<readonly DirectoryMember[]> {
    this.#enter('listMembers');
    return [...this.#coi(coi).members];
  }

  async coisOf(member: DirectoryMember): Promise<readonly string[]> {
    this.#enter('coisOf');
    return [...this.#cois.values()].filter((c) => c.members.some((m) => m.kind === member.kind && m.name === member.name)).map((c) => c.info.name);
  }

  async presentVolume(request: { name: string; volumeId?: string; volume?: string; coi: string }, actor: Actor): Promise<VirtualDiskInfo> {
    this.#enter('presentVolume', actor);
    this.#needKeys();
    let volumeName: string | undefined;
    let volumeId: string | undefined;
    if (request.volume !== undefined) {
      volumeName = request.volume;
      volumeId = this.volumes.get(request.volume);
    } else {
      for (const [n, id] of this.volumes) if (id === request.volumeId) [volumeName, volumeId] = [n, id];
    }
    if (volumeName === undefined || volumeId === undefined || this.#shredded.has(volumeName)) {
      fail(ErrorCode.NotFound, `no volume ${request.volume ?? request.volumeId}`);
    }
    this.#coi(request.coi);
    if (this.#vdisks.has(request.name)) fail(ErrorCode.StoreConflict, `virtual disk ${request.name} already exists`);
    const info: VirtualDiskInfo = { name: request.name, volumeId, volumeName, coi: request.coi, createdAt: new Date() };
    this.#vdisks.set(request.name, info);
    return info;
  }

  async withdrawVirtualDisk(name: string, actor: Actor): Promise<void> {
    this.#enter('withdrawVirtualDisk', actor);
    const v = this.#vdisks.get(name);
    if (v === undefined) fail(ErrorCode.NotFound, `no virtual disk ${name}`);
    this.#needKeys();
    const others = [...this.#vdisks.values()].filter((o) => o.volumeId === v.volumeId && o.name !== name);
    if (others.length === 0) fail(ErrorCode.StoreConflict, `virtual disk ${name} holds the volume's last key; shred the volume instead`);
    this.#vdisks.delete(name);
  }

  async listVirtualDisks(filter?: { volumeId?: string; coi?: string }): Promise<readonly VirtualDiskInfo[]> {
    this.#enter('listVirtualDisks');
    this.#needInit();
    return [...this.#vdisks.values()].filter((v) => (filter?.volumeId === undefined || v.volumeId === filter.volumeId) && (filter?.coi === undefined || v.coi === filter.coi));
  }

  async virtualDisksFor(member: DirectoryMember): Promise<readonly VirtualDiskInfo[]> {
    const cois = new Set(await this.coisOf(member));
    return [...this.#vdisks.values()].filter((v) => cois.has(v.coi));
  }

  async wrappersForVolume(volumeId: string): Promise<readonly Wrapper[]> {
    this.#enter('wrappersForVolume');
    this.#needKeys();
    const cois = new Set([...this.#vdisks.values()].filter((v) => v.volumeId === volumeId).map((v) => v.coi));
    return [...cois].flatMap((c) => this.#coi(c).keyIds.map((id) => ({ id: Buffer.from(id, 'hex'), key: randomBytes(32) })));
  }

  async wrapperForCoi(coi: string): Promise<Wrapper> {
    this.#enter('wrapperForCoi');
    this.#needKeys();
    const id = this.#coi(coi).info.workgroupKeyId;
    if (id === undefined) fail(ErrorCode.KeyDestroyed, `COI ${coi} has no active workgroup key`);
    return { id: Buffer.from(id, 'hex'), key: randomBytes(32) };
  }

  async rotateWorkgroupKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }> {
    this.#enter('rotateWorkgroupKey', actor);
    const c = this.#coi(coi);
    this.#needKeys();
    const oldKeyId = c.info.workgroupKeyId ?? '';
    const newKeyId = this.#newKeyId();
    c.info = { ...c.info, workgroupKeyId: newKeyId };
    c.keyIds.push(newKeyId);
    return { oldKeyId, newKeyId };
  }

  async destroyWorkgroupKey(keyId: string, actor: Actor): Promise<void> {
    this.#enter('destroyWorkgroupKey', actor);
    this.#needKeys();
    const c = [...this.#cois.values()].find((x) => x.keyIds.includes(keyId));
    if (c === undefined) fail(ErrorCode.NotFound, `no workgroup key ${keyId}`);
    c.keyIds = c.keyIds.filter((k) => k !== keyId);
    this.#destroyedKeys.add(keyId);
    if (c.info.workgroupKeyId === keyId) {
      const { workgroupKeyId: _gone, ...rest } = c.info;
      c.info = rest;
    }
  }

  async rotateCoiKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }> {
    this.#enter('rotateCoiKey', actor);
    const c = this.#coi(coi);
    this.#needKeys();
    const oldKeyId = c.info.workgroupKeyId ?? '';
    const newKeyId = this.#newKeyId();
    c.info = { ...c.info, workgroupKeyId: newKeyId };
    c.keyIds = [newKeyId];
    if (oldKeyId !== '') this.#destroyedKeys.add(oldKeyId);
    return { oldKeyId, newKeyId };
  }

  async shredVolume(volume: string, actor: Actor): Promise<ShredReport> {
    this.#enter('shredVolume', actor);
    if (!this.volumes.has(volume) || this.#shredded.has(volume)) fail(ErrorCode.NotFound, `no volume ${volume}`);
    this.#needKeys();
    const destroyed: string[] = [];
    for (const [name, v] of this.#vdisks) {
      if (v.volumeName !== volume) continue;
      const c = this.#coi(v.coi);
      destroyed.push(...c.keyIds);
      for (const k of c.keyIds) this.#destroyedKeys.add(k);
      const fresh = this.#newKeyId();
      c.keyIds = [fresh];
      c.info = { ...c.info, workgroupKeyId: fresh };
      this.#vdisks.delete(name);
    }
    this.#shredded.add(volume);
    return { volumeName: volume, destroyedKeyIds: destroyed };
  }

  async verifyShred(volume: string): Promise<{ readonly clean: boolean; readonly findings: readonly string[] }> {
    this.#enter('verifyShred');
    if (!this.volumes.has(volume)) fail(ErrorCode.NotFound, `no volume ${volume}`);
    return this.#shredded.has(volume) ? { clean: true, findings: [] } : { clean: false, findings: [`volume ${volume} has not been shredded: its strip headers hold wrapped keys`] };
  }

  #issue(kind: 'client' | 'server', subject: string): IssuedClient {
    const serial = randomBytes(16).toString('hex');
    const now = new Date();
    this.#certs.set(serial, { info: { serial, kind, subject, notBefore: now, notAfter: new Date(now.getTime() + 365 * 86_400_000) } });
    return { serial, certificatePem: fakePem('CERTIFICATE'), privateKeyPem: fakePem('PRIVATE KEY'), caCertificatePem: this.#caPem };
  }

  async issueClientCertificate(clientName: string, _options: { validDays?: number }, actor: Actor): Promise<IssuedClient> {
    this.#enter('issueClientCertificate', actor);
    validateClientName(clientName);
    this.#needKeys();
    return this.#issue('client', clientName);
  }

  async issueServerCertificate(hostNames: readonly string[], _options: { validDays?: number }, actor: Actor): Promise<IssuedClient> {
    this.#enter('issueServerCertificate', actor);
    if (hostNames.length === 0) fail(ErrorCode.InvalidArgument, 'a server certificate needs a host name');
    for (const h of hostNames) (isIP(h) === 0 ? validateHostName : validateIpAddress)(h);
    this.#needKeys();
    return this.#issue('server', hostNames[0]!);
  }

  async revokeCertificate(serial: string, actor: Actor): Promise<CertificateInfo> {
    this.#enter('revokeCertificate', actor);
    this.#needKeys();
    const c = this.#certs.get(serial.toLowerCase());
    if (c === undefined) fail(ErrorCode.NotFound, `no certificate with serial ${serial}`);
    if (c.info.revokedAt === undefined) c.info = { ...c.info, revokedAt: new Date() };
    return c.info;
  }

  async listCertificates(): Promise<readonly CertificateInfo[]> {
    this.#enter('listCertificates');
    this.#needInit();
    return [...this.#certs.values()].map((c) => c.info);
  }

  async caCertificatePem(): Promise<string> {
    this.#enter('caCertificatePem');
    this.#needInit();
    return this.#caPem;
  }
}
