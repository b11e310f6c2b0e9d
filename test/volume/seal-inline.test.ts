/**
 * Where a group of journal records is sealed: on the calling thread while this turn of the event
 * loop has sealed at most sealInlineBlocksMax blocks here (a worker round trip would cost more than
 * the sealing), by the runner's workers beyond that. With the JavaScript engine (the addon off)
 * everything goes to the runner. Either way every write reads back, also after a reopen.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { nativeSeal } from '../../appliance/split/native-seal.ts';
import { SplitPool, type SplitRunner } from '../../appliance/split/split-pool.ts';
import { Volume, sealInlineBlocksMax, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';

const blockBytes = 4096;
const sizeBytes = 4 << 20;
const volumeId = '5b1d7c3e-2a4f-4e8b-9c6d-0f1e2a3b4c5d';

/** The pool, with the blocks of each sealRuns job it is given recorded. */
function countingRunner(inner: SplitPool, sealed: number[]): SplitRunner {
  return {
    seal: (b) => inner.seal(b),
    open: (b) => inner.open(b),
    sealRuns: (b) => {
      sealed.push(b.runs.reduce((a, r) => a + r.count, 0));
      return inner.sealRuns(b);
    },
    readOpen: (b) => inner.readOpen(b),
    writeSlots: (b) => inner.writeSlots(b),
    get parallelism() {
      return inner.parallelism;
    },
    close: () => inner.close(),
  };
}

test('up to sealInlineBlocksMax blocks per turn are sealed inline, the rest by the runner; all read back after a reopen', async (t) => {
  // Two workers: a turn's writes are cut into two groups, so one turn can use both places.
  const inner = new SplitPool(2, { ioWorkers: 0 });
  t.teardown(() => inner.close());
  const sealed: number[] = [];
  const memory = Array.from({ length: 3 }, (_, i) => new MemoryDevice(stripBytesForVolume(sizeBytes, blockBytes, 2), { id: `mem${i}` }));
  const wrapper = testWrapper();
  const volume = await Volume.create({
    id: volumeId,
    name: 'inline',
    m: 2,
    n: 3,
    sizeBytes,
    blockBytes,
    locations: memory.map((device) => ({ device, base: 0 })),
    wrappers: [wrapper],
    regionsZeroed: true,
    runner: countingRunner(inner, sealed),
  });
  const model = Buffer.alloc(sizeBytes);
  const write = async (offset: number, blocks: number): Promise<void> => {
    const data = randomBytes(blocks * blockBytes);
    data.copy(model, offset);
    await volume.write(offset, data);
  };
  const byRunner = (): number => sealed.reduce((a, n) => a + n, 0);
  const inline = nativeSeal.available;

  await write(0, 1);
  await nextTurn();
  await write(8 * blockBytes, sealInlineBlocksMax);
  t.is(byRunner(), inline ? 0 : 1 + sealInlineBlocksMax, 'writes of at most sealInlineBlocksMax blocks, a turn apart, are sealed here');
  await nextTurn();
  sealed.length = 0;
  await write(64 * blockBytes, sealInlineBlocksMax + 1);
  t.deepEqual(sealed, [sealInlineBlocksMax + 1], 'a larger write is sealed by the runner');

  // One turn of small writes, more than the turn's allowance: the excess goes to the runner.
  await nextTurn();
  sealed.length = 0;
  const many = sealInlineBlocksMax + 16;
  await Promise.all(Array.from({ length: many }, (_, i) => write((128 + 2 * i) * blockBytes, 1)));
  if (inline) {
    t.true(byRunner() >= many - sealInlineBlocksMax, `at most sealInlineBlocksMax blocks of one turn sealed here (runner: ${sealed.join('+')} of ${many})`);
    t.true(byRunner() < many, `some of the turn sealed here (runner: ${sealed.join('+')} of ${many})`);
  } else {
    t.is(byRunner(), many, 'the JavaScript engine seals nothing on this thread');
  }
  // The allowance is the turn's: the next turn seals here again.
  await nextTurn();
  sealed.length = 0;
  await write(300 * blockBytes, 4);
  t.is(byRunner(), inline ? 0 : 4, 'a new turn has its allowance back');

  t.true((await volume.read(0, sizeBytes)).equals(model), 'everything reads back');
  await volume.close();
  const again = await Volume.open({ locations: memory.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: volumeId, runner: inner });
  t.teardown(() => again.close());
  t.true((await again.read(0, sizeBytes)).equals(model), 'everything reads back from the strips after a reopen');
});
