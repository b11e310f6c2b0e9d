/** The addon in two worker threads at once (thread_local contexts): results still match JS. */
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { openBatch } from '../../appliance/split/batch.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';
import { sealBatchNative, openBatchNative } from './native.ts';

if (isMainThread) {
  const ws = [0, 1].map(() => new Worker(new URL('./worker-entry.js', import.meta.url)));
  const res = await Promise.all(ws.map((w) => new Promise((ok, bad) => { w.on('message', ok); w.on('error', bad); })));
  console.log('workers:', res);
  await Promise.all(ws.map((w) => w.terminate()));
} else {
  let ok = 0;
  for (let r = 0; r < 300; r++) {
    const [m, n, blockBytes, count] = [2, 3, 4096, 16];
    const keys = { sectionFirst: 0, keys: Array.from({ length: n }, () => [[randomBytes(32)]]), active: Array.from({ length: n }, () => [0]) };
    const b = { volumeId: randomBytes(16), m, n, blockBytes, slotBytes: slotBytesFor(blockBytes, m), first: 9, count, keys, epoch: 3, generation: 1 + r, blocks: randomBytes(count * blockBytes), zero: null, targets: [0, 1, 2] };
    const sealed = sealBatchNative(b);
    const ob = { ...b, slots: sealed.map((d, i) => [i, d] as const), complete: true, verifyAll: true };
    const js = openBatch(ob), nat = openBatchNative(ob);
    if (Buffer.from(js.blocks).equals(b.blocks) && Buffer.from(nat.blocks).equals(b.blocks) && nat.outcomes.length === 0) ok++;
  }
  parentPort!.postMessage(ok);
}
