/**
 * The record of every certificate the CA has issued, and which are revoked. A certificate the registry
 * does not know is refused even if the CA signed it (a restored old CA key, a lost issuance), so the
 * registry, not the signature alone, decides who is a client. The metadata store implements this
 * interface later; the in-memory one serves tests and the embedded default until then.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';
import { issueTime } from './pki-validity.ts';
import { normalizeSerial, wholeSeconds } from './pki-x509.ts';

export type CertificateKind = 'client' | 'server';

export interface CertificateRecord {
  /** Lower-case hex of the serial INTEGER's octets. */
  readonly serial: string;
  readonly kind: CertificateKind;
  /** The subject CN: the client name, or the server's first host name or address. */
  readonly subject: string;
  /** The COIs the client was issued for; empty for servers. Kept here, not in the certificate, so a
   * membership change does not need a new certificate. */
  readonly coiNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly revokedAt?: Date;
}

export interface CertificateRegistry {
  /** Refuses (SV_STORE_CONFLICT) a serial it already holds. */
  record(entry: CertificateRecord): Promise<void>;
  find(serial: string): Promise<CertificateRecord | undefined>;
  /** Marks a certificate revoked (SV_CERT_UNKNOWN if never issued). Revoking twice keeps the first time. */
  revoke(serial: string, at?: Date): Promise<CertificateRecord>;
  /** Every record, oldest issue first. */
  listCertificates(): Promise<readonly CertificateRecord[]>;
}

function frozenCopy(entry: CertificateRecord): CertificateRecord {
  return Object.freeze({
    ...entry,
    coiNames: Object.freeze([...entry.coiNames]),
    notBefore: new Date(entry.notBefore),
    notAfter: new Date(entry.notAfter),
    ...(entry.revokedAt === undefined ? {} : { revokedAt: new Date(entry.revokedAt) }),
  });
}

export class MemoryCertificateRegistry implements CertificateRegistry {
  readonly #records = new Map<string, CertificateRecord>();

  async record(entry: CertificateRecord): Promise<void> {
    const serial = normalizeSerial(entry.serial);
    if (this.#records.has(serial)) fail(ErrorCode.StoreConflict, `certificate serial ${serial} is already recorded`, { serial });
    this.#records.set(serial, frozenCopy({ ...entry, serial }));
  }

  async find(serial: string): Promise<CertificateRecord | undefined> {
    const found = this.#records.get(normalizeSerial(serial));
    return found === undefined ? undefined : frozenCopy(found);
  }

  async revoke(serial: string, at?: Date): Promise<CertificateRecord> {
    const key = normalizeSerial(serial);
    const revokedAt = wholeSeconds(issueTime(at));
    const found = this.#records.get(key);
    if (found === undefined) fail(ErrorCode.CertUnknown, `no certificate with serial ${key} was issued`, { serial: key });
    if (found.revokedAt !== undefined) return frozenCopy(found);
    const revoked = frozenCopy({ ...found, revokedAt });
    this.#records.set(key, revoked);
    return frozenCopy(revoked);
  }

  async listCertificates(): Promise<readonly CertificateRecord[]> {
    return [...this.#records.values()].map(frozenCopy);
  }
}
