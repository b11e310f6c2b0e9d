/**
 * The embedded default's dev unseal: a key set with one security officer, `dev`, whose share is
 * kept in a file in the data directory, so a fresh clone serves a disk with no officers present
 * (like a dev-mode server). It is the real key manager — master key, workgroup keys, audit —
 * with the one thing production never does: the unseal share on the same disk as the data.
 * Anyone who can read that file can read every volume, so it is announced loudly every time.
 * `--no-dev-unseal` starts sealed instead and waits for officers (init and unseal over the API).
 */
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import type { Actor, KeyManagerApi } from './key-manager-api.ts';
import { officerShareInputCharsMax } from './officer-share.ts';

export const devShareFileName = 'dev-unseal.share';
export const devOfficerName = 'dev';
/** The embedded default's community of interest, and the client name of certificate-less loopback peers in it. */
export const defaultCoiName = 'default';
export const loopbackClientName = 'loopback';

const devActor: Actor = { name: 'system:dev-unseal' };

export const devUnsealWarning =
  'WARNING: DEV UNSEAL — the only security officer share of this appliance is stored UNPROTECTED in %s. ' +
  'Anyone who can read that file can read every volume. Never use this mode in production: ' +
  'start with --no-dev-unseal and initialize with real security officers.';

export type DevUnsealOutcome = 'unsealed' | 'already-unsealed' | 'sealed' | 'not-initialized';

/**
 * Unseals with the dev share if there is one; with `initialize`, first creates the dev key set on
 * an appliance that has none. Never touches an appliance whose officers are real (no share file).
 */
export async function devUnseal(keys: KeyManagerApi, dataDir: string, warn: (message: string) => void, opts: { initialize: boolean }): Promise<DevUnsealOutcome> {
  const path = join(dataDir, devShareFileName);
  let status = await keys.status();
  if (!status.initialized) {
    if (!opts.initialize) return 'not-initialized';
    // A share file without a key set in the store: the store was replaced or lost. Initializing
    // now would orphan one of the two; an administrator decides which to keep.
    if (await stat(path).then(() => true, () => false)) {
      fail(ErrorCode.KeySetInvalid, `${path} exists but the metadata store has no key set: restore the store, or remove the share file to start afresh`);
    }
    const { shares } = await keys.init({ officers: [devOfficerName], threshold: 1 }, devActor);
    // 'wx': a share file is never replaced (it would orphan the key set it belongs to).
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(shares[0]!.share + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    status = await keys.status();
  }
  if (!status.sealed) return 'already-unsealed';
  let text: string;
  try {
    if ((await stat(path)).size > officerShareInputCharsMax) fail(ErrorCode.InvalidArgument, `${path} is not a dev unseal share file`);
    text = (await readFile(path, 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'sealed';
    throw e;
  }
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) !== 0) warn(`WARNING: ${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it.`);
  warn(devUnsealWarning.replace('%s', path));
  const progress = await keys.submitShare(text, devActor);
  return progress.sealed ? 'sealed' : 'unsealed';
}

/** The embedded default's COI, with certificate-less loopback clients as members. */
export async function ensureDefaultCoi(keys: KeyManagerApi): Promise<void> {
  if (!(await keys.listCois()).some((c) => c.name === defaultCoiName)) {
    try {
      await keys.createCoi(defaultCoiName, {}, devActor);
    } catch (e) {
      // Another process made it meanwhile.
      if (!isStripvaultError(e, ErrorCode.StoreConflict)) throw e;
    }
  }
  const members = await keys.listMembers(defaultCoiName);
  if (!members.some((m) => m.kind === 'client' && m.name === loopbackClientName)) {
    await keys.addMember(defaultCoiName, { kind: 'client', name: loopbackClientName }, devActor);
  }
}
