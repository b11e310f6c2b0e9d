/** A split pool worker: runs seal/open batches (batch.ts) and sends results back, transferring them. */
import { parentPort } from 'node:worker_threads';
import { StripvaultError } from '../errors.ts';
import { openBatch, sealBatch, type OpenBatch, type SealBatch } from './batch.ts';

const port = parentPort;
if (port === null) throw new Error('split-worker must run as a worker thread');

function transferable(a: Uint8Array): ArrayBuffer[] {
  // Only whole, unshared buffers may be moved; anything else is copied.
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer ? [a.buffer] : [];
}

port.on('message', (job: { id: number; op: 'seal' | 'open'; batch: SealBatch | OpenBatch }) => {
  try {
    if (job.op === 'seal') {
      const result = sealBatch(job.batch as SealBatch);
      port.postMessage({ id: job.id, ok: true, result }, result.flatMap(transferable));
    } else {
      const result = openBatch(job.batch as OpenBatch);
      port.postMessage({ id: job.id, ok: true, result }, transferable(result.blocks));
    }
  } catch (e) {
    const code = e instanceof StripvaultError ? e.code : undefined;
    port.postMessage({ id: job.id, ok: false, error: { message: (e as Error).message, ...(code ? { code } : {}) } });
  }
});
