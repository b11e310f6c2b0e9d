/**
 * A volume served as an NBD export. The volume does byte-granular I/O (read-modify-write at the
 * edges), so the minimum block size is 1; the preferred size is the volume's block size, where no
 * read-modify-write is needed.
 */
import type { NbdExport } from '../nbd/backend.ts';
import { requestBytesMax as nbdRequestBytesMax } from '../nbd/protocol.ts';
import type { Volume } from './volume.ts';
import { requestBytesMax as volumeRequestBytesMax } from './volume.ts';

export interface ExportShape {
  readonly name: string;
  readonly description: string;
  readonly sizeBytes: number;
  readonly blockBytes: number;
}

export function volumeExport(volume: Volume, name = volume.name): NbdExport {
  const shape = { name, description: `stripvault ${volume.m}-of-${volume.n} volume ${volume.name}`, sizeBytes: volume.sizeBytes, blockBytes: volume.blockBytes };
  const ready = Promise.resolve(volume);
  return lazyVolumeExport(shape, () => ready);
}

/**
 * An export whose volume is opened on first use (listing exports opens nothing), e.g. a virtual
 * disk: its shape comes from the store, its volume from `open` (which opens once and caches).
 */
export function lazyVolumeExport(shape: ExportShape, open: () => Promise<Volume>): NbdExport {
  return {
    name: shape.name,
    description: shape.description,
    sizeBytes: shape.sizeBytes,
    blockSizeMin: 1,
    blockSizePreferred: shape.blockBytes,
    blockSizeMax: Math.min(nbdRequestBytesMax, volumeRequestBytesMax),
    readOnly: false,
    // One Volume object serves every connection and flush reaches every strip device, so what one
    // connection flushed is visible and durable for all: multi-conn is safe.
    multiConn: true,
    read: async (offset, length) => (await open()).read(offset, length),
    async write(offset, data, { fua }) {
      const volume = await open();
      await volume.write(offset, data);
      if (fua) await volume.flush();
    },
    flush: async () => (await open()).flush(),
    async trim(offset, length, { fua }) {
      const volume = await open();
      await volume.trim(offset, length);
      if (fua) await volume.flush();
    },
    async writeZeroes(offset, length, { fua }) {
      const volume = await open();
      await volume.writeZeroes(offset, length);
      if (fua) await volume.flush();
    },
    // Recent writes are already in the volume's cache; prefetching reads is not worth a strip round trip.
    cache: async () => undefined,
  };
}
