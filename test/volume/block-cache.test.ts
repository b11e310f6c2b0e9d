import { randomBytes } from 'node:crypto';
import test from 'ava';
import { BlockCache } from '../../appliance/volume/block-cache.ts';
import { memoryVolume } from '../helpers/volumes.ts';

test('the cache keeps the most recent blocks within its byte bound and returns only whole runs', (t) => {
  const c = new BlockCache(4 * 512, 512);
  const data = randomBytes(6 * 512);
  c.putRun(10, data);
  t.is(c.stats().blocks, 4, 'the oldest two of six were evicted');
  t.is(c.getRun(10, 1), null);
  t.true(c.getRun(12, 4)!.equals(data.subarray(2 * 512)));
  // The put copied: changing the caller's buffer changes nothing cached.
  data.fill(7);
  t.false(c.getRun(12, 1)!.equals(data.subarray(2 * 512, 3 * 512)));
  c.invalidate(13, 1);
  t.is(c.getRun(12, 2), null);
  t.truthy(c.getRun(12, 1));
  c.clear();
  t.is(c.stats().blocks, 0);
  const off = new BlockCache(0, 512);
  off.putRun(0, data.subarray(0, 512));
  t.is(off.getRun(0, 1), null);
});

test('recent writes are served from memory; reads of them do not touch the strips', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 1 << 20 });
  const data = randomBytes(64 * 1024);
  await f.volume.write(8192, data);
  let reads = 0;
  for (const d of f.devices) {
    const real = d.read.bind(d);
    d.read = (offset: number, length: number) => (reads++, real(offset, length));
  }
  t.true((await f.volume.read(8192 + 100, 30_000)).equals(data.subarray(100, 30_100)));
  t.is(reads, 0);
  t.true(f.volume.cacheStats().hits >= 1);
  // Unwritten blocks still come from the strips.
  t.true((await f.volume.read(0, 4096)).equals(Buffer.alloc(4096)));
  t.true(reads > 0);
  // A partial overwrite updates the cached block (read-modify-write through the cache).
  const patch = randomBytes(10);
  await f.volume.write(8192 + 5, patch);
  const expect = Buffer.from(data.subarray(0, 4096));
  patch.copy(expect, 5);
  t.true((await f.volume.read(8192, 4096)).equals(expect));
  // Another opener (no cache yet) reads the same bytes from the strips.
  const other = await f.reopen();
  t.true((await other.read(8192, 4096)).equals(expect));
  await f.volume.close();
  t.is(f.volume.cacheStats().blocks, 0, 'close drops and wipes the cache');
});

test('a write that fails drops its blocks from the cache: what reads back is what the strips hold', async (t) => {
  const f = await memoryVolume({ m: 2, n: 3, sizeBytes: 1 << 20 });
  const a = randomBytes(4096);
  await f.volume.write(0, a);
  for (const d of f.devices.slice(0, 2)) {
    d.write = async () => {
      throw Object.assign(new Error('EIO'), { code: 'EIO' });
    };
  }
  await t.throwsAsync(f.volume.write(0, randomBytes(4096)));
  t.is(f.volume.cacheStats().blocks, 0);
});

test('the cache matches a reference LRU over random puts, gets, invalidations and clears', (t) => {
  // Reference: a plain array in LRU order (oldest first), slow but obviously right.
  let seed = 0x5eed;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const bb = 512;
  const max = 13;
  const c = new BlockCache(max * bb, bb);
  let ref: { address: number; byte: number }[] = [];
  const refPut = (address: number, byte: number) => {
    ref = ref.filter((e) => e.address !== address);
    ref.push({ address, byte });
    if (ref.length > max) ref.shift();
  };
  for (let step = 0; step < 20_000; step++) {
    const op = rnd(10);
    const first = rnd(40);
    const count = 1 + rnd(4);
    if (op < 5) {
      const data = Buffer.alloc(count * bb);
      const bytes: number[] = [];
      for (let i = 0; i < count; i++) {
        bytes.push(rnd(256));
        data.fill(bytes[i]!, i * bb, (i + 1) * bb);
      }
      c.putRun(first, data);
      bytes.forEach((b, i) => refPut(first + i, b));
    } else if (op < 8) {
      const got = c.getRun(first, count);
      const hits = Array.from({ length: count }, (_, i) => ref.find((e) => e.address === first + i));
      if (hits.some((h) => h === undefined)) t.is(got, null, `step ${step}: get ${first}+${count} should miss`);
      else {
        t.truthy(got, `step ${step}: get ${first}+${count} should hit`);
        hits.forEach((h, i) => t.is(got![i * bb], h!.byte));
        for (const h of hits) refPut(h!.address, h!.byte);
      }
    } else if (op < 9) {
      c.invalidate(first, count);
      ref = ref.filter((e) => e.address < first || e.address >= first + count);
    } else if (rnd(50) === 0) {
      c.clear();
      ref = [];
    }
    if (c.stats().blocks !== ref.length) t.fail(`step ${step}: ${c.stats().blocks} cached, reference has ${ref.length}`);
  }
});
