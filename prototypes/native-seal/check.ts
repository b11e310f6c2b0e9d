/** Cross-check: addon seal is byte-identical to batch.ts sealBatch for the same AONT keys; addon open == openBatch. */
import crypto, { randomBytes, randomInt } from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import assert from 'node:assert/strict';
import { openBatch, sealBatch, type KeyTable, type SealBatch } from '../../appliance/split/batch.ts';
import { slotBytesFor, sectionBytes } from '../../appliance/strip/layout.ts';
import { openBatchNative, sealBatchNative, nativeAvailable } from './native.ts';

assert.ok(nativeAvailable(), 'addon not built');
// Record every byte random.ts draws: its pool hands the stream out in order, 32 bytes per AONT key.
const realFill = crypto.randomFillSync;
const stream: Buffer[] = [];
let streamBytes = 0;
let cursor = 0;
(crypto as { randomFillSync: unknown }).randomFillSync = (buf: Buffer) => {
  realFill(buf);
  stream.push(Buffer.from(buf));
  streamBytes += buf.length;
  return buf;
};
syncBuiltinESMExports();
function takeKeys(count: number, zero: Uint8Array | null): Buffer {
  const all = Buffer.concat(stream);
  const out = Buffer.alloc(count * 32);
  for (let i = 0; i < count; i++) {
    if (zero && zero[i]) continue;
    all.copy(out, i * 32, cursor, cursor + 32);
    cursor += 32;
  }
  assert.ok(cursor <= streamBytes);
  return out;
}

let sealCases = 0, openCases = 0, blocksChecked = 0, fallbacks = 0;
const geometries = [[2, 3], [2, 3], [2, 3], [3, 5], [4, 6], [1, 2], [3, 3]] as const;
for (let iter = 0; iter < 300; iter++) {
  const [m, n] = geometries[iter % geometries.length]!;
  const blockBytes = [512, 4096, 4096, 65536][randomInt(4)]!;
  const slotBytes = slotBytesFor(blockBytes, m);
  const count = randomInt(1, blockBytes >= 65536 ? 6 : 40);
  // Sometimes straddle a section boundary, with different keys/slots per section.
  const boundary = Math.ceil(sectionBytes / slotBytes) * 7;
  const first = iter % 3 === 0 ? boundary - randomInt(1, count + 1) : randomInt(0, 1e6);
  const sectionFirst = Math.floor((first * slotBytes) / sectionBytes);
  const sectionsN = Math.floor(((first + count - 1) * slotBytes) / sectionBytes) - sectionFirst + 1;
  const keys: KeyTable = {
    sectionFirst,
    keys: Array.from({ length: n }, () => Array.from({ length: sectionsN }, () => Array.from({ length: 3 }, () => (randomInt(4) === 0 ? null : randomBytes(32))))),
    active: [],
  };
  (keys as { active: (number[] | null)[] }).active = keys.keys.map((secs) => secs!.map((slots) => slots.findIndex((k) => k !== null)));
  const allHave = (s: number) => keys.active[s]!.every((a) => a >= 0);
  const targets = Array.from({ length: n }, (_, i) => i).filter((s) => allHave(s) && (iter % 5 !== 0 || randomInt(3) > 0));
  if (targets.length === 0) continue;
  const zero = iter % 4 === 0 ? Uint8Array.from({ length: count }, () => (randomInt(3) === 0 ? 1 : 0)) : null;
  const blocks = randomBytes(count * blockBytes);
  const b: SealBatch = { volumeId: randomBytes(16), m, n, blockBytes, slotBytes, first, count, keys, generation: randomInt(1, 2 ** 40), epoch: randomInt(0, 2 ** 32), blocks, zero, targets };
  const js = sealBatch(b);
  const aont = takeKeys(count, zero);
  const nat = sealBatchNative(b, aont);
  assert.equal(js.length, nat.length);
  js.forEach((x, t) => assert.ok(Buffer.from(x).equals(Buffer.from(nat[t]!)), `seal mismatch iter ${iter} ${m}-of-${n} bs ${blockBytes} target ${targets[t]}`));
  sealCases++;
  blocksChecked += count;

  // Open: various subsets and damage, against openBatch.
  const slotsAll = targets.map((s, t) => [s, Buffer.from(nat[t]!)] as const);
  const variants: (readonly (readonly [number, Buffer])[])[] = [slotsAll, slotsAll.slice(1), slotsAll.slice(0, m)];
  const damaged = slotsAll.map(([s, d]) => [s, Buffer.from(d)] as const);
  for (let k = 0; k < 3; k++) {
    const v = damaged[randomInt(damaged.length)]![1];
    v[randomInt(v.length)]! ^= 1 << randomInt(8);
  }
  variants.push(damaged);
  const empty = slotsAll.map(([s, d]) => [s, Buffer.alloc(d.length)] as const);
  variants.push(empty);
  for (const slots of variants) {
    for (const verifyAll of [false, true]) {
      const ob = { ...b, slots, complete: slots.length === targets.length, verifyAll };
      let je: unknown = null, ne: unknown = null, jr, nr;
      try { jr = openBatch(ob); } catch (e) { je = e; }
      try { nr = openBatchNative(ob); } catch (e) { ne = e; }
      assert.equal(String(ne), String(je));
      if (jr && nr) {
        assert.ok(Buffer.from(jr.blocks).equals(Buffer.from(nr.blocks)), `open blocks mismatch iter ${iter}`);
        assert.deepEqual(nr.outcomes.map((o) => JSON.stringify(o)).sort(), jr.outcomes.map((o) => JSON.stringify(o)).sort());
        fallbacks += nr.outcomes.length;
      }
      openCases++;
    }
  }
}
console.log(`ok: ${sealCases} seal batches (${blocksChecked} blocks) byte-identical; ${openCases} open batches identical (${fallbacks} block outcomes via JS fallback)`);
