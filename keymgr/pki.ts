/**
 * The appliance PKI: one CA, the client and server certificates it issues, the registry of what it
 * issued and revoked, the check a TLS server runs on a client certificate, and the CRL. Pure library:
 * where the CA key and the registry live is the caller's choice (wrap/unwrap, CertificateRegistry).
 */
export {
  caKeyBits,
  caKeyBlobBytesMax,
  caValidDaysMax,
  createCa,
  exportCaKeyWrapped,
  importCaKeyWrapped,
  openCa,
  parseCaCertificate,
  type CaCertificate,
  type CertificateAuthority,
  type CreateCaOptions,
} from './pki-ca.ts';
export { checkClientCertificate, type CheckedClient, type CheckOptions } from './pki-check.ts';
export { buildCrl, crlNextUpdateDaysDefault, crlNextUpdateDaysMax, type CrlOptions } from './pki-crl.ts';
export {
  clientUri,
  clientUriPrefix,
  coiNamesMax,
  issueClientCertificate,
  issueServerCertificate,
  leafKeyBits,
  leafValidDaysMax,
  publicKeyBitsMax,
  publicKeyBitsMin,
  subjectAltNamesMax,
  type ClientCertificateOptions,
  type IssuedCertificate,
  type ServerCertificateOptions,
} from './pki-issue.ts';
export {
  commonNameCharsMax,
  hostNameCharsMax,
  validateCaCommonName,
  validateClientName,
  validateCoiName,
  validateHostName,
  validateIpAddress,
} from './pki-names.ts';
export {
  MemoryCertificateRegistry,
  type CertificateKind,
  type CertificateRecord,
  type CertificateRegistry,
} from './pki-registry.ts';
export { notBeforeBackdateMs } from './pki-validity.ts';
export { certificateBytesMax, normalizeSerial, type CertRejectReason } from './pki-x509.ts';
