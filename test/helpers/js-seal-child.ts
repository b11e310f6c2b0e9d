/**
 * Run as a child process with STRIPVAULT_NATIVE_SEAL=0 (test/split/gathered-reads-review.test.ts): the
 * JavaScript engine seals runs into one reused, dirty, oversized SharedArrayBuffer, as the volume's
 * pool hands it out. Prints one JSON line: the engine in use, the cases run and what went wrong.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { openBatchJs, sealRuns, sealedRunOffsets, type KeyTable, type SealRun } from '../../appliance/split/batch.ts';
import { nativeSeal } from '../../appliance/split/native-seal.ts';
import { slotBytesFor } from '../../appliance/strip/layout.ts';

const dirtyByte = 0xa5;
const problems: string[] = [];
let cases = 0;
// One buffer for every case, never cleaned between them: what a pooled buffer looks like.
const reused = new SharedArrayBuffer(4 * 1024 * 1024);
new Uint8Array(reused).fill(dirtyByte);

for (const [m, n] of [
  [2, 3],
  [3, 5],
  [1, 2],
  [4, 4],
  [5, 8],
] as const) {
  for (const blockBytes of [512, 4096, 16384]) {
    // A slot with extra padding too (as the native tests do): padding must still come out zero.
    for (const pad of [0, 24]) {
      cases++;
      const slotBytes = slotBytesFor(blockBytes, m) + pad;
      const keys: KeyTable = { sectionFirst: 0, keys: Array.from({ length: n }, () => [[randomBytes(32), null, null, null]]), active: Array.from({ length: n }, () => [0]) };
      const shape = { volumeId: randomBytes(16), m, n, blockBytes, slotBytes, keys };
      const all = Array.from({ length: n }, (_, i) => i);
      const runs: SealRun[] = [];
      let at = randomInt(0, 1000);
      for (let k = 0; k < 4; k++) {
        const count = randomInt(1, 4);
        const zero = k === 1 ? Uint8Array.from({ length: count }, (_, i) => (i % 2 === 0 ? 1 : 0)) : null;
        // Every other run to M strips only (a degraded write): another target list, another call.
        const targets = k === 2 ? all.slice(0, m) : all;
        runs.push({ first: at, count, generation: 1 + at, epoch: k === 3 ? 9 : 1, zero, targets });
        at += count + randomInt(0, 3);
      }
      const { offsets, bytes } = sealedRunOffsets(runs, slotBytes);
      const blocks = randomBytes(runs.reduce((a, r) => a + r.count, 0) * blockBytes);
      let b = 0;
      for (const r of runs) {
        if (r.zero !== null) for (let i = 0; i < r.count; i++) if (r.zero[i]) blocks.fill(0, (b + i) * blockBytes, (b + i + 1) * blockBytes);
        b += r.count;
      }
      const extra = randomInt(0, 5000);
      if (bytes + extra > reused.byteLength) throw new Error('reused buffer too small for the case');
      new Uint8Array(reused, bytes, extra).fill(dirtyByte);
      const out = Buffer.from(reused, 0, bytes + extra);
      const what = `${m}-of-${n} block ${blockBytes} slot ${slotBytes}`;
      const got = sealRuns({ ...shape, blocks, runs, out });
      if (got.buffer !== reused || got.byteOffset !== 0 || got.length !== bytes) problems.push(`${what}: not sealed into the given buffer`);
      if (!out.subarray(bytes).every((x) => x === dirtyByte)) problems.push(`${what}: wrote past the sealed bytes`);
      b = 0;
      runs.forEach((r, k) => {
        const span = r.count * slotBytes;
        const slots = r.targets.map((strip, p) => [strip, Buffer.from(reused, offsets[k]! + p * span, span)] as const);
        // verifyAll: every share must authenticate, and a dirty padding or reserved byte makes one malformed.
        const opened = openBatchJs({ ...shape, first: r.first, count: r.count, slots, complete: true, verifyAll: true });
        if (opened.outcomes.length !== 0) problems.push(`${what} run ${k}: ${JSON.stringify(opened.outcomes.map((o) => ({ i: o.i, rejected: o.rejected.map((x) => x.reason) })))}`);
        if (!Buffer.from(opened.blocks).equals(blocks.subarray(b * blockBytes, (b + r.count) * blockBytes))) problems.push(`${what} run ${k}: wrong plaintext`);
        b += r.count;
      });
    }
  }
}

process.stdout.write(`${JSON.stringify({ engine: nativeSeal.available ? 'native' : 'js', cases, problems })}\n`);
