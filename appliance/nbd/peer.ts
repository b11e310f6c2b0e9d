/**
 * Who is on the other end of an NBD connection, as far as the server can know: where the
 * connection comes from, whether it is encrypted, and the client name its certificate proved.
 * The export registry decides what a peer may see and open from this alone.
 */
import net from 'node:net';

export interface NbdPeer {
  /** The peer's IP address as the socket reports it, or 'unix' for a Unix-domain socket. */
  readonly remoteAddress: string;
  /** A loopback address or a Unix socket: the only peers that may speak plain text. */
  readonly loopback: boolean;
  /** The connection went through STARTTLS with a client certificate we accepted. */
  readonly tls: boolean;
  /** The client name from a checked certificate (TLS only). */
  readonly clientName?: string;
  /** That certificate's serial (lower-case hex), for logs and audit. */
  readonly certificateSerial?: string;
}

export type NbdTlsMode = 'off' | 'optional' | 'required';

/** Loopback by address, never by a name that merely looks like one (e.g. "127.evil.example"). */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost') return true;
  switch (net.isIP(h)) {
    case 4:
      return h.startsWith('127.');
    case 6:
      return h === '::1' || (h.startsWith('::ffff:') && net.isIPv4(h.slice(7)) && h.slice(7).startsWith('127.'));
    default:
      return false;
  }
}

/** The peer of a freshly accepted connection, before any TLS. */
export function peerOfSocket(socket: { remoteAddress?: string | undefined }): NbdPeer {
  const address = socket.remoteAddress;
  // a Unix socket has no remote address; reaching it needs a login on this machine, like loopback
  if (address === undefined) return { remoteAddress: 'unix', loopback: true, tls: false };
  return { remoteAddress: address, loopback: isLoopback(address), tls: false };
}

/**
 * The TLS mode one connection gets. Plain-text NBD only on loopback: a loopback peer gets the
 * configured mode, anyone else must upgrade first ('required'), and where no TLS is configured at
 * all a non-loopback peer is not served ('refuse'). Not configurable on purpose.
 */
export function tlsModeFor(configured: NbdTlsMode, peer: NbdPeer): NbdTlsMode | 'refuse' {
  if (peer.loopback) return configured;
  return configured === 'off' ? 'refuse' : 'required';
}
