/** One thread: JS sealBatch/openBatch vs the addon. MB/s of primary block bytes; best of 5 runs. */
import { createCipheriv, randomBytes } from 'node:crypto';
import { openBatch, sealBatch, type SealBatch } from '../../appliance/split/batch.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { openBatchNative, sealBatchNative } from './native.ts';

const seconds = Number(process.env.SECONDS ?? 0.4);
function measure(bytesPerCall: number, fn: () => void): { mbps: number; cpuUsPerCall: number } {
  let best = 0, bestCpu = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    let calls = 0;
    const t0 = process.hrtime.bigint();
    const c0 = process.cpuUsage();
    const until = t0 + BigInt(Math.round(seconds * 1e9));
    while (process.hrtime.bigint() < until) { fn(); calls++; }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    best = Math.max(best, (calls * bytesPerCall) / wall / 1e6);
    bestCpu = Math.min(bestCpu, (c.user + c.system) / calls);
  }
  return { mbps: Math.round(best), cpuUsPerCall: bestCpu };
}

const rows = [];
for (const [m, n] of [[2, 3], [3, 5]] as const) {
  for (const [blockBytes, count] of [[4096, 1], [4096, 32], [65536, 1], [65536, 4]] as const) {
    if (m === 3 && count === 1) continue;
    const slotBytes = slotBytesFor(blockBytes, m);
    const keys = { sectionFirst: 0, keys: Array.from({ length: n }, () => [[randomBytes(32)]]), active: Array.from({ length: n }, () => [0]) };
    let generation = 1;
    const base = { volumeId: randomBytes(16), m, n, blockBytes, slotBytes, first: 1000, count, keys, epoch: 1, blocks: randomBytes(count * blockBytes), zero: null, targets: Array.from({ length: n }, (_, i) => i) };
    const batch = (): SealBatch => ({ ...base, generation: (generation += count) });
    const bytes = count * blockBytes;
    const aesKey = randomBytes(32), iv = Buffer.alloc(16);
    const aes = measure(bytes, () => { for (let i = 0; i < count; i++) { const c = createCipheriv('aes-256-ctr', aesKey, iv); c.update(base.blocks.subarray(i * blockBytes, (i + 1) * blockBytes)); c.final(); } });
    const sj = measure(bytes, () => void sealBatch(batch()));
    const sn = measure(bytes, () => void sealBatchNative(batch()));
    const sealed = sealBatch(batch());
    const healthy = { ...base, slots: sealed.slice(0, m).map((d, i) => [i, d] as const), complete: false };
    const degraded = { ...base, slots: sealed.slice(1, m + 1).map((d, i) => [i + 1, d] as const), complete: false };
    const oj = measure(bytes, () => void openBatch(healthy));
    const on = measure(bytes, () => void openBatchNative(healthy));
    const dj = measure(bytes, () => void openBatch(degraded));
    const dn = measure(bytes, () => void openBatchNative(degraded));
    const us = (r: { cpuUsPerCall: number }) => +(r.cpuUsPerCall / count).toFixed(1);
    rows.push({
      geom: `${m}-of-${n}`, block: `${blockBytes / 1024}K x${count}`, 'aes-ctr MB/s': aes.mbps,
      'seal JS': sj.mbps, 'seal nat': sn.mbps, 'seal x': +(sn.mbps / sj.mbps).toFixed(1), 'seal µs/blk JS/nat': `${us(sj)}/${us(sn)}`,
      'open JS': oj.mbps, 'open nat': on.mbps, 'open x': +(on.mbps / oj.mbps).toFixed(1), 'open µs/blk JS/nat': `${us(oj)}/${us(on)}`,
      'degr JS': dj.mbps, 'degr nat': dn.mbps,
    });
  }
}
console.table(rows);
