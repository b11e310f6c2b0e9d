/**
 * The crash checker itself: it accepts exactly the last flushed content or a later write, and names
 * what it found otherwise (an older write, a mix of two, unknown bytes). The workload runs against
 * an in-process memory export: without a crash every block must match, and an export that loses a
 * flushed write or tears one is caught.
 */
import test from 'ava';
import { crashPoints } from '../../appliance/crash-point.ts';
import type { NbdExport } from '../../appliance/nbd/backend.ts';
import { connectNbd } from '../../appliance/nbd/client.ts';
import { CrashModel, describeMismatches, initialVersion } from '../helpers/crash-model.ts';
import { crashBlockBytes as bb, patternBlock, readStamp, writeBytes } from '../helpers/crash-patterns.ts';
import { afterShares, beforeShares, writePathPoints } from '../helpers/crash-point-matrix.ts';
import { runWorkload, verifyBlocks } from '../helpers/crash-workload.ts';
import { memory, serve, wrapExport } from '../nbd/helpers.ts';

const initial = (b: number) => patternBlock('A', b);
const model = (seed = 7) => new CrashModel({ seed, blockBytes: bb, initial });

test('candidates are the flushed version and every later one, acknowledged or not', (t) => {
  const m = model();
  const w0 = m.beginWrite(0, writeBytes(7, 0, 0, bb));
  t.is(m.check(0, initial(0)), null, 'initial content is still allowed before a flush');
  m.ackWrite(w0);
  const f = m.beginFlush();
  const w1 = m.beginWrite(0, writeBytes(7, 1, 0, bb));
  m.ackFlush(f);
  // The flush was sent before write 1 was acknowledged: it makes write 0 durable, not write 1.
  t.is(m.candidateCount(0), 2);
  t.is(m.check(0, writeBytes(7, 0, 0, bb)), null);
  t.is(m.check(0, writeBytes(7, 1, 0, bb)), null);
  const older = m.check(0, initial(0));
  t.truthy(older);
  t.regex(older!.found, /initial content — older than the flushed write #0/);
  t.is(older!.seed, 7);
  m.ackWrite(w1);
  t.is(m.touched().length, 1);
  t.is(initialVersion, -1);
});

test('FUA makes a write the floor once answered', (t) => {
  const m = model();
  const w0 = m.beginWrite(bb, writeBytes(7, 0, bb, bb), true);
  t.is(m.check(1, initial(1)), null);
  m.ackWrite(w0);
  t.regex(m.check(1, initial(1))!.found, /older than the flushed write #0/);
});

test('when a crash keeps the page cache, an acknowledged write is the floor; an unacknowledged one is not', (t) => {
  const m = new CrashModel({ seed: 7, blockBytes: bb, initial, acknowledgedSurvives: true });
  const w0 = m.beginWrite(0, writeBytes(7, 0, 0, bb));
  t.is(m.check(0, initial(0)), null, 'not acknowledged yet: the old content may survive');
  m.ackWrite(w0);
  t.regex(m.check(0, initial(0))!.found, /older than the flushed write #0/);
  const w1 = m.beginWrite(0, writeBytes(7, 1, 0, bb));
  t.is(m.check(0, writeBytes(7, 0, 0, bb)), null);
  t.is(m.check(0, writeBytes(7, 1, 0, bb)), null);
  m.ackWrite(w1);
  t.truthy(m.check(0, writeBytes(7, 0, 0, bb)), 'write #1 acknowledged: write #0 is now too old');
});

test('a partial write builds on the newest content; torn and foreign blocks are named', (t) => {
  const m = model();
  const data = writeBytes(7, 0, bb - 100, 300);
  const w = m.beginWrite(bb - 100, data);
  t.true(m.busy(0, 0) && m.busy(1, 1) && !m.busy(2, 2));
  t.throws(() => m.beginWrite(bb - 1, Buffer.alloc(2)), { message: /overlaps a write in flight/ });
  m.ackWrite(w);
  const f = m.beginFlush();
  m.ackFlush(f);
  const expected0 = Buffer.from(initial(0));
  data.copy(expected0, bb - 100, 0, 100);
  t.is(m.check(0, expected0), null);
  t.truthy(m.check(0, initial(0)));
  // A second write, then a block made of half of each.
  const w2data = writeBytes(7, 1, 0, bb);
  const w2 = m.beginWrite(0, w2data);
  m.ackWrite(w2);
  const torn = Buffer.concat([w2data.subarray(0, bb / 2), expected0.subarray(bb / 2)]);
  t.regex(m.check(0, torn)!.found, /^mix of write #1 and write #0/);
  t.regex(m.check(0, Buffer.alloc(bb))!.found, /^unknown content \(all zeros\)/);
  t.regex(m.check(0, Buffer.alloc(10))!.found, /10 bytes instead of 4096/);
  t.deepEqual(readStamp(w2data), { seed: 7, write: 1, block: 0 });
  t.is(readStamp(data), null, 'a write with no whole block carries no stamp');
  t.regex(describeMismatches([m.check(0, torn)!]), /block 0: found mix .* \[seed 7\]/);
});

test('bad model input is refused', (t) => {
  const m = model();
  t.throws(() => m.beginWrite(0, Buffer.alloc(0)), { message: /zero bytes/ });
  const wrong = new CrashModel({ seed: 1, blockBytes: bb, initial: () => Buffer.alloc(5) });
  t.throws(() => wrong.beginWrite(0, Buffer.alloc(bb)), { message: /initial content is one block/ });
});

async function exportWithA(name: string, blocks: number): Promise<NbdExport> {
  const e = memory(name, blocks * bb);
  for (let b = 0; b < blocks; b++) await e.write(b * bb, initial(b), { fua: false });
  return e;
}

test('the workload over a correct export: every block is a candidate, read-backs agree', async (t) => {
  const seed = 1234;
  const blocks = 64;
  const s = await serve(t, [await exportWithA('m', blocks)], { unix: true });
  const client = await connectNbd(s.address, 'm');
  const m = model(seed);
  const r = await runWorkload(client, m, { seed, firstBlock: 8, blocks: 48, writesMax: 400, readShare: 0.2 });
  t.is(r.end, 'writes-max');
  t.is(r.error, undefined);
  t.is(r.writes, 400);
  t.is(r.writesAcked, 400);
  t.true(r.flushesAcked > 5);
  const v = await verifyBlocks(client, m, Array.from({ length: blocks }, (_, i) => i));
  t.is(v.blocksChecked, blocks);
  t.deepEqual(v.mismatches, []);
  await client.close();
});

test('an export that forgets flushed writes, or tears them, is caught with block and seed', async (t) => {
  const seed = 99;
  const blocks = 32;
  const inner = await exportWithA('lossy', blocks);
  let writes = 0;
  const lossy = wrapExport(inner, {
    // Every 5th write is acknowledged but never stored; every 7th stores only its first half.
    async write(offset, data, opts) {
      writes++;
      if (writes % 5 === 0) return;
      if (writes % 7 === 0 && data.length >= bb) return inner.write(offset, data.subarray(0, data.length / 2), opts);
      return inner.write(offset, data, opts);
    },
  });
  const s = await serve(t, [lossy], { unix: true });
  const client = await connectNbd(s.address, 'lossy');
  const m = model(seed);
  await runWorkload(client, m, { seed, firstBlock: 0, blocks, writesMax: 200, unalignedShare: 0, readShare: 0 });
  await client.flush();
  const v = await verifyBlocks(client, m, m.touched());
  t.true(v.mismatches.length > 0);
  t.true(v.mismatches.every((x) => x.seed === seed));
  t.true(v.mismatches.some((x) => /older than the flushed/.test(x.found)), describeMismatches(v.mismatches));
  await client.close();
});

test('every crash point the appliance names is exercised by a crash test file', (t) => {
  // A point added to appliance/crash-point.ts must join a matrix file (or the recovery tests).
  t.deepEqual([...beforeShares, ...afterShares].sort(), [...writePathPoints].sort());
  t.deepEqual([...writePathPoints, 'owl.recovery-replayed'].sort(), [...crashPoints].sort());
});
