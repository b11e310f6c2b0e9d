import { randomBytes } from 'node:crypto';
import net from 'node:net';
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { ErrorCode, StripvaultError, isStripvaultError } from '../../appliance/errors.ts';
import type { NbdExport } from '../../appliance/nbd/backend.ts';
import { connectNbd, listNbdExports } from '../../appliance/nbd/client.ts';
import type { NbdClient } from '../../appliance/nbd/client.ts';
import type { MemoryExport } from '../../appliance/nbd/memory-export.ts';
import { NbdErrno, StateFlag, TransmissionFlag, inflightPerConnectionMax } from '../../appliance/nbd/protocol.ts';
import { MiB, eventually, memory, sameBytes, serve, wrapExport } from './helpers.ts';

async function open(t: ExecutionContext, ...args: Parameters<typeof connectNbd>): Promise<NbdClient> {
  const c = await connectNbd(...args);
  t.teardown(() => c.destroy());
  return c;
}

function nbdErrno(e: unknown): unknown {
  return isStripvaultError(e, ErrorCode.NbdRequestFailed) ? e.detail?.['nbdErrno'] : `not a request failure: ${String(e)}`;
}

/** A gate the test opens: backend calls wait on it, so concurrency and ordering become observable. */
class Gate {
  #open = false;
  #waiters: Array<() => void> = [];
  wait(): Promise<void> {
    return this.#open ? Promise.resolve() : new Promise((r) => this.#waiters.push(r));
  }
  open(): void {
    this.#open = true;
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** Wraps an export so reads wait for a gate, and counts how many run at once. */
function gated(e: MemoryExport, gate: (offset: number) => Gate | undefined): NbdExport & { running: number; runningMax: number } {
  const counters = { running: 0, runningMax: 0 };
  const wrapper = wrapExport(e, {
    read: async (offset: number, length: number) => {
      counters.running++;
      counters.runningMax = Math.max(counters.runningMax, counters.running);
      try {
        await gate(offset)?.wait();
        return await e.read(offset, length);
      } finally {
        counters.running--;
      }
    },
  });
  // getters, not copies: the test watches the counters move
  return Object.defineProperties(wrapper, {
    running: { get: () => counters.running },
    runningMax: { get: () => counters.runningMax },
  }) as NbdExport & { running: number; runningMax: number };
}

for (const transport of ['tcp', 'unix'] as const) {
  test(`${transport}: every command end to end, structured replies`, async (t) => {
    const disk = memory('disk', 8 * MiB, { description: 'a test disk' });
    const { address } = await serve(t, [disk], { unix: transport === 'unix' });
    const c = await open(t, address, 'disk');
    t.like(c.info, {
      name: 'disk',
      description: 'a test disk',
      sizeBytes: 8 * MiB,
      blockSizeMin: 1,
      blockSizePreferred: 4096,
      blockSizeMax: 32 * MiB,
      readOnly: false,
      canFlush: true,
      canFua: true,
      canTrim: true,
      canWriteZeroes: true,
      canFastZero: true,
      canCache: true,
      canDf: true,
      canMultiConn: true,
      structuredReplies: true,
    });
    t.not(c.info.metaContextId, undefined);

    const data = randomBytes(100_000);
    await c.write(12_345, data, { fua: true });
    sameBytes(t, await c.read(12_345, data.length), data);
    sameBytes(t, await c.read(12_345, 4096, { df: true }), data.subarray(0, 4096));
    t.is(disk.calls.fua, 1);
    await c.flush();
    t.is(disk.calls.flush, 1);

    // an all-zero read comes back as a hole chunk and must still read as zeroes
    t.true((await c.read(4 * MiB, 65536)).every((b) => b === 0));

    await c.writeZeroes(12_345, 1000);
    t.true((await c.read(12_345, 1000)).every((b) => b === 0));
    sameBytes(t, await c.read(13_345, 1000), data.subarray(1000, 2000));
    await c.writeZeroes(0, 4096, { noHole: true });

    await c.trim(1 * MiB, 1 * MiB);
    await c.cache(0, 8 * MiB);
    t.is(disk.calls.cache, 1);

    const extents = await c.blockStatus(0, 8 * MiB);
    t.true(extents.length >= 2);
    t.is(extents[0]?.flags, StateFlag.Zero); // the NO_HOLE zeroes: allocated, reads zero
    t.is(extents.reduce((n, x) => n + x.length, 0), 8 * MiB);
    const tail = extents[extents.length - 1];
    t.is(tail?.flags, StateFlag.Hole | StateFlag.Zero);
    // chunks 1 and 2 were never written: one hole extent, and REQ_ONE never reports past the request
    t.deepEqual(await c.blockStatus(4096, 8 * MiB - 4096, { reqOne: true }), [{ length: 8192, flags: StateFlag.Hole | StateFlag.Zero }]);
    t.deepEqual(await c.blockStatus(4096, 100, { reqOne: true }), [{ length: 100, flags: StateFlag.Hole | StateFlag.Zero }]);

    const fast = await t.throwsAsync(c.writeZeroes(0, 4096, { fastZero: true }));
    t.is(nbdErrno(fast), NbdErrno.ENOTSUP);
    await c.close();
  });
}

test('simple replies only (no structured reply negotiation): reads and errors still work', async (t) => {
  const disk = memory('disk', 1 * MiB);
  const { address } = await serve(t, [disk]);
  const c = await open(t, address, 'disk', { structuredReplies: false });
  t.false(c.info.structuredReplies);
  t.false(c.info.canDf);
  t.is(c.info.metaContextId, undefined);
  t.is(c.info.transmissionFlags & TransmissionFlag.SendDf, 0);
  await c.write(0, Buffer.alloc(4096, 7));
  t.deepEqual(await c.read(0, 4096), Buffer.alloc(4096, 7));
  t.is((await c.read(0, 0)).length, 0);
  await t.throwsAsync(c.blockStatus(0, 4096), { message: /base:allocation/ });
  await c.close();
});

test('pipelining: many concurrent requests on one connection, all correct', async (t) => {
  const disk = memory('disk', 16 * MiB);
  const { address } = await serve(t, [disk]);
  const c = await open(t, address, 'disk');
  const blocks = Array.from({ length: 256 }, (_, i) => ({ offset: i * 65536 + (i % 7) * 512, data: randomBytes(4096 + i * 16) }));
  await Promise.all(blocks.map((b) => c.write(b.offset, b.data)));
  const back = await Promise.all(blocks.map((b) => c.read(b.offset, b.data.length)));
  for (const [i, b] of blocks.entries()) sameBytes(t, back[i] ?? Buffer.alloc(0), b.data, `block ${i}`);
  await c.close();
});

test('replies come back out of order, matched by cookie', async (t) => {
  const disk = memory('disk', 1 * MiB);
  await disk.write(0, Buffer.alloc(4096, 1), { fua: false });
  await disk.write(4096, Buffer.alloc(4096, 2), { fua: false });
  const first = new Gate();
  const slow = gated(disk, (offset) => (offset === 0 ? first : undefined));
  const { address } = await serve(t, [slow]);
  const c = await open(t, address, 'disk');
  const order: number[] = [];
  const a = c.read(0, 4096).then((b) => (order.push(0), b));
  const b = c.read(4096, 4096).then((x) => (order.push(1), x));
  t.deepEqual(await b, Buffer.alloc(4096, 2));
  first.open();
  t.deepEqual(await a, Buffer.alloc(4096, 1));
  t.deepEqual(order, [1, 0]);
  await c.close();
});

test('the server runs at most inflightPerConnectionMax requests per connection, then stops reading', async (t) => {
  const disk = memory('disk', 1 * MiB);
  const gate = new Gate();
  const slow = gated(disk, () => gate);
  const { address } = await serve(t, [slow]);
  const n = inflightPerConnectionMax * 3;
  const c = await open(t, address, 'disk', { inflightMax: n });
  const reads = Array.from({ length: n }, (_, i) => c.read((i % 256) * 4096, 4096));
  await eventually(() => slow.running === inflightPerConnectionMax, 'backend saturated');
  t.is(c.inflight, n);
  gate.open();
  const results = await Promise.all(reads);
  t.is(results.length, n);
  t.is(slow.runningMax, inflightPerConnectionMax);
  await c.close();
});

test('backend errors reach the client through the one error mapping', async (t) => {
  const disk = memory('disk', 1 * MiB);
  const failing = wrapExport(disk, {
    read: async (offset) => {
      if (offset === 0) throw new StripvaultError(ErrorCode.NotEnoughShares, 'only 1 of 2 shares');
      if (offset === 4096) throw new StripvaultError(ErrorCode.VolumeClosed, 'failing over');
      throw new Error('unexpected bug');
    },
    write: async () => {
      throw new StripvaultError(ErrorCode.OutOfRange, 'beyond the volume');
    },
  });
  const { address, events } = await serve(t, [failing]);
  for (const structuredReplies of [true, false]) {
    const c = await open(t, address, 'disk', { structuredReplies });
    t.is(nbdErrno(await t.throwsAsync(c.read(0, 512))), NbdErrno.EIO);
    t.is(nbdErrno(await t.throwsAsync(c.read(4096, 512))), NbdErrno.ESHUTDOWN);
    t.is(nbdErrno(await t.throwsAsync(c.read(8192, 512))), NbdErrno.EIO);
    t.is(nbdErrno(await t.throwsAsync(c.write(0, Buffer.alloc(512)))), NbdErrno.EINVAL);
    // the connection survives request errors
    await c.flush();
    await c.close();
  }
  const structured = await open(t, address, 'disk');
  const e = await t.throwsAsync(structured.read(0, 512));
  t.regex(e?.message ?? '', /SV_NOT_ENOUGH_SHARES/);
  const bug = await t.throwsAsync(structured.read(8192, 512));
  t.notRegex(bug?.message ?? '', /unexpected bug/);
  t.true(events.some((x) => x.event === 'request-failed'));
});

test('read-only export: flags say so and our client refuses writes before sending', async (t) => {
  const disk = memory('ro', 1 * MiB, { readOnly: true, multiConn: false });
  const { address } = await serve(t, [disk]);
  const c = await open(t, address, 'ro');
  t.true(c.info.readOnly);
  t.false(c.info.canTrim);
  t.false(c.info.canWriteZeroes);
  t.false(c.info.canMultiConn);
  await t.throwsAsync(c.write(0, Buffer.alloc(512)), { message: /read-only/ });
  t.is((await c.read(0, 512)).length, 512);
  await c.close();
});

test('export lookup: unknown names are refused, the empty name opens the default export, LIST names all', async (t) => {
  const a = memory('alpha', 1 * MiB, { description: 'first' });
  const b = memory('beta', 2 * MiB);
  const { address } = await serve(t, [a, b], { defaultName: 'beta' });
  const err = await t.throwsAsync(connectNbd(address, 'gamma'));
  t.true(isStripvaultError(err, ErrorCode.NbdRefused));
  t.regex(err?.message ?? '', /NBD_REP_ERR_UNKNOWN/);
  const d = await open(t, address, '');
  t.is(d.info.name, 'beta');
  t.is(d.info.sizeBytes, 2 * MiB);
  await d.close();
  t.deepEqual(await listNbdExports(address), [
    { name: 'alpha', description: 'first' },
    { name: 'beta', description: '' },
  ]);
});

test('client-side validation stops bad requests before they are sent', async (t) => {
  const disk = memory('disk', 1 * MiB, { blockSizeMin: 512 });
  const { address } = await serve(t, [disk]);
  const c = await open(t, address, 'disk');
  t.is(c.info.blockSizeMin, 512);
  await t.throwsAsync(c.read(1 * MiB - 512, 1024), { message: /beyond export size/ });
  await t.throwsAsync(c.read(100, 512), { message: /aligned/ });
  await t.throwsAsync(c.read(0, 64 * MiB), { message: /beyond|maximum/ });
  await t.throwsAsync(c.read(-1, 1));
  t.is(disk.calls.read, 0);
  await c.close();
});

test('graceful close: in-flight requests finish, then connections close and new ones are refused', async (t) => {
  const disk = memory('disk', 1 * MiB);
  await disk.write(0, Buffer.alloc(4096, 9), { fua: false });
  const gate = new Gate();
  const slow = gated(disk, () => gate);
  const { server, address } = await serve(t, [slow]);
  const c = await open(t, address, 'disk');
  const pending = c.read(0, 4096);
  await eventually(() => slow.running === 1, 'read reached the backend');
  const closing = server.close();
  gate.open();
  t.deepEqual(await pending, Buffer.alloc(4096, 9));
  await closing;
  t.is(server.connections(), 0);
  await t.throwsAsync(c.read(0, 512));
  await t.throwsAsync(
    new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: 'port' in address ? address.port : 0 });
      s.once('connect', () => (s.destroy(), resolve(undefined)));
      s.once('error', reject);
    }),
  );
});

test('several connections to one export see each other\'s flushed writes (multi-conn)', async (t) => {
  const disk = memory('disk', 4 * MiB);
  const { address, server } = await serve(t, [disk]);
  const clients = await Promise.all([0, 1, 2, 3].map(() => open(t, address, 'disk')));
  t.is(server.connections(), 4);
  await Promise.all(clients.map((c, i) => c.write(i * MiB, Buffer.alloc(MiB, i + 1), { fua: true })));
  for (const [i, c] of clients.entries()) t.deepEqual(await c.read(((i + 1) % 4) * MiB, 16), Buffer.alloc(16, ((i + 1) % 4) + 1));
  await Promise.all(clients.map((c) => c.close()));
  await eventually(() => server.connections() === 0, 'connections closed');
});
