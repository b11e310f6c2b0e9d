/**
 * Writing to and closing a connection that the peer may drop at any moment.
 * Nothing here throws or rejects: a dead peer is noticed by the reader side.
 */
import type { Duplex } from 'node:stream';

/** Sockets corked in this turn of the event loop, with how many corks each owes an uncork. */
const corked = new Map<Duplex, number>();

function uncorkAll(): void {
  for (const [socket, n] of corked) for (let i = 0; i < n; i++) socket.uncork();
  corked.clear();
}

/**
 * Writes the parts back to back (no other write can land between them); resolves once handed to
 * the OS or once the connection is gone. Replies finished in the same turn of the event loop leave
 * in one writev: the socket stays corked until setImmediate, which cut per-reply syscalls that
 * dominated small random I/O.
 */
export function send(socket: Duplex, parts: Buffer | readonly Buffer[]): Promise<void> {
  const list = Buffer.isBuffer(parts) ? [parts] : parts;
  if (socket.destroyed || !socket.writable || list.length === 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    socket.cork();
    if (corked.size === 0) setImmediate(uncorkAll);
    corked.set(socket, (corked.get(socket) ?? 0) + 1);
    for (let i = 0; i < list.length - 1; i++) socket.write(list[i] as Buffer);
    socket.write(list[list.length - 1] as Buffer, () => resolve());
  });
}

/**
 * Ends our side (flushing what is queued, and TLS close_notify), then gives the
 * peer lingerMs to close its side before destroying; a peer that never closes
 * must not pin the connection.
 */
export function endGracefully(socket: Duplex, lingerMs: number): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // keep draining so unread input never turns our close into a reset that loses the last replies
  socket.on('data', () => {});
  socket.resume();
  socket.end();
}
