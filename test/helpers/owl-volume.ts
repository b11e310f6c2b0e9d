/**
 * A 1 MiB 2-of-3 volume on memory strips, each behind a GatedDevice, with an outstanding write list
 * in a temporary directory; `reopen` opens it again as a restart would see it (the strips as they
 * are, the journal file as the page cache holds it), without the gates.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { Owl, type OwlOptions } from '../../appliance/volume/owl.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { GatedDevice } from './gated-device.ts';
import { testWrapper } from './volumes.ts';

export const owlVolumeBytes = 1 << 20;
export const owlVolumeBlockBytes = 4096;

/** `owlOptions`: e.g. { loopWriteBytesMax: 0 } for tests that intercept the journal's thread-pool writev. */
export async function owlVolume(t: { teardown: (f: () => void | Promise<void>) => void }, volumeId: string, owlOptions: OwlOptions = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'sv-owl-volume-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const stripBytes = stripBytesForVolume(owlVolumeBytes, owlVolumeBlockBytes, 2);
  const memory = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytes, { id: `mem${i}` }));
  const gated = memory.map((d) => new GatedDevice(d));
  const wrapper = testWrapper();
  const owlPath = join(dir, 'v.owl');
  const idBytes = Buffer.from(volumeId.replace(/-/g, ''), 'hex');
  const volume = await Volume.create({
    id: volumeId,
    name: 'owl',
    m: 2,
    n: 3,
    sizeBytes: owlVolumeBytes,
    blockBytes: owlVolumeBlockBytes,
    locations: gated.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    owl: await Owl.create(owlPath, idBytes, 4 << 20, owlOptions),
  });
  const reopen = async (): Promise<Volume> =>
    Volume.open({ locations: memory.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: volumeId, owl: await Owl.open(owlPath, idBytes, owlOptions) });
  return { volume, gated, reopen, dir };
}
