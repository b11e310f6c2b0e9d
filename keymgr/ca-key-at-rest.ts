/**
 * The appliance CA's private key at rest: AES-256-GCM under a key derived from the master key for
 * this purpose alone, HKDF-SHA-256(masterKey, info "stripvault/ca-key/encrypt/v1"), with the CA
 * certificate's SHA-256 fingerprint as associated data so the blob opens only next to the
 * certificate it belongs to.
 *
 *   blob = version (1 byte) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
 *
 * A random nonce is safe here: the key encrypts one message per CA, a handful in a lifetime.
 */
import { X509Certificate, createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { ErrorCode, fail } from '../appliance/errors.ts';
import type { MasterKeyHolder } from './master-key.ts';
import { exportCaKeyWrapped, importCaKeyWrapped } from './pki-ca.ts';

export const caKeyBlobVersion = 1;
const encryptKeyBytes = 32;
const nonceBytes = 12;
const tagBytes = 16;
const headerBytes = 1 + nonceBytes;
const encryptInfo = Buffer.from('stripvault/ca-key/encrypt/v1', 'ascii');
const aadDomain = Buffer.from('stripvault/ca-key/v1\0', 'ascii');

function associatedData(caCertPem: string): Buffer {
  let der: Buffer;
  try {
    der = new X509Certificate(caCertPem).raw;
  } catch (e) {
    return fail(ErrorCode.InvalidArgument, 'the CA certificate does not parse', undefined, e);
  }
  return Buffer.concat([aadDomain, createHash('sha256').update(der).digest()]);
}

function derivedKey(holder: MasterKeyHolder): Buffer {
  return Buffer.from(hkdfSync('sha256', holder.masterKey(), new Uint8Array(0), encryptInfo, encryptKeyBytes));
}

/** SV_SEALED while sealed. */
export function encryptCaKey(holder: MasterKeyHolder, caKey: KeyObject, caCertPem: string): Buffer {
  const aad = associatedData(caCertPem);
  const key = derivedKey(holder);
  try {
    return exportCaKeyWrapped(caKey, (plain) => {
      const nonce = randomBytes(nonceBytes);
      const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: tagBytes });
      cipher.setAAD(aad);
      const body = Buffer.concat([cipher.update(plain), cipher.final()]);
      return Buffer.concat([Uint8Array.of(caKeyBlobVersion), nonce, body, cipher.getAuthTag()]);
    });
  } finally {
    key.fill(0);
  }
}

/** SV_SEALED while sealed; SV_KEY_UNWRAP if the blob is not this CA's key under this master key. */
export function decryptCaKey(holder: MasterKeyHolder, blob: Uint8Array, caCertPem: string): KeyObject {
  const aad = associatedData(caCertPem);
  const key = derivedKey(holder);
  try {
    return importCaKeyWrapped(blob, (sealed) => {
      if (sealed.length <= headerBytes + tagBytes || sealed[0] !== caKeyBlobVersion) {
        fail(ErrorCode.KeyUnwrap, `the stored CA key is not a version ${caKeyBlobVersion} blob`);
      }
      const nonce = sealed.subarray(1, headerBytes);
      const tag = sealed.subarray(sealed.length - tagBytes);
      const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: tagBytes });
      decipher.setAAD(aad);
      decipher.setAuthTag(tag);
      const first = decipher.update(sealed.subarray(headerBytes, sealed.length - tagBytes));
      try {
        return Buffer.concat([first, decipher.final()]);
      } catch (e) {
        return fail(ErrorCode.KeyUnwrap, 'the stored CA key fails authentication (another master key or CA certificate, or altered)', undefined, e);
      } finally {
        first.fill(0);
      }
    });
  } finally {
    key.fill(0);
  }
}
