/**
 * Admin API routes for storage devices and volumes (`/devices`, `/volumes`): what lets security
 * officers' appliance — sealed to every local process, its store held by `stripvault serve` — get
 * devices and volumes at all. Mounted by `buildApi` behind the bearer token and the body reader.
 *
 * Same rules as the rest of the API: every field checked here before the appliance hears of it
 * (SV_INVALID_ARGUMENT naming the field, 400), unknown fields refused, answers built field by field.
 * Paths must be absolute (or NBD URIs): the server's working directory is not the caller's.
 */
import { isAbsolute } from 'node:path';
import type { Request, Response, Router } from 'express';
import { isNbdUri } from '../appliance/device/nbd-uri.ts';
import { ErrorCode, fail, isStripvaultError } from '../appliance/errors.ts';
import { blockBytesDefault, blockBytesMax, blockBytesMin, sharesMax } from '../appliance/split/geometry.ts';
import type { DeviceRecord, StripPlacement, VolumeRecord } from '../appliance/store/store.ts';
import { checkName, checkText, isUuid, pathBytesMax } from '../appliance/store/validate.ts';
import type { ScrubReport } from '../appliance/volume/volume.ts';
import type { RekeyJob } from '../appliance/appliance.ts';
import type { Actor } from '../keymgr/key-manager-api.ts';
import { validateCoiName } from '../keymgr/pki-names.ts';
import { arrayField, integerField, objectBody, type Fields } from './api-body.ts';
import { ApiRefusal, httpStatusForCode } from './api-errors.ts';
import type { ApplianceOps, VolumeHealthView } from './appliance-ops.ts';

/** ext4's largest file: a sparse device file beyond it cannot be made on the usual appliance disk. */
export const deviceCreateBytesMax = 16 * 1024 ** 4;
/** Below three devices M-1 stolen disks could be everything, so M is never chosen silently there. */
export const implicitMDevicesMin = 3;

/**
 * Device and volume failures the shared table in api-errors.ts does not list yet (they would be
 * 500 there): each is about the device or the data, not a bug, so the caller gets its code.
 */
const storageStatusByCode: ReadonlyMap<string, number> = new Map<string, number>([
  [ErrorCode.DeviceUnsupported, 422],
  [ErrorCode.DeviceTooSmall, 409],
  [ErrorCode.DeviceOutOfRange, 409],
  [ErrorCode.DeviceIo, 503],
  [ErrorCode.DeviceGone, 503],
  [ErrorCode.DeviceClosed, 503],
  [ErrorCode.NbdRefused, 503],
  [ErrorCode.NbdConnectionClosed, 503],
  [ErrorCode.NbdProtocol, 503],
  [ErrorCode.NbdRequestFailed, 503],
  [ErrorCode.NotEnoughShares, 503],
  [ErrorCode.VolumeClosed, 503],
  [ErrorCode.VolumeMismatch, 409],
]);

function storageRefusal(e: unknown): unknown {
  if (!isStripvaultError(e) || e instanceof ApiRefusal || httpStatusForCode(e.code) !== undefined) return e;
  const status = storageStatusByCode.get(e.code);
  return status === undefined ? e : new ApiRefusal(status, e.code, e.message);
}

type Handler = (req: Request, res: Response) => Promise<void>;

function handle(fn: Handler): Handler {
  return async (req, res) => {
    try {
      await fn(req, res);
    } catch (e) {
      throw storageRefusal(e);
    }
  };
}

function param(req: Request, name: string): string {
  const value = req.params[name];
  if (typeof value !== 'string') fail(ErrorCode.InvalidArgument, `missing ${name} in the path`);
  return value;
}

/** Devices and volumes are looked up by name or id, as the CLI allows. */
function nameOrId(value: unknown, field: string): string {
  if (typeof value === 'string' && isUuid(value)) return value.toLowerCase();
  return checkName(value, field);
}

function devicePath(value: unknown): string {
  const path = checkText(value, 'path', pathBytesMax);
  if (!isNbdUri(path) && !isAbsolute(path)) {
    fail(ErrorCode.InvalidArgument, 'path: must be an absolute path or an NBD URI (the server does not resolve paths against its working directory)', { field: 'path' });
  }
  return path;
}

