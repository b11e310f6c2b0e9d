/**
 * What the admin API needs from the appliance to administer storage devices and volumes, and the
 * adapter over the real `Appliance`. The API (volume-routes.ts) validates every field before it
 * calls in here; this layer only sequences appliance calls. Kept as an interface so the routes can
 * be tested against a fake, and so the API module never holds the whole Appliance.
 */
import type { Appliance, RekeyJob } from '../appliance/appliance.ts';
import { ErrorCode, StripvaultError, fail } from '../appliance/errors.ts';
import type { DeviceRecord, StripPlacement, VolumeRecord } from '../appliance/store/store.ts';
import type { ScrubReport, Volume, VolumeHealth } from '../appliance/volume/volume.ts';
import type { Actor } from '../keymgr/key-manager-api.ts';

export interface AddDeviceRequest {
  readonly name: string;
  /** Absolute path or NBD URI: the API never resolves a path against the server's working directory. */
  readonly path: string;
  /** Create a sparse file of this size if `path` does not exist. */
  readonly createBytes?: number;
}

export interface CreateVolumeRequest {
  readonly name: string;
  readonly sizeBytes: number;
  /** Device names or ids; N is their count. */
  readonly devices: readonly string[];
  readonly m: number;
  readonly blockBytes: number;
  /** The community of interest the volume is first presented to. */
  readonly coi: string;
  /** Name of that first virtual disk (the NBD export); default the volume's name. */
  readonly virtualDisk?: string;
}

export interface DeviceDetail {
  readonly device: DeviceRecord;
  /** Strips placed on the device. */
  readonly strips: readonly StripPlacement[];
}

/** Live health of an open volume, or why it could not be opened (sealed, no key, devices gone). */
export type VolumeHealthView = VolumeHealth | { readonly state: 'failed'; readonly error: string };

export interface VolumeDetail {
  readonly volume: VolumeRecord;
  readonly health: VolumeHealthView;
}

export interface ScrubRequest {
  /** Primary bytes checked per second at most; 0: as fast as the strips allow. */
  readonly rateBytesPerSec: number;
}

export interface RebuildRequest extends ScrubRequest {
  /** Index of the missing or failed strip. */
  readonly strip: number;
  /** Device (name or id) the new strip goes on. */
  readonly device: string;
}

export interface ScrubOutcome {
  readonly volumeName: string;
  readonly report: ScrubReport;
}

export interface ApplianceOps {
  addDevice(request: AddDeviceRequest): Promise<DeviceRecord & { readonly created: boolean }>;
  listDevices(): Promise<readonly DeviceRecord[]>;
  getDevice(nameOrId: string): Promise<DeviceDetail>;
  /** Refused (SV_STORE_CONFLICT) while any strip lives on the device. */
  removeDevice(nameOrId: string): Promise<DeviceRecord>;
  createVolume(request: CreateVolumeRequest, actor: Actor): Promise<VolumeRecord>;
  listVolumes(): Promise<readonly VolumeRecord[]>;
  /** The store's record plus live health (the volume is opened if it is not). */
  getVolume(nameOrId: string): Promise<VolumeDetail>;
  removeVolume(nameOrId: string, actor: Actor): Promise<VolumeRecord>;
  scrubVolume(nameOrId: string, request: ScrubRequest): Promise<ScrubOutcome>;
  /** Replaces a missing or failed strip with an empty one on another device, then scrubs to fill it. */
  rebuildStrip(nameOrId: string, request: RebuildRequest): Promise<ScrubOutcome>;
  /** Starts a background session key rotation (Appliance.startRekey). */
  startRekey(nameOrId: string, request: ScrubRequest, actor: Actor): Promise<RekeyJob>;
  /** The latest background re-key of the volume, or null. */
  rekeyJob(nameOrId: string): Promise<RekeyJob | null>;
}

/** The same events as the scheduled scrub (scrub-schedule.ts), so administrators see every pass. */
async function scrubRecorded(appliance: Appliance, volume: Volume, request: ScrubRequest, trigger: string): Promise<ScrubOutcome> {
  await appliance.recordEvent('scrub.started', volume.id, { volume: volume.name, trigger });
  let report: ScrubReport;
  try {
    report = await volume.scrub({ rateBytesPerSec: request.rateBytesPerSec });
  } catch (e) {
    if (e instanceof StripvaultError) await appliance.recordEvent('scrub.failed', volume.id, { volume: volume.name, trigger, code: e.code }).catch(() => undefined);
    throw e;
  }
  await appliance.recordEvent('scrub.finished', volume.id, {
    volume: volume.name,
    trigger,
    blocksDone: report.blocksDone,
    blocksRepaired: report.blocksRepaired,
    blocksLost: report.blocksLost,
    caughtUp: report.caughtUp,
    complete: report.nextBlock === report.blocksTotal,
  });
  return { volumeName: volume.name, report };
}

/** The ApplianceOps of a running appliance (`stripvault serve`). */
export function applianceAdminOps(appliance: Appliance): ApplianceOps {
  const store = appliance.store;
  return {
    addDevice: (request) =>
      appliance.addDevice({ name: request.name, path: request.path, ...(request.createBytes === undefined ? {} : { createBytes: request.createBytes }) }),
    listDevices: () => store.listDevices(),
    async getDevice(nameOrId) {
      const device = await store.getDevice(nameOrId);
      return { device, strips: await store.listStripsOnDevice(device.id) };
    },
    removeDevice: (nameOrId) => appliance.removeDevice(nameOrId),
    async createVolume(request, actor) {
      // Appliance.createVolume records the volume before it presents it: a taken virtual disk name
      // would leave an offline volume behind. Checked here first so the common mistake leaves nothing.
      const diskName = request.virtualDisk ?? request.name;
      if ((await appliance.keys.listVirtualDisks()).some((d) => d.name === diskName)) {
        fail(ErrorCode.StoreConflict, `a virtual disk named "${diskName}" already exists`, { field: request.virtualDisk === undefined ? 'name' : 'virtualDisk' });
      }
      return appliance.createVolume(
        {
          name: request.name,
          m: request.m,
          sizeBytes: request.sizeBytes,
          blockBytes: request.blockBytes,
          devices: request.devices,
          coi: request.coi,
          ...(request.virtualDisk === undefined ? {} : { virtualDisk: request.virtualDisk }),
        },
        actor,
      );
    },
    listVolumes: () => store.listVolumes(),
    async getVolume(nameOrId) {
      const volume = await store.getVolume(nameOrId);
      let health: VolumeHealthView;
      try {
        health = (await appliance.openVolume(volume.id)).health();
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        health = { state: 'failed', error: `${e.code}: ${e.message}` };
      }
      return { volume, health };
    },
    async removeVolume(nameOrId, actor) {
      const volume = await store.getVolume(nameOrId);
      await appliance.removeVolume(volume.id, actor);
      return volume;
    },
    async scrubVolume(nameOrId, request) {
      return scrubRecorded(appliance, await appliance.openVolume(nameOrId), request, 'api');
    },
    startRekey: (nameOrId, request, actor) => appliance.startRekey(nameOrId, { rateBytesPerSec: request.rateBytesPerSec }, actor),
    rekeyJob: (nameOrId) => appliance.rekeyJob(nameOrId),
    async rebuildStrip(nameOrId, request) {
      return scrubRecorded(appliance, await appliance.replaceStrip(nameOrId, request.strip, request.device), request, 'api-rebuild');
    },
  };
}
