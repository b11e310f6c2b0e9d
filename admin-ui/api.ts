/**
 * The admin REST API (`/api/v1`, JSON in and out): what the `stripvault` CLI and later the admin UI
 * call to run the key manager. This module builds the express app; `api-server.ts` listens.
 *
 * Who may call: `GET /status` anyone; `POST /unseal` anyone holding an officer share (the share is the
 * credential, and failures are rate-limited); everything else needs `Authorization: Bearer <token>`
 * (DATA/api-token). Every body is validated field by field before the key manager sees it; every
 * answer is built from an explicit list of fields, so nothing an implementation attaches leaks out.
 * Errors map to statuses in one place (`api-errors.ts`).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import { silentLogger, type Logger } from '../appliance/log.ts';
import { checkName, checkText } from '../appliance/store/validate.ts';
import type { AuditVerification } from '../keymgr/audit-verify.ts';
import type { DirectoryMember } from '../keymgr/directory.ts';
import type {
  Actor,
  CertificateInfo,
  CoiInfo,
  IssuedClient,
  KeyManagerApi,
  VirtualDiskInfo,
  VolumeKeyOps,
} from '../keymgr/key-manager-api.ts';
import { officerNameCharsMax } from '../keymgr/master-key.ts';
import { officerShareInputCharsMax, officersMax } from '../keymgr/officer-share.ts';
import { leafValidDaysMax, subjectAltNamesMax } from '../keymgr/pki-issue.ts';
import { validateCaCommonName, validateClientName, validateCoiName, validateHostName, validateIpAddress } from '../keymgr/pki-names.ts';
import type { UnsealProgress } from '../keymgr/sealed-state.ts';
import { arrayField, integerField, objectBody, readJsonBody, stringField, type Fields } from './api-body.ts';
import { ApiRefusal, errorBody, toApiError } from './api-errors.ts';
import { isApiToken } from './api-token.ts';
import type { ApplianceOps } from './appliance-ops.ts';
import { addApplianceRoutes } from './volume-routes.ts';
import { FailureWindow } from './failure-window.ts';

export const apiPrefix = '/api/v1';
/** Failed unseal attempts (bad, foreign, duplicate shares; bad requests) allowed per window, per process. */
export const unsealFailuresMax = 10;
export const unsealFailureWindowMs = 60_000;
/** LDAP DNs are unbounded in theory; real group DNs are far shorter. */
export const ldapGroupBytesMax = 1024;
/** X.509 serials are at most 20 octets (RFC 5280 §4.1.2.2). */
const serialPattern = /^[0-9a-f]{1,40}$/i;

export const apiActor: Actor = Object.freeze({ name: 'api:token' });
export const unsealActor: Actor = Object.freeze({ name: 'api:unseal' });

export interface ApiDeps {
  readonly keyManager: KeyManagerApi;
  readonly volumeKeyOps: VolumeKeyOps;
  /** The admin bearer token (hex, see `api-token.ts`). */
  readonly token: string;
  /** Verifies the audit log; without it `POST /audit/verify` does not exist. */
  readonly auditVerify?: () => Promise<AuditVerification>;
  /** Device and volume administration (volume-routes.ts); without it `/devices` and `/volumes` do not exist. */
  readonly applianceOps?: ApplianceOps;
  readonly log?: Logger;
  /** Overrides for tests; the defaults are `unsealFailuresMax` per `unsealFailureWindowMs`. */
  readonly unsealLimit?: { readonly max: number; readonly windowMs: number; readonly now?: () => number };
}

function tokenDigest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Digests of equal length, so the comparison takes the same time whatever the caller sent. */
function tokenMatches(expected: Buffer, header: string | undefined): boolean {
  const match = header === undefined ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  const offered = tokenDigest(match?.[1] ?? '');
  return timingSafeEqual(expected, offered) && match !== null;
}

function param(req: Request, name: string): string {
  const value = req.params[name];
  if (typeof value !== 'string') fail(ErrorCode.InvalidArgument, `missing ${name} in the path`);
  return value;
}

function member(kind: unknown, name: unknown): DirectoryMember {
  if (kind === 'client') return { kind, name: validateClientName(name) };
  if (kind === 'user') return { kind, name: checkName(name, 'user name') };
  fail(ErrorCode.InvalidArgument, 'member kind must be "client" or "user"', { field: 'kind' });
}

function hostOrAddress(value: unknown): string {
  const text = stringField(value, 'host', 253);
  return isIP(text) === 0 ? validateHostName(text) : validateIpAddress(text);
}

