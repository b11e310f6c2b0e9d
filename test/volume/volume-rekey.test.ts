import { randomBytes } from 'node:crypto';
import test from 'ava';
import { KeySlotState } from '../../appliance/strip/header.ts';
import type { Volume } from '../../appliance/volume/volume.ts';
import { memoryVolume } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;

function sessionKeys(v: Volume): { active: string[]; all: string[]; retiring: number } {
  const active: string[] = [];
  const all: string[] = [];
  let retiring = 0;
  for (let i = 0; i < v.n; i++) {
    for (const slots of v.stripAt(i)!.header.body.sections) {
      for (const k of slots) {
        if (k.state === KeySlotState.Empty) continue;
        all.push(k.key.toString('hex'));
        if (k.state === KeySlotState.Active) active.push(k.key.toString('hex'));
        if (k.state === KeySlotState.Retiring) retiring++;
      }
    }
  }
  return { active, all, retiring };
}

test('re-keying re-seals every written block under fresh session keys and erases the old ones, while writes go on', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 2 * MiB });
  const data = Buffer.alloc(2 * MiB);
  // Half the blocks written: the others stay unwritten and are not touched by the pass.
  for (let b = 0; b < 512; b += 2) {
    const block = randomBytes(4096);
    block.copy(data, b * 4096);
    await f.volume.write(b * 4096, block);
  }
  const before = sessionKeys(f.volume);
  const progress: number[] = [];
  const writes = (async () => {
    for (let i = 0; i < 40; i++) {
      const at = ((i * 37) % 512) * 4096;
      const block = randomBytes(4096);
      block.copy(data, at);
      await f.volume.write(at, block);
    }
  })();
  const report = await f.volume.rekey({ onProgress: (p) => progress.push(p.blocksDone) });
  await writes;
  t.true(report.finished);
  t.true(report.blocksRepaired >= 200 && report.blocksRepaired <= 300, `re-sealed ${report.blocksRepaired} blocks (about the written half)`);
  t.deepEqual(progress, [256, 512]);
  const after = sessionKeys(f.volume);
  t.is(after.retiring, 0);
  for (const k of before.active) t.false(after.all.includes(k), 'an old session key is gone from the headers');
  t.false(f.volume.rekeyInProgress());
  t.true((await f.volume.read(0, 2 * MiB)).equals(data));
  // From the strips alone (no cache), under the new keys only.
  const fresh = await f.reopen();
  t.true((await fresh.read(0, 2 * MiB)).equals(data));
  const scrub = await fresh.scrub();
  t.is(scrub.blocksRepaired, 0);
  t.is(sessionKeys(fresh).retiring, 0);
});

test('an interrupted re-key is resumed after a reopen; blocks already re-sealed are skipped', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 2 * MiB });
  const data = randomBytes(2 * MiB);
  await f.volume.write(0, data);
  const stop = new AbortController();
  const first = await f.volume.rekey({ signal: stop.signal, onProgress: () => stop.abort() });
  t.false(first.finished);
  t.is(first.nextBlock, 256);
  t.true(f.volume.rekeyInProgress());
  await f.volume.close();

  const again = await f.reopen();
  t.true(again.rekeyInProgress(), 'the retiring keys are in the headers: the rotation is still under way');
  // Blocks under the retiring key still read (it keeps opening what it sealed).
  t.true((await again.read(0, 2 * MiB)).equals(data));
  const second = await again.rekey();
  t.true(second.finished);
  t.is(second.blocksRepaired, 256, 'only the half not yet re-sealed');
  t.false(again.rekeyInProgress());
  t.true((await again.read(0, 2 * MiB)).equals(data));
  await again.close();
  const third = await f.reopen();
  t.true((await third.read(0, 2 * MiB)).equals(data));
});

test('a stale strip shows as rebuilding while a pass catches it up', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 2 * MiB });
  const v = await f.reopen([f.devices[0]!, f.devices[1]!, null]);
  await v.write(0, randomBytes(MiB));
  await v.close();
  const back = await f.reopen();
  t.is(back.health().strips[2]!.state, 'stale');
  const states: string[] = [];
  await back.scrub({ onProgress: () => states.push(`${back.health().state}/${back.health().strips[2]!.state}`) });
  t.true(states.includes('rebuilding/rebuilding'), states.join(' '));
  t.is(back.health().state, 'healthy');
});
