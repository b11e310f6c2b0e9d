/**
 * The key-manager commands of `stripvault` (init, unseal, seal, status, coi, vdisk, volume shred,
 * cert, audit). They talk to a running appliance through its admin API (`--api URL`), never to the
 * store directly: the master key lives only in the serving process.
 *
 * Officer shares are read from stdin only — argv is visible to every user through `ps` — and never
 * written anywhere but the terminal once, at init.
 */
import { lstat, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ErrorCode, StripvaultError, fail, isStripvaultError } from '../appliance/errors.ts';
import { ApiClient, apiUrlDefault, resolveApiToken, segment } from './api-client.ts';
import type { CliIo } from './main.ts';

/** Longest stdin `unseal` reads: one share is under a hundred characters, pasted with some slack. */
export const shareInputBytesMax = 4096;
const certFileMode = 0o644;
const keyFileMode = 0o600;
const outDirMode = 0o700;

export interface KeysCommand {
  readonly group: string;
  readonly verb: string | undefined;
  readonly rest: readonly string[];
  readonly options: Readonly<Record<string, string | boolean | undefined>>;
  readonly dataDir: string;
  readonly io: CliIo;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

const topLevel = new Set(['init', 'unseal', 'seal', 'status']);
const groups = new Set(['coi', 'vdisk', 'cert', 'audit']);
const volumeVerbs = new Set(['shred', 'verify-shred']);

/** Whether `stripvault <group> <verb>` is one of these commands. */
export function isKeysCommand(group: string, verb: string | undefined): boolean {
  return topLevel.has(group) || groups.has(group) || (group === 'volume' && verb !== undefined && volumeVerbs.has(verb));
}

function usage(message: string): never {
  fail(ErrorCode.InvalidArgument, `${message} (see stripvault --help)`);
}

interface Coi {
  name: string;
  source: string;
  ldapGroup?: string;
  workgroupKeyId?: string;
  createdAt: string;
}
interface VirtualDisk {
  name: string;
  volumeName: string;
  volumeId: string;
  coi: string;
  createdAt: string;
}
interface Certificate {
  serial: string;
  kind: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  revokedAt?: string;
}
interface Issued {
  serial: string;
  certificatePem: string;
  privateKeyPem: string;
  caCertificatePem: string;
}
interface Progress {
  sealed: boolean;
  threshold: number;
  received: number;
  officers: string[];
}

/**
 * Runs the command if it is one of ours: its exit code, or null for commands this module does not
 * own. Errors are thrown as StripvaultErrors for main's handler (exit 2 for SV_INVALID_ARGUMENT).
 */
export async function keysCommand(cmd: KeysCommand): Promise<number | null> {
  const { group, verb, options, io } = cmd;
  if (!isKeysCommand(group, verb)) return null;
  const env = cmd.env ?? process.env;
  const out = (s: string) => io.stdout.write(s + '\n');
  const str = (name: string): string | undefined => {
    const v = options[name];
    return typeof v === 'string' ? v : undefined;
  };
  const json = options.json === true;
  const args = topLevel.has(group) ? [verb, ...cmd.rest].filter((a): a is string => a !== undefined) : [...cmd.rest];
  const arg = (i: number, what: string): string => args[i] ?? usage(`missing ${what}`);
  const noMoreArgs = (n: number) => {
    if (args.length > n) usage(`unexpected argument ${JSON.stringify(args[n])}`);
  };
  const needOpt = (name: string): string => str(name) ?? usage(`missing --${name}`);

  // Status and unseal go without the token (a share is its own credential), so an officer's
  // workstation needs no copy of it.
  const needsToken = group !== 'status' && group !== 'unseal';
  const token = needsToken ? await resolveApiToken({ tokenFile: str('api-token-file'), env, dataDir: cmd.dataDir }) : undefined;
  const api = new ApiClient({ baseUrl: str('api') ?? (env.STRIPVAULT_API || apiUrlDefault), token });

  const key = topLevel.has(group) ? group : `${group} ${verb ?? ''}`;
  switch (key) {
    case 'init': {
      noMoreArgs(0);
      const officers = needOpt('officers')
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
      const thresholdText = needOpt('threshold');
      if (!/^\d{1,2}$/.test(thresholdText)) usage(`--threshold must be a number, got ${JSON.stringify(thresholdText)}`);
      const r = await api.json<{ keySetId: string; shares: { officer: string; share: string }[] }>({
        method: 'POST',
        path: '/init',
        body: { officers, threshold: Number(thresholdText) },
      });
      io.stderr.write(
        [
          '',
          '!! WARNING: the officer shares below are the ONLY copies and are shown ONCE. stripvault keeps',
          `!! none of them and cannot show them again. Any ${thresholdText} of the ${officers.length} unseal the appliance;`,
          `!! with fewer than ${thresholdText} nobody can. Hand each officer their own share now, privately,`,
          '!! and clear this terminal afterwards.',
          '',
        ].join('\n') + '\n',
      );
      out(`key set ${r.keySetId}: ${thresholdText} of ${officers.length} shares unseal`);
      for (const s of r.shares) out(`officer ${s.officer}: ${s.share}`);
      return 0;
    }
    case 'unseal': {
      // Not quoted back: what was typed there is most likely a share.
      if (args.length > 0) usage('unseal takes no arguments: it reads the share from stdin (argv is visible to every user)');
      const share = await readOneShare(io);
      const p = await api.json<Progress>({ method: 'POST', path: '/unseal', body: { share }, auth: false });
      out(
        p.sealed
          ? `share accepted: ${p.received} of ${p.threshold} (${p.officers.join(', ')}); still sealed`
          : `unsealed (${p.threshold} of ${p.threshold} shares${p.officers.length ? `: ${p.officers.join(', ')}` : ''})`,
      );
      return 0;
    }
    case 'seal': {
      noMoreArgs(0);
      await api.json({ method: 'POST', path: '/seal' });
      out('sealed: the master key and every unwrapped workgroup key are forgotten');
      return 0;
    }
    case 'status': {
      noMoreArgs(0);
      const s = await api.json<{ initialized: boolean; sealed: boolean; unseal: { threshold: number; received: number; officers: string[] } | null }>({
        method: 'GET',
        path: '/status',
        auth: false,
      });
      if (json) out(JSON.stringify(s));
      else {
        out(`initialized: ${s.initialized ? 'yes' : 'no'}`);
        out(`sealed: ${s.sealed ? 'yes' : 'no'}`);
        if (s.sealed && s.unseal) out(`unseal: ${s.unseal.received} of ${s.unseal.threshold} shares received${s.unseal.officers.length ? ` (${s.unseal.officers.join(', ')})` : ''}`);
      }
      return 0;
    }
    case 'coi create': {
      const name = arg(0, 'COI NAME');
      noMoreArgs(1);
      const ldapGroup = str('ldap-group');
      const c = await api.json<Coi>({ method: 'POST', path: '/cois', body: { name, ...(ldapGroup === undefined ? {} : { ldapGroup }) } });
      out(json ? JSON.stringify(c) : `COI ${c.name} created (${c.source}${c.ldapGroup ? `: ${c.ldapGroup}` : ''}), workgroup key ${c.workgroupKeyId ?? '-'}`);
      return 0;
    }
    case 'coi list': {
      noMoreArgs(0);
      const { cois } = await api.json<{ cois: Coi[] }>({ method: 'GET', path: '/cois' });
      if (json) out(JSON.stringify(cois));
      else for (const c of cois) out(`${c.name}\t${c.source}\t${c.ldapGroup ?? '-'}\t${c.workgroupKeyId ?? '-'}\t${c.createdAt}`);
      return 0;
    }
    case 'coi remove': {
      const name = arg(0, 'COI NAME');
      noMoreArgs(1);
      await api.json({ method: 'DELETE', path: `/cois/${segment(name)}` });
      out(`COI ${name} removed`);
      return 0;
    }
    case 'coi add-member':
    case 'coi remove-member': {
      const coi = arg(0, 'COI');
      noMoreArgs(1);
      const client = str('client');
      const user = str('user');
      if ((client === undefined) === (user === undefined)) usage('give exactly one of --client NAME or --user NAME');
      const m = client !== undefined ? { kind: 'client', name: client } : { kind: 'user', name: user! };
      if (verb === 'add-member') {
        await api.json({ method: 'POST', path: `/cois/${segment(coi)}/members`, body: m });
        out(`${m.kind} ${m.name} added to COI ${coi}`);
      } else {
        await api.json({ method: 'DELETE', path: `/cois/${segment(coi)}/members/${segment(m.kind)}/${segment(m.name)}` });
        out(`${m.kind} ${m.name} removed from COI ${coi}`);
      }
      return 0;
    }
    case 'coi members': {
      const coi = arg(0, 'COI');
      noMoreArgs(1);
      const { members } = await api.json<{ members: { kind: string; name: string }[] }>({ method: 'GET', path: `/cois/${segment(coi)}/members` });
      if (json) out(JSON.stringify(members));
      else for (const m of members) out(`${m.kind}\t${m.name}`);
      return 0;
    }
    case 'coi rotate-key': {
      const coi = arg(0, 'COI');
      noMoreArgs(1);
      const r = await api.json<{ oldKeyId: string; newKeyId: string }>({ method: 'POST', path: `/cois/${segment(coi)}/rotate-key` });
      out(json ? JSON.stringify(r) : `COI ${coi}: workgroup key ${r.oldKeyId} replaced by ${r.newKeyId}`);
      return 0;
    }
    case 'vdisk create': {
      const name = arg(0, 'virtual disk NAME');
      noMoreArgs(1);
      const v = await api.json<VirtualDisk>({ method: 'POST', path: '/virtual-disks', body: { name, volume: needOpt('volume'), coi: needOpt('coi') } });
      out(json ? JSON.stringify(v) : `virtual disk ${v.name}: volume ${v.volumeName} presented to COI ${v.coi}`);
      return 0;
    }
    case 'vdisk list': {
      noMoreArgs(0);
      const { virtualDisks } = await api.json<{ virtualDisks: VirtualDisk[] }>({ method: 'GET', path: '/virtual-disks' });
      if (json) out(JSON.stringify(virtualDisks));
      else for (const v of virtualDisks) out(`${v.name}\t${v.volumeName}\t${v.coi}\t${v.createdAt}`);
      return 0;
    }
    case 'vdisk remove': {
      const name = arg(0, 'virtual disk NAME');
      noMoreArgs(1);
      await api.json({ method: 'DELETE', path: `/virtual-disks/${segment(name)}` });
      out(`virtual disk ${name} removed`);
      return 0;
    }
    case 'volume shred': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      if (options['yes-destroy-all-data'] !== true) usage(`shredding destroys every byte of volume ${name} for good; add --yes-destroy-all-data`);
      const r = await api.json<{ volumeName: string; destroyedKeyIds: string[] }>({ method: 'POST', path: `/volumes/${segment(name)}/shred`, body: { confirm: name } });
      out(json ? JSON.stringify(r) : `volume ${r.volumeName} shredded; workgroup keys destroyed: ${r.destroyedKeyIds.join(', ') || 'none'}`);
      return 0;
    }
    case 'volume verify-shred': {
      const name = arg(0, 'volume NAME');
      noMoreArgs(1);
      const r = await api.json<{ clean: boolean; findings: string[] }>({ method: 'GET', path: `/volumes/${segment(name)}/shred-verification` });
      if (json) out(JSON.stringify(r));
      else {
        out(r.clean ? `volume ${name}: no copy of its keys is left` : `volume ${name}: NOT clean`);
        for (const f of r.findings) out(`  ${f}`);
      }
      return r.clean ? 0 : 1;
    }
    case 'cert issue-client':
    case 'cert issue-server': {
      const client = verb === 'issue-client';
      if (client) noMoreArgs(1);
      const subject = client ? [arg(0, 'client NAME')] : args.length > 0 ? args : usage('missing HOST');
      const dir = needOpt('out');
      const role = client ? 'client' : 'server';
      const files = { ca: join(dir, 'ca-cert.pem'), cert: join(dir, `${role}-cert.pem`), key: join(dir, `${role}-key.pem`) };
      // Checked before issuing: a certificate whose key cannot be saved is one to revoke.
      await mkdir(dir, { recursive: true, mode: outDirMode });
      for (const f of Object.values(files)) await refuseExisting(f);
      const issued = await api.json<Issued>({
        method: 'POST',
        path: '/certificates',
        body: client ? { kind: 'client', name: subject[0] } : { kind: 'server', hosts: subject },
      });
      try {
        await writeNew(files.key, issued.privateKeyPem, keyFileMode);
        await writeNew(files.cert, issued.certificatePem, certFileMode);
        await writeNew(files.ca, issued.caCertificatePem, certFileMode);
      } catch (e) {
        const why = isStripvaultError(e) ? e.message : String(e);
        fail(ErrorCode.InvalidArgument, `certificate ${issued.serial} was issued but could not be saved (${why}); revoke it: stripvault cert revoke ${issued.serial}`);
      }
      out(`${role} certificate ${issued.serial} for ${subject.join(', ')}: ${files.cert}, ${files.key} (mode 600), ${files.ca}`);
      return 0;
    }
    case 'cert list': {
      noMoreArgs(0);
      const { certificates } = await api.json<{ certificates: Certificate[] }>({ method: 'GET', path: '/certificates' });
      if (json) out(JSON.stringify(certificates));
      else for (const c of certificates) out(`${c.serial}\t${c.kind}\t${c.subject}\t${c.notAfter}\t${c.revokedAt ? `revoked ${c.revokedAt}` : 'valid'}`);
      return 0;
    }
    case 'cert revoke': {
      const serial = arg(0, 'SERIAL');
      noMoreArgs(1);
      const c = await api.json<Certificate>({ method: 'POST', path: `/certificates/${segment(serial)}/revoke` });
      out(json ? JSON.stringify(c) : `certificate ${c.serial} (${c.kind} ${c.subject}) revoked at ${c.revokedAt ?? '?'}`);
      return 0;
    }
    case 'audit verify': {
      noMoreArgs(0);
      const v = await api.json<{ ok: boolean; entries: number; fileEntries: number; firstBad?: { seq: number; sink: string; reason: string } }>({
        method: 'POST',
        path: '/audit/verify',
      });
      if (json) out(JSON.stringify(v));
      else if (v.ok) out(`audit log intact: ${v.entries} entries in the store, ${v.fileEntries} in the file`);
      else out(`audit log BROKEN at entry ${v.firstBad?.seq ?? '?'} (${v.firstBad?.sink ?? '?'}): ${v.firstBad?.reason ?? 'unknown'}; ${v.entries} entries good before it`);
      return v.ok ? 0 : 1;
    }
    default:
      usage(`unknown command "${[group, verb].filter(Boolean).join(' ')}"`);
  }
}