function rate(fields: Fields): number {
  return fields.rateBytesPerSec === undefined ? 0 : integerField(fields.rateBytesPerSec, 'rateBytesPerSec', 0, Number.MAX_SAFE_INTEGER);
}

const iso = (d: Date) => d.toISOString();

function deviceJson(d: DeviceRecord) {
  return { id: d.id, name: d.name, kind: d.kind, path: d.path, sizeBytes: d.sizeBytes, state: d.state, createdAt: iso(d.createdAt) };
}

function placementJson(p: StripPlacement) {
  return { volumeId: p.volumeId, index: p.index, offsetBytes: p.offsetBytes, lengthBytes: p.lengthBytes };
}

function volumeJson(v: VolumeRecord) {
  return {
    id: v.id,
    name: v.name,
    m: v.m,
    n: v.n,
    sizeBytes: v.sizeBytes,
    blockSize: v.blockSize,
    state: v.state,
    epoch: v.epoch,
    generationReserved: v.generationReserved,
    createdAt: iso(v.createdAt),
    scrubNextBlock: v.scrubNextBlock,
    scrubCompletedAt: v.scrubCompletedAt === null ? null : iso(v.scrubCompletedAt),
    strips: v.strips.map((s) => ({ index: s.index, deviceId: s.deviceId, offsetBytes: s.offsetBytes, lengthBytes: s.lengthBytes, state: s.state })),
  };
}

function healthJson(h: VolumeHealthView) {
  if ('error' in h) return { state: h.state, error: h.error };
  return {
    state: h.state,
    strips: h.strips.map((s) => ({ index: s.index, state: s.state, ...(s.reason === undefined ? {} : { reason: s.reason }) })),
    repair: h.repair.map((r) => ({ stripIndex: r.stripIndex, address: r.address, reason: r.reason })),
    repairOverflow: h.repairOverflow,
  };
}

function rekeyJson(j: RekeyJob) {
  return {
    volumeName: j.volumeName,
    state: j.state,
    blocksDone: j.blocksDone,
    blocksTotal: j.blocksTotal,
    blocksResealed: j.blocksResealed,
    startedAt: iso(j.startedAt),
    finishedAt: j.finishedAt === undefined ? null : iso(j.finishedAt),
    error: j.error ?? null,
  };
}

function scrubJson(r: ScrubReport) {
  return {
    blocksDone: r.blocksDone,
    blocksTotal: r.blocksTotal,
    blocksRepaired: r.blocksRepaired,
    blocksLost: r.blocksLost,
    nextBlock: r.nextBlock,
    lost: [...r.lost],
    caughtUp: [...r.caughtUp],
  };
}

