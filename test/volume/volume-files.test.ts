/**
 * The acceptance scenario of the volumes issue: 64 MiB of random data through a 2-of-3 volume on
 * strip files; corrupt one strip's data area, lose one strip file, lose two — and a scan of every
 * byte stripvault wrote for plaintext or key material.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openFileDevice } from '../../appliance/device/file-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { dataOffset } from '../../appliance/strip/layout.ts';
import { Volume, stripBytesForVolume } from '../../appliance/volume/volume.ts';
import { fileDevices, testWrapper, withTempDir } from '../helpers/volumes.ts';

const MiB = 1024 * 1024;
const volumeBytes = 64 * MiB;
const chunkBytes = 4 * MiB;

async function openFiles(dir: string) {
  const locs = [];
  for (let i = 0; i < 3; i++) {
    try {
      locs.push({ device: await openFileDevice(join(dir, `strip${i}.img`)), base: 0 });
    } catch {
      locs.push(null);
    }
  }
  return locs;
}

async function digestOf(v: Volume): Promise<string> {
  const h = createHash('sha256');
  for (let o = 0; o < volumeBytes; o += chunkBytes) h.update(await v.read(o, chunkBytes));
  return h.digest('hex');
}

async function closeAll(v: Volume): Promise<void> {
  await v.close();
  for (let i = 0; i < v.n; i++) await v.stripAt(i)?.device.close();
}

test('64 MiB through 2-of-3 on files: corrupt a strip, lose a strip, lose two', async (t) => {
  await withTempDir(async (dir) => {
    const wrapper = testWrapper();
    const devices = await fileDevices(dir, 3, stripBytesForVolume(volumeBytes, 4096, 2));
    const created = await Volume.create({
      name: 'accept',
      m: 2,
      n: 3,
      sizeBytes: volumeBytes,
      blockBytes: 4096,
      locations: devices.map((device) => ({ device, base: 0 })),
      wrappers: [wrapper],
      regionsZeroed: true,
    });
    const data = randomBytes(volumeBytes);
    for (let o = 0; o < volumeBytes; o += chunkBytes) await created.write(o, data.subarray(o, o + chunkBytes));
    await closeAll(created);
    const digest = createHash('sha256').update(data).digest('hex');

    // 1. Corrupt random bytes of strip 0's data area: identical read-back, every bad share reported.
    const path0 = join(dir, 'strip0.img');
    const file0 = await readFile(path0);
    const slotBytes = created.slotBytes;
    const corrupted = new Set<number>();
    for (let k = 0; k < 300; k++) {
      const off = dataOffset + Math.floor(Math.random() * (volumeBytes / 4096) * slotBytes);
      file0[off]! ^= 1 << Math.floor(Math.random() * 8);
      corrupted.add(Math.floor((off - dataOffset) / slotBytes));
    }
    await writeFile(path0, file0);
    let v = await Volume.open({ locations: await openFiles(dir), wrappers: [wrapper] });
    t.is(await digestOf(v), digest);
    // Reads use the fastest M strips, so they report the bad shares they happened to meet ...
    const reported = v.health().repair;
    t.true(reported.every((r) => r.stripIndex === 0 && corrupted.has(r.address)));
    // ... and a scrub meets them all: exactly the corrupted blocks are repaired.
    const scrub = await v.scrub();
    t.is(scrub.blocksRepaired, corrupted.size);
    t.is(scrub.blocksLost, 0);
    t.is((await v.scrub()).blocksRepaired, 0);
    t.is(await digestOf(v), digest);
    await closeAll(v);

    // 2. Remove one strip file (the corrupted one): identical read-back from the other two.
    await rm(path0);
    v = await Volume.open({ locations: await openFiles(dir), wrappers: [wrapper] });
    t.is(v.health().strips[0]!.state, 'missing');
    t.is(await digestOf(v), digest);
    await closeAll(v);

    // 3. Remove a second strip file: a typed error, no bytes.
    await rm(join(dir, 'strip1.img'));
    const locs = await openFiles(dir);
    await t.throwsAsync(Volume.open({ locations: locs, wrappers: [wrapper] }), { code: ErrorCode.VolumeUnavailable } as never);
    for (const l of locs) await l?.device.close();
  });
});

test('no plaintext and no unwrapped key in any byte stripvault wrote', async (t) => {
  await withTempDir(async (dir) => {
    const wrapper = testWrapper();
    const sizeBytes = 8 * MiB;
    const devices = await fileDevices(dir, 5, stripBytesForVolume(sizeBytes, 4096, 3));
    const volume = await Volume.create({
      name: 'scan',
      m: 3,
      n: 5,
      sizeBytes,
      blockBytes: 4096,
      locations: devices.map((device) => ({ device, base: 0 })),
      wrappers: [wrapper],
    });
    const canary = Buffer.from('STRIPVAULT-PLAINTEXT-CANARY!');
    const pattern = Buffer.alloc(sizeBytes);
    for (let o = 0; o < sizeBytes; o += canary.length) canary.copy(pattern, o);
    await volume.write(0, pattern);
    // Partial-block writes and zeroes too: every write path.
    await volume.write(12_345, canary);
    await volume.writeZeroes(40_000, 9000);
    await volume.flush();
    // The secrets stripvault holds in memory for these strips.
    // Copies: close() wipes the volume's own key buffers.
    const secrets: Buffer[] = [Buffer.from(wrapper.key)];
    for (let i = 0; i < 5; i++) {
      const h = volume.stripAt(i)!.header;
      secrets.push(Buffer.from(h.headerKey));
      for (const section of h.body.sections) for (const slot of section) if (slot.state !== 0) secrets.push(Buffer.from(slot.key));
    }
    t.is(secrets.length, 1 + 5 * 2);
    await closeAll(volume);
    // ... and after close no key is left in the volume's memory either.
    t.true(volume.stripAt(0)!.header.headerKey.every((b) => b === 0));
    t.true(volume.stripAt(0)!.header.body.sections[0]![0]!.key.every((b) => b === 0));
    const needles = [canary.subarray(0, 12), canary.subarray(14, 26), ...secrets.flatMap((s) => [s.subarray(0, 12), s.subarray(20, 32)])];
    let scanned = 0;
    for (const name of await readdir(dir)) {
      const bytes = await readFile(join(dir, name));
      scanned += bytes.length;
      for (const needle of needles) t.is(bytes.indexOf(needle), -1, `${name} contains a secret or plaintext`);
    }
    t.true(scanned > 5 * (sizeBytes / 3));
  });
});
