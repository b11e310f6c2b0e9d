/**
 * Seal and open throughput of the split engine next to raw node:crypto AES-256-CTR on the same
 * buffers in the same run (one core: everything here is synchronous on the main thread).
 * Target (issue 2): seal and open of 2-of-3 at 64 KiB each >= 0.10x raw AES-256-CTR.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { openBlock, sealBlock, type ShareCandidate } from '../appliance/split/split.ts';
import { openBatch, openBatchJs, sealBatch, sealIntoJs, type KeyTable, type OpenBatch, type SealBatch } from '../appliance/split/batch.ts';
import { nativeSeal } from '../appliance/split/native-seal.ts';
import { slotBytesFor } from '../appliance/strip/layout.ts';
import { measure, table } from './timing.ts';

export interface SplitBenchRow {
  readonly geometry: string;
  readonly block: string;
  readonly 'aes-ctr MB/s': number;
  readonly 'seal MB/s': number;
  readonly 'seal ratio': number;
  readonly 'open MB/s': number;
  readonly 'open ratio': number;
  readonly 'open-degraded MB/s': number;
  readonly 'open-degraded ratio': number;
}

export function benchSplit(seconds = 0.5): SplitBenchRow[] {
  const rows: SplitBenchRow[] = [];
  const volumeId = randomBytes(16);
  for (const [m, n] of [[2, 3], [3, 5], [4, 6]] as const) {
    for (const blockBytes of [4096, 65536]) {
      const keys = Array.from({ length: n }, () => randomBytes(32));
      const block = randomBytes(blockBytes);
      const aesKey = randomBytes(32);
      const iv = Buffer.alloc(16);
      const aes = measure('aes', blockBytes, () => {
        const c = createCipheriv('aes-256-ctr', aesKey, iv);
        c.update(block);
        c.final();
      }, seconds);
      let generation = 1;
      const sealOnce = () =>
        sealBlock({ volumeId, m, n, blockBytes, address: 42, generation: generation++, epoch: 1, block, sessionKey: (i) => ({ key: keys[i]!, keySlot: 0 }) });
      const seal = measure('seal', blockBytes, () => void sealOnce(), seconds);
      const shares = sealOnce();
      const cands: ShareCandidate[] = shares.map((s) => ({ stripIndex: s.stripIndex, generation: s.generation, epoch: s.epoch, keySlot: s.keySlot, kind: s.kind, body: s.body }));
      const openWith = (subset: ShareCandidate[]) => () =>
        void openBlock({ volumeId, m, n, blockBytes, address: 42, shares: subset, sessionKey: (i) => keys[i], complete: false });
      // Healthy: the M data-fragment strips (no decoding). Degraded: strip 0 missing, so one data
      // fragment is rebuilt from parity.
      const open = measure('open', blockBytes, openWith(cands.slice(0, m)), seconds);
      const degraded = measure('open-degraded', blockBytes, openWith(cands.slice(1, m + 1)), seconds);
      rows.push({
        geometry: `${m}-of-${n}`,
        block: `${blockBytes / 1024} KiB`,
        'aes-ctr MB/s': aes.mbPerSec,
        'seal MB/s': seal.mbPerSec,
        'seal ratio': seal.mbPerSec / aes.mbPerSec,
        'open MB/s': open.mbPerSec,
        'open ratio': open.mbPerSec / aes.mbPerSec,
        'open-degraded MB/s': degraded.mbPerSec,
        'open-degraded ratio': degraded.mbPerSec / aes.mbPerSec,
      });
    }
  }
  return rows;
}

export interface BatchBenchRow {
  readonly geometry: string;
  readonly batch: string;
  readonly 'seal JS MB/s': number;
  readonly 'seal native MB/s': number;
  readonly 'seal native/JS': number;
  readonly 'open JS MB/s': number;
  readonly 'open native MB/s': number;
  readonly 'open native/JS': number;
}

/**
 * Batches as the volume sends them to a worker: the JavaScript engine (batch.ts sealIntoJs /
 * openBatchJs) next to the native addon (sealBatch / openBatch when it is built), same run, one core.
 */
export function benchBatch(seconds = 0.5): BatchBenchRow[] {
  if (!nativeSeal.available) throw new Error(`the native seal addon is not in use (${nativeSeal.why}): npm run build:native`);
  const rows: BatchBenchRow[] = [];
  const volumeId = randomBytes(16);
  for (const [m, n, blockBytes, count] of [[2, 3, 4096, 1], [2, 3, 4096, 32], [2, 3, 65536, 4], [3, 5, 4096, 32]] as const) {
    const slotBytes = slotBytesFor(blockBytes, m);
    const keys: KeyTable = { sectionFirst: 0, keys: Array.from({ length: n }, () => [[randomBytes(32)]]), active: Array.from({ length: n }, () => [0]) };
    const targets = Array.from({ length: n }, (_, i) => i);
    const blocks = randomBytes(count * blockBytes);
    let generation = 1;
    const batch = (): SealBatch => ({ volumeId, m, n, blockBytes, slotBytes, first: 100, count, keys, generation: (generation += count), epoch: 1, blocks, zero: null, targets });
    const bytes = count * blockBytes;
    const sealJs = measure('seal js', bytes, () => sealIntoJs(batch(), targets.map(() => Buffer.allocUnsafeSlow(count * slotBytes))), seconds);
    const sealNat = measure('seal native', bytes, () => void sealBatch(batch()), seconds);
    const sealed = sealBatch(batch());
    const open: OpenBatch = { volumeId, m, n, blockBytes, slotBytes, first: 100, count, keys, slots: [0, 1, 2].slice(0, m).map((s) => [s, sealed[s]!] as const), complete: false };
    const openJs = measure('open js', bytes, () => void openBatchJs(open), seconds);
    const openNat = measure('open native', bytes, () => void openBatch(open), seconds);
    rows.push({
      geometry: `${m}-of-${n}`,
      batch: `${blockBytes / 1024} KiB x ${count}`,
      'seal JS MB/s': sealJs.mbPerSec,
      'seal native MB/s': sealNat.mbPerSec,
      'seal native/JS': sealNat.mbPerSec / sealJs.mbPerSec,
      'open JS MB/s': openJs.mbPerSec,
      'open native MB/s': openNat.mbPerSec,
      'open native/JS': openNat.mbPerSec / openJs.mbPerSec,
    });
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(table(benchSplit() as unknown as Record<string, string | number>[]));
  console.log(table(benchBatch() as unknown as Record<string, string | number>[]));
}
