/**
 * The key manager as the CLI, the REST API and the appliance see it: security officers' operations
 * (init, unseal, seal, communities of interest, workgroup keys, virtual disks, certificates) and
 * the questions the data path asks (which keys open this volume, which disks may this client see).
 *
 * Every method that changes keys, membership or access control appends to the audit log first and
 * is refused (SV_AUDIT_UNAVAILABLE) when it cannot. Every method that needs a key throws SV_SEALED
 * while the appliance is sealed. Names are validated (SV_INVALID_ARGUMENT); unknown names are
 * SV_NOT_FOUND; duplicates SV_STORE_CONFLICT.
 */
import type { Wrapper } from '../appliance/strip/header.ts';
import type { DirectoryMember } from './directory.ts';
import type { UnsealProgress } from './sealed-state.ts';

/** Who asks: recorded in the audit log as the actor. */
export interface Actor {
  /** e.g. `officer:alice`, `cli:root`, `api:alice`, `system` */
  readonly name: string;
}

export interface InitRequest {
  /** Security officers' names, 1..16, unique. */
  readonly officers: readonly string[];
  /** T: shares needed to unseal, 1..officers.length. */
  readonly threshold: number;
  /** Common name of the appliance CA; default `stripvault appliance CA`. */
  readonly caCommonName?: string;
}

export interface InitResult {
  readonly keySetId: string;
  /** One share text per officer, in the order given: the only copies. Show once, never store. */
  readonly shares: readonly { readonly officer: string; readonly share: string }[];
  /** PEM of the new appliance CA certificate. */
  readonly caCertificatePem: string;
}

export interface KeyManagerStatus {
  readonly initialized: boolean;
  readonly sealed: boolean;
  /** Absent until initialized. */
  readonly unseal?: UnsealProgress;
}

export interface CoiInfo {
  readonly name: string;
  /** `local`: members kept in the store; `ldap`: members of `ldapGroup` in the directory. */
  readonly source: 'local' | 'ldap';
  readonly ldapGroup?: string;
  /** Id (hex) of the active workgroup key; absent once destroyed. */
  readonly workgroupKeyId?: string;
  readonly createdAt: Date;
}

export interface VirtualDiskInfo {
  /** The export name clients see. Unique across the appliance. */
  readonly name: string;
  readonly volumeId: string;
  readonly volumeName: string;
  readonly coi: string;
  readonly createdAt: Date;
}

export interface IssuedClient {
  readonly serial: string;
  readonly certificatePem: string;
  /** PEM (PKCS#8) of the client's private key: handed to the caller once, never stored. */
  readonly privateKeyPem: string;
  readonly caCertificatePem: string;
}

export interface CertificateInfo {
  readonly serial: string;
  readonly kind: 'client' | 'server';
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly revokedAt?: Date;
}

export interface ShredReport {
  readonly volumeName: string;
  /** Workgroup key ids destroyed (hex). */
  readonly destroyedKeyIds: readonly string[];
}

export interface KeyManagerApi {
  status(): Promise<KeyManagerStatus>;
  init(request: InitRequest, actor: Actor): Promise<InitResult>;
  /** Offers one officer share; unseals on the T-th valid one. Bad shares: SV_OFFICER_SHARE_* codes. */
  submitShare(shareText: string, actor: Actor): Promise<UnsealProgress>;
  /** Forgets the master key and every unwrapped workgroup key; open volumes must be closed by the caller. */
  seal(actor: Actor): Promise<void>;

  createCoi(name: string, options: { ldapGroup?: string }, actor: Actor): Promise<CoiInfo>;
  listCois(): Promise<readonly CoiInfo[]>;
  /** Refused (SV_STORE_CONFLICT) while the COI still has virtual disks. */
  removeCoi(name: string, actor: Actor): Promise<void>;
  /** Local COIs only (SV_INVALID_ARGUMENT for an LDAP COI: change the directory group instead). */
  addMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void>;
  removeMember(coi: string, member: DirectoryMember, actor: Actor): Promise<void>;
  /** Local members as stored, or the LDAP group's members now. */
  listMembers(coi: string): Promise<readonly DirectoryMember[]>;
  /** The COIs `member` belongs to right now (asks the directory for LDAP COIs; fails closed). */
  coisOf(member: DirectoryMember): Promise<readonly string[]>;

  /** Records a virtual disk: `volumeId` presented to `coi` as export `name`. The caller adds the COI's wrapper to the volume's strip headers. */
  presentVolume(request: { name: string; volumeId: string; coi: string }, actor: Actor): Promise<VirtualDiskInfo>;
  withdrawVirtualDisk(name: string, actor: Actor): Promise<void>;
  listVirtualDisks(filter?: { volumeId?: string; coi?: string }): Promise<readonly VirtualDiskInfo[]>;
  /** The virtual disks `member` may see and open now (through its COIs). */
  virtualDisksFor(member: DirectoryMember): Promise<readonly VirtualDiskInfo[]>;
  /**
   * Unwrapped workgroup keys (active and rotated-out but not yet destroyed) of every COI presenting
   * the volume, so headers still wrapped under a key being rotated out open too. SV_SEALED while sealed.
   */
  wrappersForVolume(volumeId: string): Promise<readonly Wrapper[]>;
  /** The wrapper for one COI's active workgroup key. */
  wrapperForCoi(coi: string): Promise<Wrapper>;

  /** New workgroup key for the COI; the old one stays usable until `retireWorkgroupKey`. */
  rotateWorkgroupKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }>;
  /** Destroys a (retired or active) workgroup key: every wrapped copy in the store is deleted. */
  destroyWorkgroupKey(keyId: string, actor: Actor): Promise<void>;

  issueClientCertificate(clientName: string, options: { validDays?: number }, actor: Actor): Promise<IssuedClient>;
  issueServerCertificate(hostNames: readonly string[], options: { validDays?: number }, actor: Actor): Promise<IssuedClient>;
  revokeCertificate(serial: string, actor: Actor): Promise<CertificateInfo>;
  listCertificates(): Promise<readonly CertificateInfo[]>;
  caCertificatePem(): Promise<string>;
}

/**
 * Key operations that also change strip headers, so they need the appliance (its open volumes),
 * not only the key manager. Implemented by the appliance; the API and CLI call them.
 */
export interface VolumeKeyOps {
  /** Presents a volume to a COI as virtual disk `name`: records it and adds the COI's key to every strip header. */
  presentVolume(request: { name: string; volume: string; coi: string }, actor: Actor): Promise<VirtualDiskInfo>;
  /** Withdraws a virtual disk: removes the COI's key from the volume's strip headers (the last one is refused: SV_STORE_CONFLICT). */
  withdrawVirtualDisk(name: string, actor: Actor): Promise<void>;
  /** Rotates a COI's workgroup key: new key, every strip header of its volumes re-wrapped online, old key destroyed. */
  rotateCoiKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }>;
  /**
   * Crypto-shred: the volume's strip headers lose every wrapped key, the workgroup keys that wrapped
   * them are destroyed (other volumes of those COIs are re-wrapped under fresh keys first), and the
   * volume is closed and removed from service. Irreversible.
   */
  shredVolume(volume: string, actor: Actor): Promise<ShredReport>;
  /** Checks that no wrapped copy of the volume's keys is left in the store, its strip headers or memory. */
  verifyShred(volume: string): Promise<{ readonly clean: boolean; readonly findings: readonly string[] }>;
}
