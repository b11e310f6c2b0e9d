/**
 * Seeded fault runs: a random workload over a volume whose first N-M strips corrupt, misdirect and
 * drop writes and corrupt reads. Zero wrong bytes may come back; every share the faults left bad
 * must be named by a full verification; one scrub must repair them all. A failing run names its
 * seed, and the same seed replays the same faults.
 */
import test from 'ava';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { FaultDevice } from '../../appliance/device/fault-device.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { openBlock } from '../../appliance/split/split.ts';
import { KeySlotState } from '../../appliance/strip/header.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';
import { decodeSlot } from '../../appliance/strip/slot.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { testWrapper } from '../helpers/volumes.ts';

const KiB = 1024;
const volumeBytes = 512 * KiB;
const blockBytes = 4096;
const blocks = volumeBytes / blockBytes;
const ops = 250;

/** Writes reach the shadow exactly as intended, then the (faulty) device: the shadow is the truth. */
class Tee implements StorageDevice {
  constructor(
    readonly shadow: MemoryDevice,
    readonly inner: StorageDevice,
  ) {}
  get id() {
    return this.inner.id;
  }
  get sizeBytes() {
    return this.inner.sizeBytes;
  }
  read(offset: number, length: number) {
    return this.inner.read(offset, length);
  }
  async write(offset: number, data: Uint8Array) {
    await this.shadow.write(offset, data);
    await this.inner.write(offset, data);
  }
  flush() {
    return this.inner.flush();
  }
  close() {
    return this.inner.close();
  }
}

async function run(seed: number, m: number, n: number): Promise<{ problems: string[]; injected: number; bad: number; repaired: number }> {
  const problems: string[] = [];
  const prng = new Prng(seed);
  const stripBytes = stripBytesForVolume(volumeBytes, blockBytes, m);
  const disks = Array.from({ length: n }, () => new MemoryDevice(stripBytes));
  const faulty = disks.map(
    (disk, i) =>
      new FaultDevice(disk, {
        seed: seed * 31 + i,
        misdirectAlignBytes: 8,
        // Only the first N-M strips misbehave: any block keeps M good shares.
        probabilities: i < n - m ? { writeCorruption: 0.03, misdirectedWrite: 0.02, lostWrite: 0.03, readCorruption: 0.03 } : {},
      }),
  );
  const shadows = disks.map(() => new MemoryDevice(stripBytes));
  const devices = faulty.map((f, i) => new Tee(shadows[i]!, f));
  const v = await Volume.create({
    name: 'faults',
    m,
    n,
    sizeBytes: volumeBytes,
    blockBytes,
    locations: devices.map((device) => ({ device, base: 0 })),
    wrappers: [testWrapper()],
    regionsZeroed: true,
  });
  // Faults only once the strips exist: formatting is not what this run is about.
  const model = Buffer.alloc(volumeBytes);
  for (let op = 0; op < ops; op++) {
    const offset = prng.nextInt(volumeBytes - 1);
    const length = 1 + prng.nextInt(Math.min(volumeBytes - offset, 3 * blockBytes) - 1);
    if (prng.chance(0.5)) {
      const data = prng.bytes(length);
      await v.write(offset, data);
      data.copy(model, offset);
    } else {
      const got = await v.read(offset, length);
      if (!got.equals(model.subarray(offset, offset + length))) problems.push(`seed ${seed}: op ${op} read [${offset}, +${length}) returned wrong bytes`);
    }
  }
  const slotBytes = v.slotBytes;
  // Ground truth: which shares differ from what was meant to be written.
  const bad = new Set<string>();
  for (let s = 0; s < n; s++) {
    const actual = await disks[s]!.read(dataOffset, blocks * slotBytes);
    const meant = await shadows[s]!.read(dataOffset, blocks * slotBytes);
    for (let a = 0; a < blocks; a++) {
      if (!actual.subarray(a * slotBytes, (a + 1) * slotBytes).equals(meant.subarray(a * slotBytes, (a + 1) * slotBytes))) bad.add(`${s}:${a}`);
    }
  }
  // A full verification names exactly those shares.
  const named = new Set<string>();
  for (let a = 0; a < blocks; a++) {
    const shares = [];
    for (let s = 0; s < n; s++) shares.push(decodeSlot(s, await disks[s]!.read(dataOffset + a * slotBytes, slotBytes)));
    const r = openBlock({
      volumeId: v.idBytes,
      m,
      n,
      blockBytes,
      address: a,
      shares,
      sessionKey: (s, slot) => {
        const k = v.stripAt(s)!.header.body.sections[0]![slot];
        return k && k.state !== KeySlotState.Empty ? k.key : undefined;
      },
      complete: true,
      verifyAll: true,
    });
    if (!r.block.equals(model.subarray(a * blockBytes, (a + 1) * blockBytes))) problems.push(`seed ${seed}: block ${a} verifies to wrong bytes`);
    for (const x of r.rejected) named.add(`${x.stripIndex}:${a}`);
  }
  for (const b of bad) if (!named.has(b)) problems.push(`seed ${seed}: bad share ${b} not detected`);
  for (const b of named) if (!bad.has(b)) problems.push(`seed ${seed}: share ${b} reported bad but is intact`);
  // One scrub repairs everything; the next finds nothing; the data is the model's.
  for (const f of faulty) f.setProbabilities({});
  const first = await v.scrub();
  const second = await v.scrub();
  if (first.blocksLost !== 0) problems.push(`seed ${seed}: scrub lost ${first.blocksLost} blocks`);
  if (second.blocksRepaired !== 0) problems.push(`seed ${seed}: a second scrub still repaired ${second.blocksRepaired} blocks`);
  if (!(await v.read(0, volumeBytes)).equals(model)) problems.push(`seed ${seed}: data differs after scrub`);
  const injected = faulty.reduce((acc, f) => acc + f.faults.length, 0);
  if (injected === 0) problems.push(`seed ${seed}: no fault was injected; the run proves nothing`);
  if (bad.size === 0) problems.push(`seed ${seed}: no share was left bad; the run proves nothing`);
  return { problems, injected, bad: bad.size, repaired: first.blocksRepaired };
}

for (const [m, n] of [[2, 3], [3, 5]] as const) {
  test(`seeded fault runs, ${m}-of-${n}: no wrong bytes, every bad share named, one scrub repairs all`, async (t) => {
    const seeds = [1, 2, 3, 4, 5, 6];
    for (const seed of seeds) {
      const r = await run(seed, m, n);
      t.deepEqual(r.problems, [], `reproduce with seed ${seed} (${m}-of-${n})`);
      t.log(`seed ${seed}: ${r.injected} faults injected, ${r.bad} shares left bad, ${r.repaired} blocks repaired`);
    }
  });
}
