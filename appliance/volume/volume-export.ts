/**
 * A volume served as an NBD export. The volume does byte-granular I/O (read-modify-write at the
 * edges), so the minimum block size is 1; the preferred size is the volume's block size, where no
 * read-modify-write is needed.
 */
import type { NbdExport } from '../nbd/backend.ts';
import { requestBytesMax as nbdRequestBytesMax } from '../nbd/protocol.ts';
import type { Volume } from './volume.ts';
import { requestBytesMax as volumeRequestBytesMax } from './volume.ts';

export function volumeExport(volume: Volume, name = volume.name): NbdExport {
  return {
    name,
    description: `stripvault ${volume.m}-of-${volume.n} volume ${volume.name}`,
    sizeBytes: volume.sizeBytes,
    blockSizeMin: 1,
    blockSizePreferred: volume.blockBytes,
    blockSizeMax: Math.min(nbdRequestBytesMax, volumeRequestBytesMax),
    readOnly: false,
    // One Volume object serves every connection and flush reaches every strip device, so what one
    // connection flushed is visible and durable for all: multi-conn is safe.
    multiConn: true,
    read: (offset, length) => volume.read(offset, length),
    async write(offset, data, { fua }) {
      await volume.write(offset, data);
      if (fua) await volume.flush();
    },
    flush: () => volume.flush(),
    async trim(offset, length, { fua }) {
      await volume.trim(offset, length);
      if (fua) await volume.flush();
    },
    async writeZeroes(offset, length, { fua }) {
      await volume.writeZeroes(offset, length);
      if (fua) await volume.flush();
    },
    // Reads are served from the strips every time; there is nothing to warm yet.
    cache: async () => undefined,
  };
}
