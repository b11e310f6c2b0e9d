/** Prototype wrapper: same inputs as batch.ts sealBatch/openBatch, sealed/opened by the N-API addon. */
import { createRequire } from 'node:module';
import { randomFillSync } from 'node:crypto';
import { openBatch, sealBatch, type KeyTable, type OpenBatch, type OpenBatchResult, type SealBatch } from '../../appliance/split/batch.ts';
import { parityMatrix } from '../../appliance/split/reed-solomon.ts';
import { sectionBytes } from '../../appliance/strip/layout.ts';
import { validateBlockBytes, validateGeometry } from '../../appliance/split/geometry.ts';
import { addressMax, generationMax } from '../../appliance/split/share-binding.ts';

interface Addon {
  seal(o: object): void;
  open(o: object): void;
}
const require = createRequire(import.meta.url);
let addon: Addon | null = null;
try {
  addon = require('./build/Release/stripvault_seal.node') as Addon;
} catch {
  addon = null; // fallback: JS path
}
export const nativeAvailable = (): boolean => addon !== null;

const parities = new Map<number, Uint8Array>();
function parity(m: number, n: number): Uint8Array {
  const k = m * 17 + n;
  let p = parities.get(k);
  if (!p) parities.set(k, (p = parityMatrix(m, n)));
  return p;
}

class KeyPool {
  readonly index = new Map<Uint8Array, number>();
  readonly list: Uint8Array[] = [];
  of(k: Uint8Array): number {
    let i = this.index.get(k);
    if (i === undefined) {
      if (k.length !== 32) throw new RangeError('session key must be 32 bytes');
      i = this.list.length;
      this.index.set(k, i);
      this.list.push(k);
    }
    return i;
  }
  bytes(): Buffer {
    return Buffer.concat(this.list);
  }
}

function sectionCount(t: KeyTable): number {
  let s = 1;
  for (const x of t.keys) if (x) s = Math.max(s, x.length);
  return s;
}

interface SealTable { sections: number; keys: Buffer; keyIdx: Int16Array; keySlot: Uint8Array }
// A KeyTable is immutable, so its flattened form is cached per (table, targets).
const sealTables = new WeakMap<KeyTable, Map<string, SealTable>>();
function sealTable(table: KeyTable, targets: readonly number[]): SealTable {
  let perTargets = sealTables.get(table);
  if (!perTargets) sealTables.set(table, (perTargets = new Map()));
  const id = targets.join(',');
  const hit = perTargets.get(id);
  if (hit) return hit;
  const sections = sectionCount(table);
  const pool = new KeyPool();
  const T = targets.length;
  const keyIdx = new Int16Array(T * sections).fill(-1);
  const keySlot = new Uint8Array(T * sections);
  targets.forEach((strip, t) => {
    const secs = table.keys[strip];
    const act = table.active[strip];
    if (!secs || !act) return;
    for (let s = 0; s < sections; s++) {
      const slot = act[s];
      const k = slot === undefined ? null : secs[s]?.[slot];
      if (k) {
        keyIdx[t * sections + s] = pool.of(k);
        keySlot[t * sections + s] = slot!;
      }
    }
  });
  const built = { sections, keys: pool.bytes(), keyIdx, keySlot };
  perTargets.set(id, built);
  return built;
}

/** aontKeys: count × 32 (injectable for tests); default fresh random. */
export function sealBatchNative(b: SealBatch, aontKeys?: Uint8Array): Uint8Array[] {
  if (!addon) return sealBatch(b);
  validateGeometry(b.m, b.n);
  validateBlockBytes(b.blockBytes);
  if (b.first < 0 || b.first + b.count - 1 > addressMax || b.generation < 1 || b.generation + b.count - 1 > generationMax) throw new RangeError('address/generation out of range');
  const keysBuf = aontKeys ?? randomFillSync(Buffer.allocUnsafe(b.count * 32));
  const { sections, keys, keyIdx, keySlot } = sealTable(b.keys, b.targets);
  const outs = b.targets.map(() => Buffer.allocUnsafeSlow(b.count * b.slotBytes));
  addon.seal({
    blocks: b.blocks, aontKeys: keysBuf, zero: b.zero, volumeId: b.volumeId, count: b.count, blockBytes: b.blockBytes,
    m: b.m, n: b.n, slotBytes: b.slotBytes, first: b.first, generation: b.generation, epoch: b.epoch,
    parity: parity(b.m, b.n), targets: Uint8Array.from(b.targets), outs, keys, keyIdx, keySlot,
    sections, sectionFirst: b.keys.sectionFirst, sectionBytes,
  });
  if (!aontKeys) keysBuf.fill(0);
  return outs;
}

export function openBatchNative(b: OpenBatch): OpenBatchResult {
  if (!addon) return openBatch(b);
  validateGeometry(b.m, b.n);
  validateBlockBytes(b.blockBytes);
  const sorted = [...b.slots].sort((x, y) => x[0] - y[0]);
  const sections = sectionCount(b.keys);
  const pool = new KeyPool();
  const S = sorted.length;
  const keyIdx = new Int16Array(S * sections * 256).fill(-1);
  sorted.forEach(([strip], s) => {
    const secs = b.keys.keys[strip];
    if (!secs) return;
    for (let sec = 0; sec < sections; sec++) {
      const slots = secs[sec];
      if (!slots) continue;
      slots.forEach((k, ks) => { if (k) keyIdx[(s * sections + sec) * 256 + ks] = pool.of(k); });
    }
  });
  const blocks = Buffer.alloc(b.count * b.blockBytes);
  const status = new Uint8Array(b.count);
  addon.open({
    slots: sorted.map(([, d]) => d), strips: Uint8Array.from(sorted.map(([s]) => s)), volumeId: b.volumeId, count: b.count,
    blockBytes: b.blockBytes, m: b.m, n: b.n, slotBytes: b.slotBytes, first: b.first, keys: pool.bytes(), keyIdx, sections,
    sectionFirst: b.keys.sectionFirst, sectionBytes, verifyAll: b.verifyAll === true, out: blocks, status,
  });
  const outcomes: OpenBatchResult['outcomes'][number][] = [];
  for (let i = 0; i < b.count; i++) {
    if (status[i] === 0) continue;
    // Anything unusual (empty, torn, corrupt, degraded beyond XOR): the JS engine decides, one block at a time.
    const one = openBatch({
      ...b, first: b.first + i, count: 1,
      slots: b.slots.map(([s, d]) => [s, d.subarray(i * b.slotBytes, (i + 1) * b.slotBytes)] as const),
    });
    Buffer.from(one.blocks).copy(blocks, i * b.blockBytes);
    for (const o of one.outcomes) outcomes.push({ ...o, i });
  }
  return { blocks, outcomes };
}