/** Adds the device and volume routes to the (already authenticated, body-parsed) API router. */
export function addApplianceRoutes(api: Router, ops: ApplianceOps, actor: Actor): void {
  // One API-started scrub or rebuild per volume at a time: a client that timed out and retried
  // would otherwise run a second full pass beside the first.
  const scrubbing = new Set<string>();
  const exclusive = async <T>(volume: string, run: () => Promise<T>): Promise<T> => {
    if (scrubbing.has(volume)) fail(ErrorCode.StoreConflict, `a scrub or rebuild of volume ${volume} is already running`);
    scrubbing.add(volume);
    try {
      return await run();
    } finally {
      scrubbing.delete(volume);
    }
  };

  api.get(
    '/devices',
    handle(async (_req, res) => {
      res.json({ devices: (await ops.listDevices()).map(deviceJson) });
    }),
  );

  api.post(
    '/devices',
    handle(async (req, res) => {
      const f = objectBody(req.body, ['name', 'path'], ['createBytes']);
      const name = checkName(f.name, 'name');
      const path = devicePath(f.path);
      const createBytes = f.createBytes === undefined ? undefined : integerField(f.createBytes, 'createBytes', 1, deviceCreateBytesMax);
      const d = await ops.addDevice({ name, path, ...(createBytes === undefined ? {} : { createBytes }) });
      res.status(201).json({ ...deviceJson(d), created: d.created });
    }),
  );

  api.get(
    '/devices/:name',
    handle(async (req, res) => {
      const { device, strips } = await ops.getDevice(nameOrId(param(req, 'name'), 'device'));
      res.json({ ...deviceJson(device), strips: strips.map(placementJson) });
    }),
  );

  api.delete(
    '/devices/:name',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'device');
      objectBody(req.body, []);
      res.json(deviceJson(await ops.removeDevice(name)));
    }),
  );

  api.get(
    '/volumes',
    handle(async (_req, res) => {
      res.json({ volumes: (await ops.listVolumes()).map(volumeJson) });
    }),
  );

  api.post(
    '/volumes',
    handle(async (req, res) => {
      const f = objectBody(req.body, ['name', 'sizeBytes', 'devices', 'coi'], ['m', 'blockBytes', 'virtualDisk']);
      const name = checkName(f.name, 'name');
      const sizeBytes = integerField(f.sizeBytes, 'sizeBytes', 1, Number.MAX_SAFE_INTEGER);
      const devices = arrayField(f.devices, 'devices', 1, sharesMax).map((d, i) => nameOrId(d, `devices[${i}]`));
      if (new Set(devices).size !== devices.length) fail(ErrorCode.InvalidArgument, 'devices: each device at most once (one strip per device)', { field: 'devices' });
      if (f.m === undefined && devices.length < implicitMDevicesMin) {
        fail(ErrorCode.InvalidArgument, `m: with fewer than ${implicitMDevicesMin} devices, give m explicitly`, { field: 'm' });
      }
      const m = f.m === undefined ? devices.length - 1 : integerField(f.m, 'm', 1, devices.length);
      const blockBytes = f.blockBytes === undefined ? blockBytesDefault : integerField(f.blockBytes, 'blockBytes', blockBytesMin, blockBytesMax);
      const coi = validateCoiName(f.coi);
      const virtualDisk = f.virtualDisk === undefined ? undefined : checkName(f.virtualDisk, 'virtualDisk');
      const v = await ops.createVolume({ name, sizeBytes, devices, m, blockBytes, coi, ...(virtualDisk === undefined ? {} : { virtualDisk }) }, actor);
      res.status(201).json(volumeJson(v));
    }),
  );

  api.get(
    '/volumes/:name',
    handle(async (req, res) => {
      const { volume, health } = await ops.getVolume(nameOrId(param(req, 'name'), 'volume'));
      res.json({ ...volumeJson(volume), health: healthJson(health) });
    }),
  );

  api.delete(
    '/volumes/:name',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'volume');
      objectBody(req.body, []);
      res.json(volumeJson(await ops.removeVolume(name, actor)));
    }),
  );

  // Scrub and rebuild run to the end inside the request and answer with the report: fine for the
  // volumes of today. Long passes become background jobs with progress (and cancel) later.
  api.post(
    '/volumes/:name/scrub',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'volume');
      const rateBytesPerSec = rate(objectBody(req.body, [], ['rateBytesPerSec']));
      const outcome = await exclusive(name, () => ops.scrubVolume(name, { rateBytesPerSec }));
      res.json({ volumeName: outcome.volumeName, ...scrubJson(outcome.report) });
    }),
  );

  // Re-keying runs in the background (it may take hours): 202 with the job, then GET for progress.
  api.post(
    '/volumes/:name/rekey',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'volume');
      const rateBytesPerSec = rate(objectBody(req.body, [], ['rateBytesPerSec']));
      res.status(202).json(rekeyJson(await ops.startRekey(name, { rateBytesPerSec }, actor)));
    }),
  );

  api.get(
    '/volumes/:name/rekey',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'volume');
      const job = await ops.rekeyJob(name);
      if (job === null) fail(ErrorCode.NotFound, `no re-key of volume ${name} was started since the appliance started`);
      res.json(rekeyJson(job));
    }),
  );

  api.post(
    '/volumes/:name/rebuild',
    handle(async (req, res) => {
      const name = nameOrId(param(req, 'name'), 'volume');
      const f = objectBody(req.body, ['strip', 'device'], ['rateBytesPerSec']);
      const strip = integerField(f.strip, 'strip', 0, sharesMax - 1);
      const device = nameOrId(f.device, 'device');
      const rateBytesPerSec = rate(f);
      const outcome = await exclusive(name, () => ops.rebuildStrip(name, { strip, device, rateBytesPerSec }));
      res.json({ volumeName: outcome.volumeName, ...scrubJson(outcome.report) });
    }),
  );
}