function optionalValidDays(fields: Fields): { validDays?: number } {
  return fields.validDays === undefined ? {} : { validDays: integerField(fields.validDays, 'validDays', 1, leafValidDaysMax) };
}

const iso = (d: Date) => d.toISOString();

function coiJson(c: CoiInfo) {
  return {
    name: c.name,
    source: c.source,
    ...(c.ldapGroup === undefined ? {} : { ldapGroup: c.ldapGroup }),
    ...(c.workgroupKeyId === undefined ? {} : { workgroupKeyId: c.workgroupKeyId }),
    createdAt: iso(c.createdAt),
  };
}

function virtualDiskJson(v: VirtualDiskInfo) {
  return { name: v.name, volumeId: v.volumeId, volumeName: v.volumeName, coi: v.coi, createdAt: iso(v.createdAt) };
}

function certificateJson(c: CertificateInfo) {
  return {
    serial: c.serial,
    kind: c.kind,
    subject: c.subject,
    notBefore: iso(c.notBefore),
    notAfter: iso(c.notAfter),
    ...(c.revokedAt === undefined ? {} : { revokedAt: iso(c.revokedAt) }),
  };
}

function issuedJson(i: IssuedClient) {
  return { serial: i.serial, certificatePem: i.certificatePem, privateKeyPem: i.privateKeyPem, caCertificatePem: i.caCertificatePem };
}

function progressJson(p: UnsealProgress) {
  return { sealed: p.sealed, threshold: p.threshold, received: p.received, officers: [...p.officers] };
}

function memberJson(m: DirectoryMember) {
  return { kind: m.kind, name: m.name };
}

function auditJson(v: AuditVerification) {
  return {
    ok: v.ok,
    entries: v.entries,
    fileEntries: v.fileEntries,
    ...(v.firstBad === undefined ? {} : { firstBad: { seq: v.firstBad.seq, sink: v.firstBad.sink, reason: v.firstBad.reason } }),
  };
}

