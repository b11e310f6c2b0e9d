/**
 * The CA's certificate registry in the metadata store: what checkClientCertificate consults on
 * every TLS client, shared by every appliance of a cluster. Same contract as
 * MemoryCertificateRegistry (pki-registry.ts); times are whole seconds, like the certificates.
 */
import { ErrorCode, fail } from '../appliance/errors.ts';
import type { CertificateRow, Store } from '../appliance/store/store.ts';
import type { CertificateRecord, CertificateRegistry } from './pki-registry.ts';
import { issueTime } from './pki-validity.ts';
import { normalizeSerial, wholeSeconds } from './pki-x509.ts';

function recordFromRow(row: CertificateRow): CertificateRecord {
  return Object.freeze({
    serial: row.serial,
    kind: row.kind,
    subject: row.subject,
    coiNames: Object.freeze([...row.coiNames]),
    notBefore: row.notBefore,
    notAfter: row.notAfter,
    ...(row.revokedAt === null ? {} : { revokedAt: row.revokedAt }),
  });
}

export class StoreCertificateRegistry implements CertificateRegistry {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  async record(entry: CertificateRecord): Promise<void> {
    const serial = normalizeSerial(entry?.serial);
    await this.#store.recordCertificate({
      serial,
      kind: entry.kind,
      subject: entry.subject,
      coiNames: entry.coiNames,
      notBefore: entry.notBefore,
      notAfter: entry.notAfter,
    });
  }

  async find(serial: string): Promise<CertificateRecord | undefined> {
    const row = await this.#store.findCertificate(normalizeSerial(serial));
    return row === null ? undefined : recordFromRow(row);
  }

  async revoke(serial: string, at?: Date): Promise<CertificateRecord> {
    const key = normalizeSerial(serial);
    const row = await this.#store.revokeCertificate(key, wholeSeconds(issueTime(at)));
    if (row === null) fail(ErrorCode.CertUnknown, `no certificate with serial ${key} was issued`, { serial: key });
    return recordFromRow(row);
  }

  async listCertificates(): Promise<readonly CertificateRecord[]> {
    return (await this.#store.listCertificates()).map(recordFromRow);
  }
}

/**
 * A registry that answers questions but records and revokes nothing: what the key manager hands
 * to the TLS front end, so issuing and revoking only happen through it (audited).
 */
export class ReadOnlyCertificateRegistry implements CertificateRegistry {
  readonly #inner: CertificateRegistry;

  constructor(inner: CertificateRegistry) {
    this.#inner = inner;
  }

  async record(): Promise<void> {
    fail(ErrorCode.AccessDenied, 'certificates are recorded by the key manager when it issues them');
  }

  find(serial: string): Promise<CertificateRecord | undefined> {
    return this.#inner.find(serial);
  }

  async revoke(): Promise<CertificateRecord> {
    fail(ErrorCode.AccessDenied, 'revoke certificates through the key manager (audited)');
  }

  listCertificates(): Promise<readonly CertificateRecord[]> {
    return this.#inner.listCertificates();
  }
}
