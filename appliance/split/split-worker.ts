/** A split pool worker: runs seal/open batches (batch.ts) and the strip I/O of io-batch.ts, and sends results back, transferring them. */
import { parentPort } from 'node:worker_threads';
import { StripvaultError } from '../errors.ts';
import { openBatch, sealBatch, sealRuns, type OpenBatch, type SealBatch, type SealRunsBatch } from './batch.ts';
import { unpackRuns, type PackedRuns } from './packed-runs.ts';
import { readOpenRuns, unpackSlotWrites, writeSlotList, type PackedSlotWrites, type ReadOpenBatch } from './io-batch.ts';
import type { JobOp } from './split-pool.ts';

const port = parentPort;
if (port === null) throw new Error('split-worker must run as a worker thread');

function transferable(a: Uint8Array): ArrayBuffer[] {
  // Only whole, unshared buffers may be moved; anything else is copied.
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer ? [a.buffer] : [];
}

port.on('message', (job: { id: number; op: JobOp; batch: unknown }) => {
  try {
    switch (job.op) {
      case 'seal': {
        const result = sealBatch(job.batch as SealBatch);
        port.postMessage({ id: job.id, ok: true, result }, result.flatMap(transferable));
        return;
      }
      case 'open': {
        const result = openBatch(job.batch as OpenBatch);
        port.postMessage({ id: job.id, ok: true, result }, transferable(result.blocks));
        return;
      }
      case 'sealRuns': {
        const packed = job.batch as Omit<SealRunsBatch, 'runs'> & { runs: PackedRuns };
        const result = sealRuns({ ...packed, runs: unpackRuns(packed.runs) });
        port.postMessage({ id: job.id, ok: true, result }, transferable(result));
        return;
      }
      case 'readOpen': {
        const result = readOpenRuns(job.batch as ReadOpenBatch);
        port.postMessage({ id: job.id, ok: true, result }, result.ok ? transferable(result.blocks) : []);
        return;
      }
      case 'writeSlots': {
        const result = writeSlotList(unpackSlotWrites(job.batch as PackedSlotWrites));
        port.postMessage({ id: job.id, ok: true, result: result.every((r) => r === null) ? null : result });
        return;
      }
    }
  } catch (e) {
    const code = e instanceof StripvaultError ? e.code : undefined;
    port.postMessage({ id: job.id, ok: false, error: { message: (e as Error).message, ...(code ? { code } : {}) } });
  }
});
