/**
 * Where a group of journal records is sealed: a small group on the calling thread (a worker round
 * trip would cost more than the sealing), a larger one by the runner's workers. Either way every
 * write reads back, also after a reopen from the strips alone.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { SplitPool, type SplitRunner } from '../../appliance/split/split-pool.ts';
import { Volume, sealInlineBlocksMax, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';

const blockBytes = 4096;
const sizeBytes = 4 << 20;
const volumeId = '5b1d7c3e-2a4f-4e8b-9c6d-0f1e2a3b4c5d';

test('groups of up to sealInlineBlocksMax blocks are sealed inline, larger ones by the runner; all read back after a reopen', async (t) => {
  const inner = new SplitPool(1, { ioWorkers: 0 });
  t.teardown(() => inner.close());
  const sealed: number[] = [];
  // The pool's own methods, with its sealRuns counted (blocks per job).
  const runner: SplitRunner = Object.assign(Object.create(inner) as SplitPool, {
    sealRuns: (b: Parameters<SplitRunner['sealRuns']>[0]) => {
      sealed.push(b.runs.reduce((a, r) => a + r.count, 0));
      return inner.sealRuns(b);
    },
  });
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
    runner,
  });
  const model = Buffer.alloc(sizeBytes);
  const write = async (offset: number, blocks: number): Promise<void> => {
    const data = randomBytes(blocks * blockBytes);
    data.copy(model, offset);
    await volume.write(offset, data);
  };
  await write(0, 1);
  await write(8 * blockBytes, sealInlineBlocksMax);
  t.deepEqual(sealed, [], 'groups of at most sealInlineBlocksMax blocks never reach the runner');
  await write(64 * blockBytes, sealInlineBlocksMax + 1);
  t.deepEqual(sealed, [sealInlineBlocksMax + 1], 'a larger write is sealed by the runner');
  // Small writes of one turn form one group (the runner has one worker): together they are too many.
  sealed.length = 0;
  const many = sealInlineBlocksMax + 8;
  await Promise.all(Array.from({ length: many }, (_, i) => write((128 + 2 * i) * blockBytes, 1)));
  t.is(sealed.reduce((a, n) => a + n, 0), many, 'one turn of small writes is sealed by the runner');
  t.true((await volume.read(0, sizeBytes)).equals(model), 'everything reads back');
  await volume.close();
  const again = await Volume.open({ locations: memory.map((device) => ({ device, base: 0 })), wrappers: [wrapper], expectId: volumeId, runner: inner });
  t.teardown(() => again.close());
  t.true((await again.read(0, sizeBytes)).equals(model), 'everything reads back from the strips after a reopen');
});
