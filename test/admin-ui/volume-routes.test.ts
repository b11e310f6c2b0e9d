/**
 * The device and volume routes of the admin API over a real loopback socket, backed by a fake
 * ApplianceOps: every route's answer field by field, the token on each, the defaults the API
 * fills in, bad input of every kind refused with 400 before the appliance hears of it, storage
 * errors mapped to their statuses (never a 500 for a device the caller named), one API scrub per
 * volume at a time, and no routes at all without the dependency.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import test from 'ava';
import { buildApi } from '../../admin-ui/api.ts';
import { startApiServer } from '../../admin-ui/api-server.ts';
import type { AddDeviceRequest, ApplianceOps, CreateVolumeRequest, RebuildRequest, ScrubOutcome, ScrubRequest, VolumeHealthView } from '../../admin-ui/appliance-ops.ts';
import { deviceCreateBytesMax } from '../../admin-ui/volume-routes.ts';
import { ErrorCode, StripvaultError, fail } from '../../appliance/errors.ts';
import { jsonLogger } from '../../appliance/log.ts';
import type { DeviceRecord, VolumeRecord } from '../../appliance/store/store.ts';
import type { RekeyJob } from '../../appliance/appliance.ts';
import type { Actor } from '../../keymgr/key-manager-api.ts';
import { FakeKeyManager } from '../helpers/fake-key-manager.ts';

const MiB = 1024 * 1024;
const created = new Date('2026-01-02T03:04:05.000Z');

interface Call {
  op: string;
  args: unknown[];
}

/** Devices and volumes in memory; `failNext` makes the next call throw; `gate` holds scrubs open. */
class FakeOps implements ApplianceOps {
  readonly calls: Call[] = [];
  readonly devices = new Map<string, DeviceRecord>();
  readonly volumes = new Map<string, VolumeRecord>();
  failNext: unknown = null;
  health: VolumeHealthView = { state: 'healthy', strips: [{ index: 0, state: 'healthy' }], repair: [], repairOverflow: false };
  gate: Promise<void> | null = null;

