/**
 * Review of WRITE payloads received into reusable shared buffers (transmission.ts, 64 KiB and
 * more): a payload stays the export's until its write settles — even when the client goes away
 * mid-request — and every pooled payload is given back exactly once, whatever the request's fate
 * (a second give would hand one buffer to two writes: see test/volume/shared-buffers-review.test.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import test from 'ava';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { Command, CommandFlag, NbdErrno } from '../../appliance/nbd/protocol.ts';
import { MiB, RawPeer, eventually, memory, serve, wrapExport } from './helpers.ts';
import { spyOnSharedBuffers } from '../helpers/shared-buffers-spy.ts';

const KiB = 1024;
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test.serial('a pooled payload stays the export\'s until its write settles, though its client disconnected and others keep writing', async (t) => {
  const spy = spyOnSharedBuffers(t);
  const disk = memory('disk', 16 * MiB);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const seen: { atEntry: string; atExit?: string }[] = [];
  const slow = wrapExport(disk, {
    async write(offset, data, opts) {
      // Only the first write waits: it holds its payload across the others' whole lives.
      if (seen.length === 0) {
        const s: { atEntry: string; atExit?: string } = { atEntry: sha256(data) };
        seen.push(s);
        await gate;
        s.atExit = sha256(data);
      }
      return disk.write(offset, data, opts);
    },
  });
  const { address } = await serve(t, [slow]);
  const first = randomBytes(256 * KiB);
  const gone = await RawPeer.transmission(address, 'disk');
  gone.request({ type: Command.Write, cookie: 1n, offset: 0, length: first.length }, first);
  await eventually(() => seen.length === 1, 'the first write reached the export');
  gone.destroy();
  // Same size class, other bytes: received into the first payload's memory if it were given back early.
  const other = await RawPeer.transmission(address, 'disk');
  for (let k = 0; k < 8; k++) {
    other.request({ type: Command.Write, cookie: BigInt(k + 2), offset: (k + 1) * MiB, length: 256 * KiB }, randomBytes(256 * KiB));
    const r = await other.reply();
    t.like(r, { kind: 'simple', error: 0 });
  }
  t.false(spy.given.includes(spy.taken[0]!), 'the payload was given back while its write was still running');
  release();
  await eventually(() => seen[0]!.atExit !== undefined, 'the first write finished');
  t.is(seen[0]!.atExit, seen[0]!.atEntry, 'the payload changed under the export');
  t.is(sha256(await disk.read(0, first.length)), sha256(first));
  await eventually(() => spy.given.includes(spy.taken[0]!), 'the payload given back once its write settled');
  other.destroy();
});

test.serial('every pooled payload is given back exactly once: written, refused, failed, and answered to a vanished client', async (t) => {
  const spy = spyOnSharedBuffers(t);
  const plain = memory('disk', 4 * MiB);
  // While `held` is set, writes wait for it: a client can then leave before its answer.
  let held: Promise<void> | null = null;
  let entered = 0;
  const disk = wrapExport(plain, {
    async write(offset, data, opts) {
      entered++;
      if (held !== null) await held;
      return plain.write(offset, data, opts);
    },
  });
  const ro = memory('ro', 4 * MiB, { readOnly: true });
  const failing = wrapExport(memory('failing', 4 * MiB), {
    write: async () => {
      throw new StripvaultError(ErrorCode.DeviceIo, 'injected write failure', { errno: 'EIO' });
    },
  });
  const { address } = await serve(t, [disk, ro, failing]);
  const size = 128 * KiB;
  const cases: Array<{ name: string; offset: number; flags?: number; error: number }> = [
    { name: 'disk', offset: 0, error: 0 },
    { name: 'disk', offset: 1 * MiB, flags: CommandFlag.Fua, error: 0 },
    // Past the end: refused by validation after the payload was taken in.
    { name: 'disk', offset: 4 * MiB - 4 * KiB, error: NbdErrno.ENOSPC },
    { name: 'ro', offset: 0, error: NbdErrno.EPERM },
    { name: 'failing', offset: 0, error: NbdErrno.EIO },
  ];
  for (const c of cases) {
    const p = await RawPeer.transmission(address, c.name);
    p.request({ type: Command.Write, flags: c.flags ?? 0, cookie: 7n, offset: c.offset, length: size }, randomBytes(size));
    const r = await p.reply();
    t.like(r, { kind: 'simple', cookie: 7n }, `${c.name} at ${c.offset}`);
    t.true(r.kind === 'simple' && (c.error === 0 ? r.error === 0 : r.error !== 0), `${c.name} at ${c.offset}: error ${r.kind === 'simple' ? r.error : '?'}`);
    p.destroy();
  }
  // A client gone before its answer: the payload still comes back.
  let release!: () => void;
  held = new Promise<void>((r) => (release = r));
  const before = entered;
  const gone = await RawPeer.transmission(address, 'disk');
  gone.request({ type: Command.Write, cookie: 9n, offset: 2 * MiB, length: size }, randomBytes(size));
  await eventually(() => entered > before, 'the last write reached the export');
  gone.destroy();
  await gone.ended;
  release();
  await eventually(() => spy.given.length === spy.taken.length && spy.taken.length === cases.length + 1, 'every payload given back');
  const counts = new Map<SharedArrayBuffer, number>();
  for (const b of spy.given) counts.set(b, (counts.get(b) ?? 0) + 1);
  t.is(spy.given.length, spy.taken.length, 'one give per take');
  // The same memory may come back more than once only if it was taken again in between.
  const takes = new Map<SharedArrayBuffer, number>();
  for (const b of spy.taken) takes.set(b, (takes.get(b) ?? 0) + 1);
  for (const [b, n] of counts) t.is(n, takes.get(b) ?? 0, 'a buffer given back more often than it was taken');
});
