/**
 * What NBD clients see: the virtual disks of their communities of interest. A client with a
 * certificate is the client it names; a certificate-less peer on loopback (or a Unix socket) is
 * the client `loopback` (dev-unseal.ts), which only sees what a COI grants that name; anyone else
 * sees nothing. Membership is asked on every list and open, so a change in a COI (or its LDAP
 * group) takes effect for the next connection without a restart. A disk the peer may not open
 * looks exactly like one that does not exist.
 */
import type { Appliance } from './appliance.ts';
import { ErrorCode, fail } from './errors.ts';
import type { ExportRegistry, NbdExport } from './nbd/backend.ts';
import type { NbdPeer } from './nbd/peer.ts';
import { lazyVolumeExport } from './volume/volume-export.ts';
import type { DirectoryMember } from '../keymgr/directory.ts';
import { loopbackClientName } from '../keymgr/dev-unseal.ts';
import type { VirtualDiskInfo } from '../keymgr/key-manager-api.ts';

/** What the NBD "default export" (the empty name) opens. */
export const defaultExportName = 'default';

export function memberOfPeer(peer: NbdPeer): DirectoryMember | null {
  // `loopback` names local processes without a certificate; a certificate carrying that name
  // (from anywhere) is nobody, not them.
  if (peer.clientName === loopbackClientName) return null;
  if (peer.clientName !== undefined) return { kind: 'client', name: peer.clientName };
  if (peer.loopback) return { kind: 'client', name: loopbackClientName };
  return null;
}

export function virtualDiskRegistry(appliance: Appliance): ExportRegistry {
  const exportOf = async (disk: VirtualDiskInfo): Promise<NbdExport> => {
    const record = await appliance.store.getVolume(disk.volumeId);
    return lazyVolumeExport(
      { name: disk.name, description: `stripvault ${record.m}-of-${record.n} virtual disk (COI ${disk.coi})`, sizeBytes: record.sizeBytes, blockBytes: record.blockSize },
      () => appliance.openVolume(disk.volumeId),
    );
  };
  const sealedCheck = async (): Promise<void> => {
    const status = await appliance.keys.status();
    if (!status.initialized || status.sealed) fail(ErrorCode.Sealed, 'stripvault is sealed: security officers must unseal it');
  };
  return {
    async list(peer: NbdPeer) {
      const member = memberOfPeer(peer);
      if (member === null) return [];
      await sealedCheck();
      const out: NbdExport[] = [];
      for (const d of await appliance.keys.virtualDisksFor(member)) out.push(await exportOf(d));
      return out;
    },
    async get(name: string, peer: NbdPeer) {
      const member = memberOfPeer(peer);
      if (member === null) return undefined;
      const wanted = name === '' ? defaultExportName : name;
      const disk = (await appliance.keys.virtualDisksFor(member)).find((d) => d.name === wanted);
      if (!disk) return undefined;
      await sealedCheck();
      return exportOf(disk);
    },
  };
}
