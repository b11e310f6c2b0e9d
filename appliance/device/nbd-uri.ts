/**
 * NBD URIs (the NBD project's doc/uri.md, as libnbd and qemu read them) for remote storage
 * devices: `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`. The TLS forms parse
 * to a clear refusal until the device speaks TLS.
 */
import { ErrorCode, fail } from '../errors.ts';
import type { NbdAddress } from '../nbd/server.ts';

/** IANA port for NBD, used when the URI names none. */
export const nbdPortDefault = 10809;

export interface NbdTarget {
  readonly address: NbdAddress;
  /** Percent-decoded; '' is the server's default export. */
  readonly exportName: string;
}

const schemePattern = /^([a-z][a-z0-9+.-]*):/i;

/**
 * Whether `path` is meant as an NBD URI: any nbd scheme, including ones we refuse, so that
 * `nbds://…` gets "TLS not supported" rather than "no such file".
 */
export function isNbdUri(path: string): boolean {
  const scheme = schemePattern.exec(path)?.[1]?.toLowerCase();
  return scheme !== undefined && (scheme === 'nbd' || scheme === 'nbds' || scheme.startsWith('nbd+') || scheme.startsWith('nbds+'));
}

export function parseNbdUri(uri: string): NbdTarget {
  const scheme = schemePattern.exec(uri)?.[1]?.toLowerCase();
  if (scheme === 'nbds' || scheme === 'nbds+unix') {
    fail(ErrorCode.DeviceUnsupported, `${uri}: NBD over TLS (${scheme}://) is not supported yet; use nbd:// on a trusted network`, {
      uri,
      scheme,
    });
  }
  if (scheme !== 'nbd' && scheme !== 'nbd+unix') {
    fail(ErrorCode.DeviceUnsupported, `${uri}: unsupported URI scheme (expected nbd:// or nbd+unix://)`, { uri, scheme });
  }
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    invalid(uri, 'not a valid URI');
  }
  if (url.username !== '' || url.password !== '') invalid(uri, 'user names and passwords are not supported');
  if (url.hash !== '') invalid(uri, 'fragments are not supported');
  const exportName = decode(uri, url.pathname === '' ? '' : url.pathname.slice(1));
  const query = parseQuery(uri, url.search);

  if (scheme === 'nbd+unix') {
    if (url.host !== '') invalid(uri, 'nbd+unix:// takes no host (nbd+unix:///EXPORT?socket=PATH)');
    const socket = query.get('socket');
    query.delete('socket');
    if (socket === undefined || socket === '') invalid(uri, 'nbd+unix:// needs ?socket=PATH');
    // The store is shared by a cluster: a relative socket path would mean something else on each appliance.
    if (!socket.startsWith('/')) invalid(uri, 'the socket path must be absolute');
    refuseRest(uri, query);
    return { address: { path: socket }, exportName };
  }

  refuseRest(uri, query);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : decode(uri, url.hostname);
  if (host === '') invalid(uri, 'nbd:// needs a host (nbd://HOST[:PORT]/EXPORT)');
  const port = url.port === '' ? nbdPortDefault : Number(url.port);
  if (port === 0) invalid(uri, 'port 0 is not a port a server listens on');
  return { address: { host, port }, exportName };
}

function parseQuery(uri: string, search: string): Map<string, string> {
  const out = new Map<string, string>();
  if (search.length <= 1) return out;
  // Not URLSearchParams: it reads '+' as a space, and socket paths may contain '+'.
  for (const part of search.slice(1).split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decode(uri, eq < 0 ? part : part.slice(0, eq));
    if (out.has(key)) invalid(uri, `query parameter ${key} given twice`);
    out.set(key, decode(uri, eq < 0 ? '' : part.slice(eq + 1)));
  }
  return out;
}

function refuseRest(uri: string, query: Map<string, string>): void {
  const [first] = query.keys();
  // tls-*, user and the like change what the connection means: dropping them silently would be worse.
  if (first !== undefined) invalid(uri, `query parameter ${first} is not supported`);
}

function decode(uri: string, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    invalid(uri, 'bad percent-encoding');
  }
}

function invalid(uri: string, why: string): never {
  fail(ErrorCode.InvalidArgument, `${uri}: ${why}`, { uri });
}
