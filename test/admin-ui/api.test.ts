/**
 * The admin REST API over a real loopback socket, backed by the in-memory fake key manager: every
 * route's happy path, the bearer token, unseal (progress, refusals, rate limit, the share never
 * echoed or logged), bad bodies of every kind, and the status each error code maps to.
 */
import test from 'ava';
import { request as httpRequest } from 'node:http';
import { randomUUID } from 'node:crypto';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { apiBodyBytesMax } from '../../admin-ui/api-body.ts';
import { internalErrorMessage } from '../../admin-ui/api-errors.ts';
import { startFakeApi, type FakeApi } from '../helpers/api-harness.ts';

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

async function call(
  api: FakeApi,
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string | Buffer; contentType?: string | null; token?: string | null; authorization?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? api.token : opts.token;
  if (opts.authorization !== undefined) headers.authorization = opts.authorization;
  else if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | Buffer | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined && opts.contentType !== null) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(`${api.url}/api/v1${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** A request written by hand: chunked bodies and other things fetch will not send. */
function rawRequest(api: FakeApi, method: string, path: string, headers: Record<string, string>, chunks: Buffer[]): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(`${api.url}/api/v1${path}`);
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

async function withApi(fn: (api: FakeApi) => Promise<void>, options: Parameters<typeof startFakeApi>[0] = {}): Promise<void> {
  const api = await startFakeApi(options);
  try {
    await fn(api);
  } finally {
    await api.close();
  }
}

function errorOf(a: Answer): { code: string; message: string } {
  return a.json?.error;
}

async function initialized(api: FakeApi, officers = ['alice', 'bob', 'carol'], threshold = 2): Promise<{ officer: string; share: string }[]> {
  const r = await call(api, 'POST', '/init', { body: { officers, threshold } });
  if (r.status !== 201) throw new Error(`init: ${r.status} ${r.text}`);
  return r.json.shares;
}

test('status needs no token and reports the lifecycle', async (t) => {
  await withApi(async (api) => {
    let r = await call(api, 'GET', '/status', { token: null });
    t.is(r.status, 200);
    t.deepEqual(r.json, { initialized: false, sealed: true, unseal: null });
    t.is(r.headers.get('cache-control'), 'no-store');
    await initialized(api);
    r = await call(api, 'GET', '/status', { token: null });
    t.deepEqual(r.json, { initialized: true, sealed: false, unseal: { threshold: 2, received: 2, officers: [] } });
  });
});

test('init hands out one share per officer, uncached, once', async (t) => {
  await withApi(async (api) => {
    const r = await call(api, 'POST', '/init', { body: { officers: ['alice', 'bob', 'carol'], threshold: 2 } });
    t.is(r.status, 201);
    t.is(r.headers.get('cache-control'), 'no-store');
    t.deepEqual(
      r.json.shares.map((s: { officer: string }) => s.officer),
      ['alice', 'bob', 'carol'],
    );
    t.regex(r.json.keySetId, /^[0-9a-f-]{36}$/);
    t.regex(r.json.caCertificatePem, /BEGIN CERTIFICATE/);
    const again = await call(api, 'POST', '/init', { body: { officers: ['dave'], threshold: 1 } });
    t.is(again.status, 409);
    t.is(errorOf(again).code, ErrorCode.AlreadyInitialized);
    t.deepEqual(api.fake.calls.filter((c) => c.op === 'init').map((c) => c.actor), ['api:token', 'api:token']);
    // The shares are in the answer and nowhere in the log.
    for (const s of r.json.shares) t.false(api.logs.join('\n').includes(s.share));
  });
});

test('init validates every field', async (t) => {
  await withApi(async (api) => {
    const bad: unknown[] = [
      { officers: 'alice,bob', threshold: 1 },
      { officers: [], threshold: 1 },
      { officers: Array.from({ length: 17 }, (_, i) => `o${i}`), threshold: 1 },
      { officers: ['alice', 7], threshold: 1 },
      { officers: ['alice', ''], threshold: 1 },
      { officers: ['alice', 'x'.repeat(65)], threshold: 1 },
      { officers: ['alice', 'bob'], threshold: '2' },
      { officers: ['alice', 'bob'], threshold: 3 },
      { officers: ['alice', 'bob'], threshold: 0 },
      { officers: ['alice', 'bob'], threshold: 1.5 },
      { officers: ['alice', 'bob'] },
      { threshold: 1 },
      { officers: ['alice'], threshold: 1, caCommonName: 'bad,cn' },
      { officers: ['alice'], threshold: 1, extra: true },
      { officers: ['alice'], threshold: 1, ['__proto__']: { admin: true } },
      ['alice'],
      null,
      'alice',
      42,
    ];
    for (const body of bad) {
      const raw = JSON.stringify(body);
      const r = await call(api, 'POST', '/init', { raw });
      t.is(r.status, 400, `${raw}: ${r.text}`);
      t.is(errorOf(r).code, ErrorCode.InvalidArgument, raw);
    }
    // __proto__ as an own JSON key (JSON.stringify above drops it, so write it by hand).
    const proto = await call(api, 'POST', '/init', { raw: '{"officers":["alice"],"threshold":1,"__proto__":{"x":1}}' });
    t.is(proto.status, 400);
    t.regex(errorOf(proto).message, /unknown field/);
    t.is(api.fake.calls.filter((c) => c.op === 'init').length, 0);
  });
});

test('seal and unseal: progress, every kind of bad share refused with its code, the share never echoed or logged', async (t) => {
  await withApi(async (api) => {
    const shares = await initialized(api);
    t.is((await call(api, 'POST', '/seal')).status, 200);
    t.true((await call(api, 'GET', '/status', { token: null })).json.sealed);

    const offered: string[] = [];
    const unseal = async (share: string) => {
      offered.push(share);
      return call(api, 'POST', '/unseal', { body: { share }, token: null });
    };
    let r = await unseal(shares[0]!.share);
    t.is(r.status, 200, r.text);
    t.deepEqual(r.json, { sealed: true, threshold: 2, received: 1, officers: ['alice'] });

    const refusals: [string, string][] = [
      [shares[0]!.share, ErrorCode.OfficerShareDuplicate],
      [api.fake.foreignShare(), ErrorCode.OfficerShareForeign],
      ['svshare1.' + 'A'.repeat(76), ErrorCode.OfficerShareInvalid],
      ['not-a-share-at-all', ErrorCode.OfficerShareMalformed],
    ];
    for (const [share, code] of refusals) {
      r = await unseal(share);
      t.is(r.status, 422, r.text);
      t.is(errorOf(r).code, code);
      t.false(r.text.includes(share), 'share echoed');
    }
    r = await call(api, 'POST', '/unseal', { body: { share: 'x'.repeat(1025) }, token: null });
    t.is(r.status, 400);
    r = await call(api, 'POST', '/unseal', { body: { share: shares[1]!.share, officer: 'bob' }, token: null });
    t.is(r.status, 400);
    t.false(r.text.includes(shares[1]!.share));

    r = await unseal(shares[1]!.share);
    t.is(r.status, 200);
    t.deepEqual(r.json, { sealed: false, threshold: 2, received: 2, officers: ['alice', 'bob'] });
    r = await unseal(shares[2]!.share);
    t.is(r.status, 409);
    t.is(errorOf(r).code, ErrorCode.AlreadyUnsealed);

    t.true(api.fake.calls.filter((c) => c.op === 'submitShare').every((c) => c.actor === 'api:unseal'));
    const log = api.logs.join('\n');
    t.true(api.logs.length > 0);
    for (const s of offered) t.false(log.includes(s), 'share logged');
    t.regex(log, /"actor":"api:unseal"/);
  });
});

test('malformed JSON in an unseal request is refused without quoting it', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    await call(api, 'POST', '/seal');
    const secret = 'svshare1.SECRETSECRETSECRET';
    const r = await call(api, 'POST', '/unseal', { raw: `{"share": "${secret}"`, token: null });
    t.is(r.status, 400);
    t.is(errorOf(r).code, ErrorCode.InvalidArgument);
    t.false(r.text.includes('SECRET'));
    t.false(api.logs.join('\n').includes('SECRET'));
  });
});

test('unseal failures are rate-limited per window; successes are not counted', async (t) => {
  let now = 1_000_000;
  await withApi(
    async (api) => {
      const shares = await initialized(api);
      await call(api, 'POST', '/seal');
      const bad = () => call(api, 'POST', '/unseal', { body: { share: 'garbage' }, token: null });
      t.is((await call(api, 'POST', '/unseal', { body: { share: shares[0]!.share }, token: null })).status, 200);
      for (let i = 0; i < 3; i++) t.is((await bad()).status, 422);
      const limited = await call(api, 'POST', '/unseal', { body: { share: shares[1]!.share }, token: null });
      t.is(limited.status, 429);
      t.is(errorOf(limited).code, ErrorCode.RateLimited);
      t.is(limited.headers.get('retry-after'), '60');
      t.is(api.fake.calls.filter((c) => c.op === 'submitShare').length, 4, 'refused before the key manager saw it');
      now += 30_000;
      t.is((await bad()).status, 429);
      now += 30_001;
      const r = await call(api, 'POST', '/unseal', { body: { share: shares[1]!.share }, token: null });
      t.is(r.status, 200, r.text);
      t.false(r.json.sealed);
    },
    { unsealLimit: { max: 3, windowMs: 60_000, now: () => now } },
  );
});

const protectedRoutes: [string, string][] = [
  ['POST', '/init'],
  ['POST', '/seal'],
  ['GET', '/cois'],
  ['POST', '/cois'],
  ['DELETE', '/cois/finance'],
  ['GET', '/cois/finance/members'],
  ['POST', '/cois/finance/members'],
  ['DELETE', '/cois/finance/members/client/db-01'],
  ['POST', '/cois/finance/rotate-key'],
  ['GET', '/virtual-disks'],
  ['POST', '/virtual-disks'],
  ['DELETE', '/virtual-disks/disk1'],
  ['POST', '/volumes/vol1/shred'],
  ['GET', '/volumes/vol1/shred-verification'],
  ['GET', '/certificates'],
  ['POST', '/certificates'],
  ['POST', '/certificates/0a1b/revoke'],
  ['GET', '/ca'],
  ['POST', '/audit/verify'],
  ['GET', '/no-such-route'],
];

test('every route but status and unseal needs the bearer token', async (t) => {
  await withApi(
    async (api) => {
      await initialized(api);
      const callsBefore = api.fake.calls.length;
      const wrong = [
        { token: null },
        { token: 'f'.repeat(64) },
        { token: api.token.slice(0, -1) },
        { token: api.token + '0' },
        { authorization: `Basic ${api.token}` },
        { authorization: api.token },
        { authorization: `Bearer` },
        { authorization: `Bearer ${api.token} extra` },
      ];
      for (const [method, path] of protectedRoutes) {
        for (const w of wrong) {
          const r = await call(api, method, path, { ...w, ...(method === 'POST' ? { body: { confirm: 'vol1' } } : {}) });
          t.is(r.status, 401, `${method} ${path} ${JSON.stringify(w)}`);
          t.is(errorOf(r).code, ErrorCode.AuthFailed);
          t.is(r.headers.get('www-authenticate'), 'Bearer');
          t.false(r.text.includes(api.token));
        }
      }
      t.is(api.fake.calls.length, callsBefore, 'nothing reached the key manager');
      // The scheme is case-insensitive (RFC 7235).
      t.is((await call(api, 'GET', '/cois', { authorization: `bearer ${api.token}` })).status, 200);
    },
    { auditVerify: async () => ({ ok: true, entries: 0, fileEntries: 0 }) },
  );
});

test('COIs and their members', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    let r = await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    t.is(r.status, 201, r.text);
    t.is(r.json.name, 'finance');
    t.is(r.json.source, 'local');
    t.regex(r.json.workgroupKeyId, /^[0-9a-f]{32}$/);
    t.notThrows(() => new Date(r.json.createdAt).toISOString());
    r = await call(api, 'POST', '/cois', { body: { name: 'eng', ldapGroup: 'cn=eng,ou=groups,dc=example,dc=com' } });
    t.is(r.status, 201);
    t.is(r.json.ldapGroup, 'cn=eng,ou=groups,dc=example,dc=com');
    r = await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    t.is(r.status, 409);
    t.is(errorOf(r).code, ErrorCode.StoreConflict);
    r = await call(api, 'GET', '/cois');
    t.deepEqual(
      r.json.cois.map((c: { name: string }) => c.name),
      ['finance', 'eng'],
    );

    r = await call(api, 'POST', '/cois/finance/members', { body: { kind: 'client', name: 'db-01' } });
    t.is(r.status, 201);
    t.deepEqual(r.json, { kind: 'client', name: 'db-01' });
    t.is((await call(api, 'POST', '/cois/finance/members', { body: { kind: 'user', name: 'Alice Smith' } })).status, 201);
    r = await call(api, 'GET', '/cois/finance/members');
    t.deepEqual(r.json, { members: [{ kind: 'client', name: 'db-01' }, { kind: 'user', name: 'Alice Smith' }] });
    r = await call(api, 'POST', '/cois/eng/members', { body: { kind: 'client', name: 'db-01' } });
    t.is(r.status, 400, 'an LDAP COI takes members from the directory');
    r = await call(api, 'DELETE', '/cois/finance/members/user/Alice%20Smith');
    t.is(r.status, 204);
    r = await call(api, 'DELETE', '/cois/finance/members/user/Alice%20Smith');
    t.is(r.status, 404);
    t.is(errorOf(r).code, ErrorCode.NotFound);
    t.is((await call(api, 'DELETE', '/cois/finance/members/group/x')).status, 400);
    t.is((await call(api, 'GET', '/cois/nope/members')).status, 404);

    r = await call(api, 'POST', '/cois/finance/rotate-key');
    t.is(r.status, 200, r.text);
    t.regex(r.json.oldKeyId, /^[0-9a-f]{32}$/);
    t.not(r.json.oldKeyId, r.json.newKeyId);
    t.is((await call(api, 'POST', '/cois/nope/rotate-key', { body: {} })).status, 404);
    t.is((await call(api, 'POST', '/cois/finance/rotate-key', { body: { force: true } })).status, 400);

    t.is((await call(api, 'DELETE', '/cois/eng')).status, 204);
    t.is((await call(api, 'DELETE', '/cois/eng')).status, 404);
    t.true(api.fake.calls.every((c) => c.actor === 'api:token'));
    t.true(api.fake.calls.some((c) => c.op === 'rotateCoiKey'), 'rotate-key goes through VolumeKeyOps');
  });
});

test('COI and member fields are validated', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    const bad: unknown[] = [
      {},
      { name: '' },
      { name: 'Finance' },
      { name: 'a b' },
      { name: 'x'.repeat(65) },
      { name: 7 },
      { name: 'ok', ldapGroup: 7 },
      { name: 'ok', ldapGroup: 'cn=x\u0000' },
      { name: 'ok', ldapGroup: 'x'.repeat(1025) },
      { name: 'ok', members: [] },
    ];
    for (const body of bad) {
      const r = await call(api, 'POST', '/cois', { body });
      t.is(r.status, 400, JSON.stringify(body));
      t.is(errorOf(r).code, ErrorCode.InvalidArgument);
    }
    await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    for (const body of [{ kind: 'group', name: 'x' }, { kind: 'client', name: 'Bad Name' }, { kind: 'client' }, { name: 'x' }, { kind: 'user', name: '' }, { kind: 'client', name: 'x', extra: 1 }]) {
      const r = await call(api, 'POST', '/cois/finance/members', { body });
      t.is(r.status, 400, JSON.stringify(body));
    }
    t.is((await call(api, 'GET', '/cois/BAD/members')).status, 400);
  });
});

test('virtual disks are presented and withdrawn through VolumeKeyOps', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    const volumeId = randomUUID();
    api.fake.volumes.set('vol1', volumeId);
    await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    await call(api, 'POST', '/cois', { body: { name: 'eng' } });
    let r = await call(api, 'POST', '/virtual-disks', { body: { name: 'disk1', volume: 'vol1', coi: 'finance' } });
    t.is(r.status, 201, r.text);
    t.like(r.json, { name: 'disk1', volumeId, volumeName: 'vol1', coi: 'finance' });
    t.is((await call(api, 'POST', '/virtual-disks', { body: { name: 'disk2', volume: 'vol1', coi: 'eng' } })).status, 201);
    r = await call(api, 'POST', '/virtual-disks', { body: { name: 'disk1', volume: 'vol1', coi: 'eng' } });
    t.is(r.status, 409);
    r = await call(api, 'POST', '/virtual-disks', { body: { name: 'disk3', volume: 'nope', coi: 'eng' } });
    t.is(r.status, 404);
    for (const body of [{ name: 'd', volume: 'vol1' }, { name: '', volume: 'vol1', coi: 'eng' }, { name: 'd', volume: 'vol1', coi: 'eng', extra: 1 }, { name: 'd', volume: 5, coi: 'eng' }]) {
      t.is((await call(api, 'POST', '/virtual-disks', { body })).status, 400, JSON.stringify(body));
    }
    r = await call(api, 'GET', '/virtual-disks');
    t.deepEqual(
      r.json.virtualDisks.map((v: { name: string }) => v.name),
      ['disk1', 'disk2'],
    );
    t.is((await call(api, 'DELETE', '/cois/finance')).status, 409, 'a COI with virtual disks stays');
    t.is((await call(api, 'DELETE', '/virtual-disks/disk1')).status, 204);
    r = await call(api, 'DELETE', '/virtual-disks/disk2');
    t.is(r.status, 409, 'the last key of a volume is not withdrawn');
    t.is((await call(api, 'DELETE', '/virtual-disks/disk1')).status, 404);
    t.true(api.fake.calls.filter((c) => c.op === 'presentVolume' || c.op === 'withdrawVirtualDisk').every((c) => c.actor === 'api:token'));
  });
});

test('shredding needs the volume name repeated; verification reports it', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    api.fake.volumes.set('vol1', randomUUID());
    await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    await call(api, 'POST', '/virtual-disks', { body: { name: 'disk1', volume: 'vol1', coi: 'finance' } });
    let r = await call(api, 'GET', '/volumes/vol1/shred-verification');
    t.is(r.status, 200);
    t.false(r.json.clean);
    t.true(r.json.findings.length > 0);
    for (const body of [undefined, {}, { confirm: 'vol2' }, { confirm: 'VOL1' }, { confirm: true }, { confirm: 'vol1', force: true }]) {
      r = await call(api, 'POST', '/volumes/vol1/shred', body === undefined ? {} : { body });
      t.is(r.status, 400, JSON.stringify(body));
      t.is(errorOf(r).code, ErrorCode.InvalidArgument);
    }
    t.false(api.fake.calls.some((c) => c.op === 'shredVolume'));
    r = await call(api, 'POST', '/volumes/vol1/shred', { body: { confirm: 'vol1' } });
    t.is(r.status, 200, r.text);
    t.is(r.json.volumeName, 'vol1');
    t.is(r.json.destroyedKeyIds.length, 1);
    r = await call(api, 'GET', '/volumes/vol1/shred-verification');
    t.deepEqual(r.json, { clean: true, findings: [] });
    t.is((await call(api, 'GET', '/volumes/nope/shred-verification')).status, 404);
    t.is((await call(api, 'POST', '/volumes/nope/shred', { body: { confirm: 'nope' } })).status, 404);
  });
});

test('certificates: issue client and server (uncached, private key once), list, revoke; the CA', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    let r = await call(api, 'POST', '/certificates', { body: { kind: 'client', name: 'db-01' } });
    t.is(r.status, 201, r.text);
    t.is(r.headers.get('cache-control'), 'no-store');
    t.regex(r.json.privateKeyPem, /BEGIN PRIVATE KEY/);
    t.regex(r.json.certificatePem, /BEGIN CERTIFICATE/);
    t.regex(r.json.caCertificatePem, /BEGIN CERTIFICATE/);
    const clientSerial = r.json.serial;
    r = await call(api, 'POST', '/certificates', { body: { kind: 'server', hosts: ['nas.example.com', '127.0.0.1', '::1'], validDays: 90 } });
    t.is(r.status, 201, r.text);
    const bad: unknown[] = [
      { kind: 'client' },
      { kind: 'client', name: 'DB 01' },
      { kind: 'client', name: 'db-01', hosts: ['x'] },
      { kind: 'server', hosts: [] },
      { kind: 'server', hosts: 'nas' },
      { kind: 'server', hosts: ['NAS.example.com'] },
      { kind: 'server', hosts: ['*.example.com'] },
      { kind: 'server', hosts: [7] },
      { kind: 'server', hosts: Array.from({ length: 33 }, (_, i) => `h${i}.example`) },
      { kind: 'server', hosts: ['nas'], validDays: 0 },
      { kind: 'server', hosts: ['nas'], validDays: 826 },
      { kind: 'server', hosts: ['nas'], name: 'x' },
      { kind: 'ca', name: 'x' },
      { name: 'x' },
    ];
    for (const body of bad) t.is((await call(api, 'POST', '/certificates', { body })).status, 400, JSON.stringify(body));

    r = await call(api, 'GET', '/certificates');
    t.deepEqual(
      r.json.certificates.map((c: { kind: string }) => c.kind),
      ['client', 'server'],
    );
    t.is(r.json.certificates[0].subject, 'db-01');
    t.false('privateKeyPem' in r.json.certificates[0]);

    r = await call(api, 'POST', `/certificates/${clientSerial.toUpperCase()}/revoke`);
    t.is(r.status, 200, r.text);
    t.is(r.json.serial, clientSerial);
    t.truthy(r.json.revokedAt);
    t.is((await call(api, 'POST', '/certificates/00ff/revoke')).status, 404);
    t.is((await call(api, 'POST', '/certificates/xyz/revoke')).status, 400);
    t.is((await call(api, 'POST', `/certificates/${'a'.repeat(41)}/revoke`)).status, 400);

    r = await call(api, 'GET', '/ca');
    t.is(r.status, 200);
    t.regex(r.headers.get('content-type') ?? '', /application\/x-pem-file/);
    t.regex(r.text, /^-----BEGIN CERTIFICATE-----/);
  });
});

test('audit verify exists only when the appliance provides it', async (t) => {
  await withApi(async (api) => {
    const r = await call(api, 'POST', '/audit/verify');
    t.is(r.status, 404);
    t.is(errorOf(r).code, ErrorCode.NotFound);
  });
  await withApi(
    async (api) => {
      const r = await call(api, 'POST', '/audit/verify');
      t.is(r.status, 200);
      t.deepEqual(r.json, { ok: false, entries: 4, fileEntries: 3, firstBad: { seq: 5, sink: 'file', reason: 'hash mismatch' } });
      t.is((await call(api, 'POST', '/audit/verify', { body: { deep: true } })).status, 400);
    },
    { auditVerify: async () => ({ ok: false, entries: 4, fileEntries: 3, firstBad: { seq: 5, sink: 'file', reason: 'hash mismatch' } }) },
  );
});

test('sealed and uninitialized key managers answer 503 with the code that tells them apart', async (t) => {
  await withApi(async (api) => {
    let r = await call(api, 'GET', '/cois');
    t.is(r.status, 503);
    t.is(errorOf(r).code, ErrorCode.NotInitialized);
    await initialized(api);
    await call(api, 'POST', '/seal');
    r = await call(api, 'POST', '/cois', { body: { name: 'finance' } });
    t.is(r.status, 503);
    t.is(errorOf(r).code, ErrorCode.Sealed);
    r = await call(api, 'POST', '/certificates', { body: { kind: 'client', name: 'db-01' } });
    t.is(errorOf(r).code, ErrorCode.Sealed);
  });
});

test('bodies: malformed, oversized, not JSON, wrong encoding, chunked; query strings and unknown routes', async (t) => {
  await withApi(async (api) => {
    await initialized(api);
    const refusals: [Answer, number][] = [
      [await call(api, 'POST', '/cois', { raw: '{"name":' }), 400],
      [await call(api, 'POST', '/cois', { raw: '{"name":"a"} trailing' }), 400],
      [await call(api, 'POST', '/cois', { raw: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]) }), 400],
      [await call(api, 'POST', '/cois', { raw: "{'name':'a'}" }), 400],
      [await call(api, 'POST', '/cois', { raw: 'name=finance', contentType: 'application/x-www-form-urlencoded' }), 415],
      [await call(api, 'POST', '/cois', { raw: '{"name":"finance"}', contentType: 'text/plain' }), 415],
      [await call(api, 'POST', '/cois', { raw: '{"name":"finance"}', contentType: null }), 415],
      [await call(api, 'POST', '/cois', { raw: '{"name":"finance"}', contentType: 'application/json; charset=latin1' }), 415],
      [await call(api, 'POST', '/cois', { raw: JSON.stringify({ name: 'a', pad: 'x'.repeat(apiBodyBytesMax) }) }), 413],
      [await call(api, 'GET', '/cois?all=1'), 400],
      [await call(api, 'GET', '/nope'), 404],
      [await call(api, 'PUT', '/cois'), 404],
      [await call(api, 'GET', '/cois/%E0%A4%A/members'), 400],
    ];
    for (const [r, status] of refusals) {
      t.is(r.status, status, r.text);
      t.truthy(errorOf(r)?.code, r.text);
      t.is(errorOf(r).code, status === 404 ? ErrorCode.NotFound : ErrorCode.InvalidArgument);
      t.false(/at .*\.ts:\d+/.test(r.text), 'no stack trace');
    }
    t.is((await call(api, 'POST', '/cois', { raw: '{"name":"finance"}', contentType: 'application/json; charset=UTF-8' })).status, 201);

    // Chunked (no Content-Length): the limit holds while reading, and a small one goes through.
    const big = await rawRequest(api, 'POST', '/cois', { authorization: `Bearer ${api.token}`, 'content-type': 'application/json' }, [
      Buffer.from('{"name":"x","pad":"'),
      Buffer.alloc(apiBodyBytesMax, 0x61),
      Buffer.from('"}'),
    ]);
    t.is(big.status, 413);
    t.is(JSON.parse(big.text).error.code, ErrorCode.InvalidArgument);
    const small = await rawRequest(api, 'POST', '/cois', { authorization: `Bearer ${api.token}`, 'content-type': 'application/json' }, [
      Buffer.from('{"name":'),
      Buffer.from('"eng"}'),
    ]);
    t.is(small.status, 201, small.text);
    // The server is still well after all that.
    t.is((await call(api, 'GET', '/cois')).json.cois.length, 2);
  });
});

test('each error code maps to its status; anything else is a bare 500 SV_INTERNAL', async (t) => {
  const expected: [string, number][] = [
    [ErrorCode.InvalidArgument, 400],
    [ErrorCode.OfficerShareInvalid, 422],
    [ErrorCode.AuthFailed, 401],
    [ErrorCode.AccessDenied, 403],
    [ErrorCode.NotFound, 404],
    [ErrorCode.StoreConflict, 409],
    [ErrorCode.AlreadyInitialized, 409],
    [ErrorCode.AlreadyUnsealed, 409],
    [ErrorCode.Sealed, 503],
    [ErrorCode.NotInitialized, 503],
    [ErrorCode.AuditUnavailable, 503],
    [ErrorCode.DirectoryUnavailable, 503],
  ];
  await withApi(async (api) => {
    await initialized(api);
    for (const [code, status] of expected) {
      api.fake.failNext = new StripvaultError(code as ErrorCode, `because ${code}`);
      const r = await call(api, 'GET', '/cois');
      t.is(r.status, status, code);
      t.deepEqual(r.json, { error: { code, message: `because ${code}` } });
    }
    for (const e of [new Error('boom at /secret/path.ts:12'), new StripvaultError(ErrorCode.DeviceIo, 'disk /dev/sdz failed'), new TypeError('x is undefined'), 'a string']) {
      api.fake.failNext = e;
      const r = await call(api, 'GET', '/cois');
      t.is(r.status, 500);
      t.deepEqual(r.json, { error: { code: ErrorCode.Internal, message: internalErrorMessage } });
    }
    api.fake.failNext = new Error('boom');
    const r = await call(api, 'POST', '/unseal', { body: { share: 'svshare1.x' }, token: null });
    t.is(r.status, 500);
    t.is(errorOf(r).code, ErrorCode.Internal);
  });
});