export function buildApi(deps: ApiDeps): Express {
  if (!isApiToken(deps.token)) throw new TypeError('buildApi: token must be an API token (see api-token.ts)');
  const km = deps.keyManager;
  const ops = deps.volumeKeyOps;
  const log = deps.log ?? silentLogger;
  const expectedToken = tokenDigest(deps.token);
  const unsealFailures = new FailureWindow({
    max: deps.unsealLimit?.max ?? unsealFailuresMax,
    windowMs: deps.unsealLimit?.windowMs ?? unsealFailureWindowMs,
    ...(deps.unsealLimit?.now ? { now: deps.unsealLimit.now } : {}),
  });

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', 'simple');

  app.use((req, res, next) => {
    // Answers carry shares, private keys and key ids: no cache anywhere may keep them.
    res.set('Cache-Control', 'no-store');
    res.set('X-Content-Type-Options', 'nosniff');
    res.on('finish', () => {
      log.log(res.statusCode >= 500 ? 'error' : 'info', 'api.request', {
        method: req.method,
        route: req.route?.path ?? null,
        status: res.statusCode,
        code: res.locals.errorCode ?? null,
        actor: res.locals.actor ?? null,
      });
    });
    // No route takes query parameters; one sent anyway is an unknown field.
    if (req.url.includes('?')) {
      next(new ApiRefusal(400, ErrorCode.InvalidArgument, 'query parameters are not accepted'));
      return;
    }
    next();
  });

  const api = express.Router({ strict: false, caseSensitive: true });
  api.get(
    '/status',
    async (_req, res) => {
      const s = await km.status();
      res.json({
        initialized: s.initialized,
        sealed: s.sealed,
        unseal: s.unseal === undefined ? null : { threshold: s.unseal.threshold, received: s.unseal.received, officers: [...s.unseal.officers] },
      });
    },
  );

  api.post(
    '/unseal',
    async (req, res) => {
      res.locals.actor = unsealActor.name;
      const retryMs = unsealFailures.begin();
      if (retryMs > 0) {
        res.set('Retry-After', String(Math.ceil(retryMs / 1000)));
        throw new ApiRefusal(429, ErrorCode.RateLimited, 'too many failed unseal attempts; wait and try again');
      }
      let share = '';
      let failed = true;
      try {
        const fields = objectBody(await readJsonBody(req), ['share']);
        share = stringField(fields.share, 'share', officerShareInputCharsMax);
        const progress = await km.submitShare(share, unsealActor);
        failed = false;
        res.json(progressJson(progress));
      } catch (e) {
        const answer = toApiError(e, [share]);
        // Only refusals of what the caller sent count: a sealed race or an internal error is not theirs.
        failed = answer.status === 400 || answer.status === 413 || answer.status === 415 || answer.status === 422;
        res.locals.errorCode = answer.body.error.code;
        if (answer.status === 500) log.log('error', 'api.internal', { route: '/unseal', error: (e as Error)?.name ?? 'unknown' });
        res.status(answer.status).json(answer.body);
      } finally {
        share = '';
        unsealFailures.end(failed);
      }
    },
  );

  // Everything below needs the admin token. Checked before the body is read, so an unauthenticated
  // caller cannot make the API parse anything.
  api.use((req, res, next) => {
    if (!tokenMatches(expectedToken, req.get('authorization'))) {
      res.set('WWW-Authenticate', 'Bearer');
      next(new ApiRefusal(401, ErrorCode.AuthFailed, 'missing or wrong API token (Authorization: Bearer <token>)'));
      return;
    }
    res.locals.actor = apiActor.name;
    next();
  });

  api.use(async (req, _res, next) => {
    req.body = await readJsonBody(req);
    next();
  });

  api.post(
    '/init',
    async (req, res) => {
      const f = objectBody(req.body, ['officers', 'threshold'], ['caCommonName']);
      const officers = arrayField(f.officers, 'officers', 1, officersMax).map((o, i) => stringField(o, `officers[${i}]`, officerNameCharsMax));
      const threshold = integerField(f.threshold, 'threshold', 1, officers.length);
      const result = await km.init(
        { officers, threshold, ...(f.caCommonName === undefined ? {} : { caCommonName: validateCaCommonName(f.caCommonName) }) },
        apiActor,
      );
      res.status(201).json({
        keySetId: result.keySetId,
        shares: result.shares.map((s) => ({ officer: s.officer, share: s.share })),
        caCertificatePem: result.caCertificatePem,
      });
    },
  );

  api.post(
    '/seal',
    async (req, res) => {
      objectBody(req.body, []);
      await km.seal(apiActor);
      res.json({ sealed: true });
    },
  );

  api.get(
    '/cois',
    async (_req, res) => {
      res.json({ cois: (await km.listCois()).map(coiJson) });
    },
  );

  api.post(
    '/cois',
    async (req, res) => {
      const f = objectBody(req.body, ['name'], ['ldapGroup']);
      const name = validateCoiName(f.name);
      const options = f.ldapGroup === undefined ? {} : { ldapGroup: checkText(f.ldapGroup, 'ldapGroup', ldapGroupBytesMax) };
      res.status(201).json(coiJson(await km.createCoi(name, options, apiActor)));
    },
  );

  api.delete(
    '/cois/:name',
    async (req, res) => {
      await km.removeCoi(validateCoiName(param(req, 'name')), apiActor);
      res.status(204).end();
    },
  );

  api.get(
    '/cois/:name/members',
    async (req, res) => {
      const members = await km.listMembers(validateCoiName(param(req, 'name')));
      res.json({ members: members.map(memberJson) });
    },
  );

  api.post(
    '/cois/:name/members',
    async (req, res) => {
      const coi = validateCoiName(param(req, 'name'));
      const f = objectBody(req.body, ['kind', 'name']);
      const m = member(f.kind, f.name);
      await km.addMember(coi, m, apiActor);
      res.status(201).json(memberJson(m));
    },
  );

  api.delete(
    '/cois/:name/members/:kind/:member',
    async (req, res) => {
      const coi = validateCoiName(param(req, 'name'));
      await km.removeMember(coi, member(param(req, 'kind'), param(req, 'member')), apiActor);
      res.status(204).end();
    },
  );

  api.post(
    '/cois/:name/rotate-key',
    async (req, res) => {
      const coi = validateCoiName(param(req, 'name'));
      objectBody(req.body, []);
      const r = await ops.rotateCoiKey(coi, apiActor);
      res.json({ oldKeyId: r.oldKeyId, newKeyId: r.newKeyId });
    },
  );

  api.get(
    '/virtual-disks',
    async (_req, res) => {
      res.json({ virtualDisks: (await km.listVirtualDisks()).map(virtualDiskJson) });
    },
  );

  api.post(
    '/virtual-disks',
    async (req, res) => {
      const f = objectBody(req.body, ['name', 'volume', 'coi']);
      const request = { name: checkName(f.name, 'name'), volume: checkName(f.volume, 'volume'), coi: validateCoiName(f.coi) };
      res.status(201).json(virtualDiskJson(await ops.presentVolume(request, apiActor)));
    },
  );

  api.delete(
    '/virtual-disks/:name',
    async (req, res) => {
      await ops.withdrawVirtualDisk(checkName(param(req, 'name'), 'name'), apiActor);
      res.status(204).end();
    },
  );

  api.post(
    '/volumes/:name/shred',
    async (req, res) => {
      const volume = checkName(param(req, 'name'), 'volume');
      const f = objectBody(req.body, ['confirm']);
      // Irreversible: the caller repeats the volume's name, so a wrong path or a replayed request for
      // another volume cannot destroy anything.
      if (f.confirm !== volume) fail(ErrorCode.InvalidArgument, 'confirm must repeat the volume name exactly', { field: 'confirm' });
      const r = await ops.shredVolume(volume, apiActor);
      res.json({ volumeName: r.volumeName, destroyedKeyIds: [...r.destroyedKeyIds] });
    },
  );

  api.get(
    '/volumes/:name/shred-verification',
    async (req, res) => {
      const r = await ops.verifyShred(checkName(param(req, 'name'), 'volume'));
      res.json({ clean: r.clean, findings: [...r.findings] });
    },
  );

  api.get(
    '/certificates',
    async (_req, res) => {
      res.json({ certificates: (await km.listCertificates()).map(certificateJson) });
    },
  );

  api.post(
    '/certificates',
    async (req, res) => {
      const kind = objectBody(req.body, ['kind'], ['name', 'hosts', 'validDays']).kind;
      if (kind === 'client') {
        const f = objectBody(req.body, ['kind', 'name'], ['validDays']);
        res.status(201).json(issuedJson(await km.issueClientCertificate(validateClientName(f.name), optionalValidDays(f), apiActor)));
      } else if (kind === 'server') {
        const f = objectBody(req.body, ['kind', 'hosts'], ['validDays']);
        const hosts = arrayField(f.hosts, 'hosts', 1, subjectAltNamesMax).map(hostOrAddress);
        res.status(201).json(issuedJson(await km.issueServerCertificate(hosts, optionalValidDays(f), apiActor)));
      } else fail(ErrorCode.InvalidArgument, 'kind must be "client" or "server"', { field: 'kind' });
    },
  );

  api.post(
    '/certificates/:serial/revoke',
    async (req, res) => {
      const serial = param(req, 'serial');
      if (!serialPattern.test(serial)) fail(ErrorCode.InvalidArgument, 'serial must be 1..40 hex digits', { field: 'serial' });
      objectBody(req.body, []);
      res.json(certificateJson(await km.revokeCertificate(serial.toLowerCase(), apiActor)));
    },
  );

  api.get(
    '/ca',
    async (_req, res) => {
      res.type('application/x-pem-file').send(await km.caCertificatePem());
    },
  );

  if (deps.applianceOps !== undefined) addApplianceRoutes(api, deps.applianceOps, apiActor);

  const auditVerify = deps.auditVerify;
  if (auditVerify !== undefined) {
    api.post(
      '/audit/verify',
      async (req, res) => {
        objectBody(req.body, []);
        res.json(auditJson(await auditVerify()));
      },
    );
  }

  app.use(apiPrefix, api);

  app.use((_req, _res, next) => {
    next(new ApiRefusal(404, ErrorCode.NotFound, 'no such API route'));
  });

  app.use((e: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(e);
      return;
    }
    // express's own refusals (a malformed %-escape in the path, ...) are http-errors with a 4xx status.
    const httpStatus = (e as { status?: unknown } | null)?.status;
    const answer =
      !isStripvaultError(e) && typeof httpStatus === 'number' && httpStatus >= 400 && httpStatus < 500
        ? { status: 400, body: errorBody(ErrorCode.InvalidArgument, 'malformed request') }
        : toApiError(e);
    if (answer.status === 500) log.log('error', 'api.internal', { error: (e as Error | null)?.name ?? 'unknown', message: (e as Error | null)?.message ?? String(e) });
    // The rest of an oversized body is left unread: the connection cannot be reused.
    if (answer.status === 413) res.set('Connection', 'close');
    res.locals.errorCode = answer.body.error.code;
    res.status(answer.status).json(answer.body);
  });

  return app;
}