  #enter(op: string, ...args: unknown[]): void {
    this.calls.push({ op, args });
    const e = this.failNext;
    if (e !== null) {
      this.failNext = null;
      throw e;
    }
  }

  #device(nameOrId: string): DeviceRecord {
    for (const d of this.devices.values()) if (d.name === nameOrId || d.id === nameOrId) return d;
    fail(ErrorCode.StoreNotFound, `no device "${nameOrId}"`);
  }

  #volume(nameOrId: string): VolumeRecord {
    for (const v of this.volumes.values()) if (v.name === nameOrId || v.id === nameOrId) return v;
    fail(ErrorCode.StoreNotFound, `no volume "${nameOrId}"`);
  }

  async addDevice(request: AddDeviceRequest) {
    this.#enter('addDevice', request);
    if ([...this.devices.values()].some((d) => d.name === request.name)) fail(ErrorCode.StoreConflict, `a device named "${request.name}" already exists`);
    const d: DeviceRecord = { id: randomUUID(), name: request.name, kind: 'file', path: request.path, sizeBytes: request.createBytes ?? 64 * MiB, state: 'online', createdAt: created };
    this.devices.set(d.id, d);
    return { ...d, created: request.createBytes !== undefined };
  }

  async listDevices() {
    this.#enter('listDevices');
    return [...this.devices.values()];
  }

  async getDevice(nameOrId: string) {
    this.#enter('getDevice', nameOrId);
    const device = this.#device(nameOrId);
    const strips = [...this.volumes.values()].flatMap((v) =>
      v.strips.filter((s) => s.deviceId === device.id).map((s) => ({ volumeId: v.id, index: s.index, offsetBytes: s.offsetBytes, lengthBytes: s.lengthBytes })),
    );
    return { device, strips };
  }

  async removeDevice(nameOrId: string) {
    this.#enter('removeDevice', nameOrId);
    const d = this.#device(nameOrId);
    this.devices.delete(d.id);
    return d;
  }

  async createVolume(request: CreateVolumeRequest, actor: Actor) {
    this.#enter('createVolume', request, actor);
    const v: VolumeRecord = {
      id: randomUUID(),
      name: request.name,
      m: request.m,
      n: request.devices.length,
      sizeBytes: request.sizeBytes,
      blockSize: request.blockBytes,
      state: 'online',
      epoch: 1,
      generationReserved: 0,
      createdAt: created,
      scrubNextBlock: 0,
      scrubCompletedAt: null,
      strips: request.devices.map((d, index) => ({ index, deviceId: this.#device(d).id, offsetBytes: 0, lengthBytes: MiB, state: 'healthy' as const })),
    };
    this.volumes.set(v.id, v);
    return v;
  }

  async listVolumes() {
    this.#enter('listVolumes');
    return [...this.volumes.values()];
  }

  async getVolume(nameOrId: string) {
    this.#enter('getVolume', nameOrId);
    return { volume: this.#volume(nameOrId), health: this.health };
  }

  async removeVolume(nameOrId: string, actor: Actor) {
    this.#enter('removeVolume', nameOrId, actor);
    const v = this.#volume(nameOrId);
    this.volumes.delete(v.id);
    return v;
  }

  async scrubVolume(nameOrId: string, request: ScrubRequest): Promise<ScrubOutcome> {
    this.#enter('scrubVolume', nameOrId, request);
    const v = this.#volume(nameOrId);
    await this.gate;
    const blocks = v.sizeBytes / v.blockSize;
    return { volumeName: v.name, report: { blocksDone: blocks, blocksTotal: blocks, blocksRepaired: 1, blocksLost: 0, nextBlock: blocks, lost: [], caughtUp: [] } };
  }

  async rebuildStrip(nameOrId: string, request: RebuildRequest): Promise<ScrubOutcome> {
    this.#enter('rebuildStrip', nameOrId, request);
    const v = this.#volume(nameOrId);
    const blocks = v.sizeBytes / v.blockSize;
    return { volumeName: v.name, report: { blocksDone: blocks, blocksTotal: blocks, blocksRepaired: blocks, blocksLost: 0, nextBlock: blocks, lost: [], caughtUp: [request.strip] } };
  }

  readonly rekeys = new Map<string, RekeyJob>();

  async startRekey(nameOrId: string, request: ScrubRequest, actor: Actor): Promise<RekeyJob> {
    this.#enter('startRekey', nameOrId, request, actor);
    const v = this.#volume(nameOrId);
    if (this.rekeys.get(v.id)?.state === 'running') fail(ErrorCode.StoreConflict, 'already being re-keyed');
    const job: RekeyJob = { volumeId: v.id, volumeName: v.name, state: 'running', blocksDone: 0, blocksTotal: v.sizeBytes / v.blockSize, blocksResealed: 0, startedAt: new Date(0) };
    this.rekeys.set(v.id, job);
    return job;
  }

  async rekeyJob(nameOrId: string): Promise<RekeyJob | null> {
    return this.rekeys.get(this.#volume(nameOrId).id) ?? null;
  }
}

interface Harness {
  ops: FakeOps;
  url: string;
  token: string;
  logs: string[];
  call(method: string, path: string, opts?: { body?: unknown; raw?: string; token?: string | null }): Promise<{ status: number; json: any; text: string }>;
}

async function withRoutes(fn: (h: Harness) => Promise<void>, mount = true): Promise<void> {
  const ops = new FakeOps();
  const token = randomBytes(32).toString('hex');
  const logs: string[] = [];
  const fake = new FakeKeyManager();
  const app = buildApi({ keyManager: fake, volumeKeyOps: fake, token, log: jsonLogger({ level: 'debug', write: (l) => logs.push(l) }), ...(mount ? { applianceOps: ops } : {}) });
  const server = await startApiServer({ host: '127.0.0.1', port: 0, app });
  const call: Harness['call'] = async (method, path, opts = {}) => {
    const headers: Record<string, string> = {};
    const tok = opts.token === undefined ? token : opts.token;
    if (tok !== null) headers.authorization = `Bearer ${tok}`;
    const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${server.url}/api/v1${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };
  try {
    await fn({ ops, url: server.url, token, logs, call });
  } finally {
    await server.close();
  }
}

async function threeDevices(h: Harness): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const r = await h.call('POST', '/devices', { body: { name: `d${i}`, path: `/srv/d${i}.img`, createBytes: 64 * MiB } });
    if (r.status !== 201) throw new Error(r.text);
  }
}

test('without applianceOps there are no device or volume routes', async (t) => {
  await withRoutes(async (h) => {
    for (const [method, path] of [
      ['GET', '/devices'],
      ['GET', '/volumes'],
      ['POST', '/volumes/v/scrub'],
    ] as const) {
      const r = await h.call(method, path);
      t.is(r.status, 404, `${method} ${path}`);
      t.is(r.json.error.code, ErrorCode.NotFound);
    }
  }, false);
});

test('devices: add, list, show, remove, with exact answers', async (t) => {
  await withRoutes(async (h) => {
    const add = await h.call('POST', '/devices', { body: { name: 'd0', path: '/srv/d0.img', createBytes: 64 * MiB } });
    t.is(add.status, 201);
    const id = add.json.id;
    t.deepEqual(add.json, { id, name: 'd0', kind: 'file', path: '/srv/d0.img', sizeBytes: 64 * MiB, state: 'online', createdAt: created.toISOString(), created: true });
    t.deepEqual(h.ops.calls.at(-1), { op: 'addDevice', args: [{ name: 'd0', path: '/srv/d0.img', createBytes: 64 * MiB }] });
    const nbd = await h.call('POST', '/devices', { body: { name: 'remote', path: 'nbd://127.0.0.1:10809/x' } });
    t.is(nbd.status, 201);
    t.false(nbd.json.created);
    t.deepEqual(h.ops.calls.at(-1), { op: 'addDevice', args: [{ name: 'remote', path: 'nbd://127.0.0.1:10809/x' }] }, 'no createBytes when none was given');

    const list = await h.call('GET', '/devices');
    t.is(list.status, 200);
    t.deepEqual(
      list.json.devices.map((d: { name: string }) => d.name),
      ['d0', 'remote'],
    );
    t.deepEqual(Object.keys(list.json.devices[0]), ['id', 'name', 'kind', 'path', 'sizeBytes', 'state', 'createdAt']);

    const show = await h.call('GET', '/devices/d0');
    t.is(show.status, 200);
    t.deepEqual(show.json.strips, []);
    t.is(show.json.id, id);
    // By id, in any case: the id is passed on lower-cased.
    t.is((await h.call('GET', `/devices/${id.toUpperCase()}`)).status, 200);
    t.deepEqual(h.ops.calls.at(-1), { op: 'getDevice', args: [id] });

    const removed = await h.call('DELETE', '/devices/d0');
    t.is(removed.status, 200);
    t.is(removed.json.name, 'd0');
    const gone = await h.call('GET', '/devices/d0');
    t.is(gone.status, 404);
    t.is(gone.json.error.code, ErrorCode.StoreNotFound);
  });
});

test('volumes: create (with the defaults filled in), list, show with health, scrub, rebuild, remove', async (t) => {
  await withRoutes(async (h) => {
    await threeDevices(h);
    const c = await h.call('POST', '/volumes', { body: { name: 'v1', sizeBytes: 8 * MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' } });
    t.is(c.status, 201, c.text);
    t.deepEqual(h.ops.calls.at(-1), {
      op: 'createVolume',
      args: [{ name: 'v1', sizeBytes: 8 * MiB, devices: ['d0', 'd1', 'd2'], m: 2, blockBytes: 4096, coi: 'red' }, { name: 'api:token' }],
    });
    t.deepEqual(Object.keys(c.json), ['id', 'name', 'm', 'n', 'sizeBytes', 'blockSize', 'state', 'epoch', 'generationReserved', 'createdAt', 'scrubNextBlock', 'scrubCompletedAt', 'strips']);
    t.like(c.json, { name: 'v1', m: 2, n: 3, sizeBytes: 8 * MiB, blockSize: 4096, state: 'online', createdAt: created.toISOString() });
    t.deepEqual(Object.keys(c.json.strips[0]), ['index', 'deviceId', 'offsetBytes', 'lengthBytes', 'state']);

    const two = await h.call('POST', '/volumes', { body: { name: 'v2', sizeBytes: MiB, devices: ['d0', 'd1'], coi: 'red', m: 1, blockBytes: 65536, virtualDisk: 'disk two' } });
    t.is(two.status, 201, two.text);
    t.like(h.ops.calls.at(-1)!.args[0] as object, { m: 1, blockBytes: 65536, virtualDisk: 'disk two' });

    const list = await h.call('GET', '/volumes');
    t.deepEqual(
      list.json.volumes.map((v: { name: string }) => v.name),
      ['v1', 'v2'],
    );
    t.is((await h.call('GET', '/devices/d1')).json.strips.length, 2);

    const show = await h.call('GET', '/volumes/v1');
    t.is(show.status, 200);
    t.deepEqual(show.json.health, { state: 'healthy', strips: [{ index: 0, state: 'healthy' }], repair: [], repairOverflow: false });
    h.ops.health = { state: 'failed', error: 'SV_SEALED: sealed' };
    t.deepEqual((await h.call('GET', '/volumes/v1')).json.health, { state: 'failed', error: 'SV_SEALED: sealed' });

    const scrub = await h.call('POST', '/volumes/v1/scrub', { body: { rateBytesPerSec: 50 * MiB } });
    t.is(scrub.status, 200, scrub.text);
    t.deepEqual(scrub.json, { volumeName: 'v1', blocksDone: 2048, blocksTotal: 2048, blocksRepaired: 1, blocksLost: 0, nextBlock: 2048, lost: [], caughtUp: [] });
    t.deepEqual(h.ops.calls.at(-1), { op: 'scrubVolume', args: ['v1', { rateBytesPerSec: 50 * MiB }] });
    t.is((await h.call('POST', '/volumes/v1/scrub')).status, 200, 'no body: full speed');
    t.deepEqual(h.ops.calls.at(-1), { op: 'scrubVolume', args: ['v1', { rateBytesPerSec: 0 }] });

    const rebuild = await h.call('POST', '/volumes/v1/rebuild', { body: { strip: 2, device: 'd0' } });
    t.is(rebuild.status, 200, rebuild.text);
    t.deepEqual(rebuild.json.caughtUp, [2]);
    t.deepEqual(h.ops.calls.at(-1), { op: 'rebuildStrip', args: ['v1', { strip: 2, device: 'd0', rateBytesPerSec: 0 }] });

    const removed = await h.call('DELETE', '/volumes/v2');
    t.is(removed.status, 200);
    t.is(removed.json.name, 'v2');
    t.deepEqual(h.ops.calls.at(-1), { op: 'removeVolume', args: ['v2', { name: 'api:token' }] });
    t.is((await h.call('GET', '/volumes/v2')).status, 404);
  });
});

test('every device and volume route needs the token', async (t) => {
  await withRoutes(async (h) => {
    const routes = [
      ['GET', '/devices'],
      ['POST', '/devices'],
      ['GET', '/devices/d0'],
      ['DELETE', '/devices/d0'],
      ['GET', '/volumes'],
      ['POST', '/volumes'],
      ['GET', '/volumes/v1'],
      ['DELETE', '/volumes/v1'],
      ['POST', '/volumes/v1/scrub'],
      ['POST', '/volumes/v1/rebuild'],
    ] as const;
    for (const [method, path] of routes) {
      for (const token of [null, 'f'.repeat(64)]) {
        const r = await h.call(method, path, { token, ...(method === 'POST' ? { body: {} } : {}) });
        t.is(r.status, 401, `${method} ${path} with token ${token === null ? 'none' : 'wrong'}`);
        t.is(r.json.error.code, ErrorCode.AuthFailed);
      }
    }
    t.deepEqual(h.ops.calls, [], 'the appliance heard nothing');
  });
});

test('bad input is a 400 naming the problem, before the appliance hears of it', async (t) => {
  await withRoutes(async (h) => {
    await threeDevices(h);
    const before = h.ops.calls.length;
    const long = 'x'.repeat(200);
    const ok = { name: 'v', sizeBytes: 8 * MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' };
    const bad: Array<[string, string, unknown]> = [
      ['POST', '/devices', undefined],
      ['POST', '/devices', {}],
      ['POST', '/devices', { name: 'x' }],
      ['POST', '/devices', { path: '/srv/x.img' }],
      ['POST', '/devices', { name: 'x', path: 'relative.img' }],
      ['POST', '/devices', { name: 'x', path: './x.img' }],
      ['POST', '/devices', { name: 'x', path: '' }],
      ['POST', '/devices', { name: 'x', path: '/srv/\u0001x' }],
      ['POST', '/devices', { name: 'x', path: '/' + 'p'.repeat(5000) }],
      ['POST', '/devices', { name: 'x', path: 42 }],
      ['POST', '/devices', { name: 42, path: '/srv/x.img' }],
      ['POST', '/devices', { name: '', path: '/srv/x.img' }],
      ['POST', '/devices', { name: ' x', path: '/srv/x.img' }],
      ['POST', '/devices', { name: long, path: '/srv/x.img' }],
      ['POST', '/devices', { name: 'x\u202e', path: '/srv/x.img' }],
      ['POST', '/devices', { name: randomUUID(), path: '/srv/x.img' }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: 0 }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: -1 }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: 1.5 }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: '64M' }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: deviceCreateBytesMax + 1 }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', createBytes: null }],
      ['POST', '/devices', { name: 'x', path: '/srv/x.img', kind: 'file' }],
      ['POST', '/devices', ['x', '/srv/x.img']],
      ['POST', '/devices', 'x'],
      ['POST', '/devices', null],
      ['POST', '/volumes', {}],
      ['POST', '/volumes', { ...ok, name: undefined }],
      ['POST', '/volumes', { ...ok, name: '' }],
      ['POST', '/volumes', { ...ok, sizeBytes: '8M' }],
      ['POST', '/volumes', { ...ok, sizeBytes: 0 }],
      ['POST', '/volumes', { ...ok, sizeBytes: -4096 }],
      ['POST', '/volumes', { ...ok, sizeBytes: 2 ** 60 }],
      ['POST', '/volumes', { ...ok, devices: 'd0,d1,d2' }],
      ['POST', '/volumes', { ...ok, devices: [] }],
      ['POST', '/volumes', { ...ok, devices: Array.from({ length: 17 }, (_, i) => `d${i}`) }],
      ['POST', '/volumes', { ...ok, devices: ['d0', 'd0', 'd1'] }],
      ['POST', '/volumes', { ...ok, devices: ['d0', 7, 'd1'] }],
      ['POST', '/volumes', { ...ok, devices: ['d0', ''] , m: 1 }],
      ['POST', '/volumes', { ...ok, devices: ['d0', 'd1'] }],
      ['POST', '/volumes', { ...ok, m: 0 }],
      ['POST', '/volumes', { ...ok, m: 4 }],
      ['POST', '/volumes', { ...ok, m: '2' }],
      ['POST', '/volumes', { ...ok, m: 1.5 }],
      ['POST', '/volumes', { ...ok, blockBytes: 256 }],
      ['POST', '/volumes', { ...ok, blockBytes: 2 * MiB }],
      ['POST', '/volumes', { ...ok, blockBytes: '4K' }],
      ['POST', '/volumes', { ...ok, coi: undefined }],
      ['POST', '/volumes', { ...ok, coi: '' }],
      ['POST', '/volumes', { ...ok, coi: 'bad coi!' }],
      ['POST', '/volumes', { ...ok, virtualDisk: '' }],
      ['POST', '/volumes', { ...ok, virtualDisk: 5 }],
      ['POST', '/volumes', { ...ok, regionsZeroed: true }],
      ['POST', '/volumes', [ok]],
      ['POST', '/volumes/v1/scrub', { rateBytesPerSec: -1 }],
      ['POST', '/volumes/v1/scrub', { rateBytesPerSec: 1.5 }],
      ['POST', '/volumes/v1/scrub', { rateBytesPerSec: '50M' }],
      ['POST', '/volumes/v1/scrub', { rate: 1 }],
      ['POST', '/volumes/v1/scrub', 5],
      ['POST', '/volumes/v1/rebuild', {}],
      ['POST', '/volumes/v1/rebuild', { strip: 1 }],
      ['POST', '/volumes/v1/rebuild', { device: 'd0' }],
      ['POST', '/volumes/v1/rebuild', { strip: -1, device: 'd0' }],
      ['POST', '/volumes/v1/rebuild', { strip: 16, device: 'd0' }],
      ['POST', '/volumes/v1/rebuild', { strip: '1', device: 'd0' }],
      ['POST', '/volumes/v1/rebuild', { strip: 1, device: '' }],
      ['POST', '/volumes/v1/rebuild', { strip: 1, device: 'd0', rateBytesPerSec: -5 }],
      ['DELETE', '/volumes/v1', { force: true }],
      ['DELETE', '/devices/d0', { force: true }],
      ['GET', `/devices/${encodeURIComponent(' d0')}`, undefined],
      ['GET', `/devices/${encodeURIComponent('d\u0000')}`, undefined],
      ['GET', `/volumes/${encodeURIComponent('x'.repeat(200))}`, undefined],
      ['DELETE', `/volumes/${encodeURIComponent('v\n')}`, undefined],
      ['POST', `/volumes/${encodeURIComponent('v\t')}/scrub`, undefined],
      ['GET', '/devices?all=1', undefined],
    ];
    for (const [method, path, body] of bad) {
      const r = await h.call(method, path, body === undefined ? {} : { raw: JSON.stringify(body) });
      t.is(r.status, 400, `${method} ${path} ${JSON.stringify(body)}: ${r.text}`);
      t.true([ErrorCode.InvalidArgument, ErrorCode.InvalidGeometry].includes(r.json?.error?.code), r.text);
    }
    for (const [method, path, raw] of [
      ['POST', '/devices', '{"name":'],
      ['POST', '/volumes', 'not json'],
    ] as const) {
      const r = await h.call(method, path, { raw });
      t.is(r.status, 400, raw);
    }
    t.deepEqual(h.ops.calls.slice(before), [], 'the appliance heard nothing of it');
  });
});

test('storage errors keep their codes with fitting statuses; only bugs are 500s, and they say nothing', async (t) => {
  await withRoutes(async (h) => {
    await threeDevices(h);
    const cases: Array<[unknown, number, string]> = [
      [new StripvaultError(ErrorCode.DeviceUnsupported, '/srv is a directory'), 422, ErrorCode.DeviceUnsupported],
      [new StripvaultError(ErrorCode.DeviceTooSmall, 'no free region'), 409, ErrorCode.DeviceTooSmall],
      [new StripvaultError(ErrorCode.DeviceIo, 'EACCES'), 503, ErrorCode.DeviceIo],
      [new StripvaultError(ErrorCode.DeviceNotFound, 'no such file'), 404, ErrorCode.DeviceNotFound],
      [new StripvaultError(ErrorCode.DeviceExists, 'holds bytes'), 409, ErrorCode.DeviceExists],
      [new StripvaultError(ErrorCode.StoreConflict, 'exists'), 409, ErrorCode.StoreConflict],
      [new StripvaultError(ErrorCode.Sealed, 'sealed'), 503, ErrorCode.Sealed],
      [new StripvaultError(ErrorCode.NotEnoughShares, 'too few strips'), 503, ErrorCode.NotEnoughShares],
      [new StripvaultError(ErrorCode.StripChecksum, 'internal detail /var/x'), 500, ErrorCode.Internal],
      [new Error('boom at /secret/path'), 500, ErrorCode.Internal],
    ];
    for (const [error, status, code] of cases) {
      h.ops.failNext = error;
      const r = await h.call('POST', '/devices', { body: { name: 'dx', path: '/srv/dx.img' } });
      t.is(r.status, status, `${(error as Error).message}: ${r.text}`);
      t.is(r.json.error.code, code);
      if (status === 500) t.false(r.text.includes('/'), 'no internal detail reaches the client');
    }
    h.ops.failNext = new StripvaultError(ErrorCode.VolumeUnavailable, 'no key');
    t.is((await h.call('POST', '/volumes', { body: { name: 'v', sizeBytes: MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' } })).status, 503);
  });
});

test('one API scrub per volume at a time', async (t) => {
  await withRoutes(async (h) => {
    await threeDevices(h);
    await h.call('POST', '/volumes', { body: { name: 'v1', sizeBytes: MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' } });
    await h.call('POST', '/volumes', { body: { name: 'v2', sizeBytes: MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' } });
    let open!: () => void;
    h.ops.gate = new Promise<void>((r) => (open = r));
    const first = h.call('POST', '/volumes/v1/scrub');
    while (!h.ops.calls.some((c) => c.op === 'scrubVolume')) await new Promise((r) => setTimeout(r, 5));
    const second = await h.call('POST', '/volumes/v1/scrub');
    t.is(second.status, 409);
    t.is(second.json.error.code, ErrorCode.StoreConflict);
    const rebuild = await h.call('POST', '/volumes/v1/rebuild', { body: { strip: 0, device: 'd1' } });
    t.is(rebuild.status, 409, 'a rebuild waits for the scrub too');
    open();
    t.is((await first).status, 200);
    h.ops.gate = null;
    t.is((await h.call('POST', '/volumes/v1/scrub')).status, 200, 'free again once the first finished');
    t.is((await h.call('POST', '/volumes/v2/scrub')).status, 200);
  });
});

test('re-key runs in the background: 202 with the job, progress by GET, one at a time, 404 before any', async (t) => {
  await withRoutes(async (h) => {
    await threeDevices(h);
    t.is((await h.call('POST', '/volumes', { body: { name: 'rk', sizeBytes: 4 * MiB, devices: ['d0', 'd1', 'd2'], coi: 'red' } })).status, 201);
    t.is((await h.call('GET', '/volumes/rk/rekey')).status, 404);
    const started = await h.call('POST', '/volumes/rk/rekey', { body: { rateBytesPerSec: 1024 } });
    t.is(started.status, 202, started.text);
    t.like(started.json, { volumeName: 'rk', state: 'running', blocksTotal: 1024, finishedAt: null, error: null });
    t.deepEqual(h.ops.calls.at(-1), { op: 'startRekey', args: ['rk', { rateBytesPerSec: 1024 }, { name: 'api:token' }] });
    t.is((await h.call('POST', '/volumes/rk/rekey', { body: {} })).status, 409);
    const job = [...h.ops.rekeys.values()][0]!;
    job.state = 'finished';
    job.blocksDone = 1024;
    t.like((await h.call('GET', '/volumes/rk/rekey')).json, { state: 'finished', blocksDone: 1024 });
    t.is((await h.call('POST', '/volumes/rk/rekey', { body: { bogus: 1 } })).status, 400);
  });
});
