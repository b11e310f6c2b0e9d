/**
 * An access policy in front of an export registry: the policy names the exports a peer may see
 * and open (for a certificate client, the virtual disks of its COIs), and everything else is
 * answered as if it did not exist. The policy is asked before the inner registry, so a forbidden
 * name never reaches it: its errors (sealed, volume unavailable) cannot reveal that the name exists.
 */
import type { ExportRegistry, NbdExport } from './backend.ts';
import type { NbdPeer } from './peer.ts';

/** Export names the peer may see and open, or 'all'. May throw (SV_SEALED, directory down): the peer then sees nothing. */
export type ExportPolicy = (peer: NbdPeer) => Iterable<string> | 'all' | Promise<Iterable<string> | 'all'>;

export function accessControlledRegistry(inner: ExportRegistry, policy: ExportPolicy): ExportRegistry {
  const allowed = async (peer: NbdPeer): Promise<ReadonlySet<string> | 'all'> => {
    const names = await policy(peer);
    return names === 'all' ? 'all' : new Set(names);
  };
  const may = (names: ReadonlySet<string> | 'all', name: string): boolean => names === 'all' || names.has(name);
  return {
    list: async (peer) => {
      const names = await allowed(peer);
      if (names !== 'all' && names.size === 0) return [];
      return (await inner.list(peer)).filter((e) => may(names, e.name));
    },
    get: async (name, peer): Promise<NbdExport | undefined> => {
      const names = await allowed(peer);
      // '' is the default export: which one that is, only the inner registry knows; checked below by its real name
      if (name !== '' && !may(names, name)) return undefined;
      const e = await inner.get(name, peer);
      return e !== undefined && may(names, e.name) ? e : undefined;
    },
  };
}