async function refuseExisting(path: string): Promise<void> {
  try {
    await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    fail(ErrorCode.InvalidArgument, `cannot check ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  fail(ErrorCode.InvalidArgument, `${path} already exists; refusing to overwrite it (choose another --out)`);
}

/** O_EXCL, created with its final mode, so a key is never readable by others even for a moment. */
async function writeNew(path: string, text: string, mode: number): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'wx', mode);
  } catch (e) {
    fail(ErrorCode.InvalidArgument, `cannot create ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  try {
    // The umask may only have cleared bits; make the mode exactly what the tools expect.
    await fh.chmod(mode);
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

interface RawModeStream {
  isTTY?: boolean;
  setRawMode?: (on: boolean) => unknown;
}

/**
 * One share from stdin: a line typed at a terminal (not echoed), or piped text holding exactly one
 * non-empty line. The bytes read are zeroed once the text is out of them.
 */
export async function readOneShare(io: CliIo): Promise<string> {
  const stdin = io.stdin as Readable & RawModeStream;
  const bytes = stdin.isTTY === true && typeof stdin.setRawMode === 'function' ? await readHiddenLine(stdin, io) : await readAll(stdin);
  try {
    const lines = bytes
      .toString('utf8')
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '');
    if (lines.length === 0) usage('unseal reads one officer share from stdin; none was given');
    if (lines.length > 1) usage('unseal reads ONE officer share from stdin; give each share in its own unseal');
    return lines[0]!;
  } finally {
    bytes.fill(0);
  }
}

async function readAll(stdin: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stdin) {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
      chunks.push(b);
      total += b.length;
      if (total > shareInputBytesMax) usage(`stdin holds more than ${shareInputBytesMax} bytes; unseal reads one officer share`);
    }
    return Buffer.concat(chunks);
  } finally {
    for (const c of chunks) c.fill(0);
  }
}

async function readHiddenLine(stdin: Readable & RawModeStream, io: CliIo): Promise<Buffer> {
  io.stderr.write('officer share (not shown): ');
  const line = Buffer.alloc(shareInputBytesMax);
  let length = 0;
  stdin.setRawMode!(true);
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const finish = (e: Error | null) => {
        stdin.off('data', onData);
        stdin.pause();
        io.stderr.write('\n');
        if (e) {
          line.fill(0);
          reject(e);
        } else resolve(line.subarray(0, length));
      };
      const onData = (chunk: Buffer | string) => {
        const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        let outcome: 'more' | 'done' | 'cancelled' = 'more';
        for (const byte of b) {
          if (byte === 0x0d || byte === 0x0a || byte === 0x04) outcome = 'done';
          else if (byte === 0x03) outcome = 'cancelled';
          else if (byte === 0x7f || byte === 0x08) length = Math.max(0, length - 1);
          else if (length < line.length) line[length++] = byte;
          if (outcome !== 'more') break;
        }
        b.fill(0);
        if (outcome === 'done') finish(null);
        else if (outcome === 'cancelled') finish(new StripvaultError(ErrorCode.InvalidArgument, 'unseal cancelled'));
      };
      stdin.on('data', onData);
      stdin.resume();
    });
  } finally {
    stdin.setRawMode!(false);
  }
}
