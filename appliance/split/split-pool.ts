/**
 * Runs seal/open batches on worker threads, so the split engine's CPU work uses every core while
 * the main thread keeps serving NBD and driving I/O. The engine is pure, so workers share nothing
 * but the messages: each batch carries its blocks or slots and the session keys it needs (in
 * memory only; keys never leave the process).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ErrorCode, StripvaultError, assert } from '../errors.ts';
import {
  openBatch,
  sealBatch,
  sealRuns,
  type BatchShape,
  type OpenBatch,
  type OpenBatchResult,
  type SealBatch,
  type SealRunsBatch,
} from './batch.ts';
import { packRuns } from './packed-runs.ts';
import { packSlotWrites, type ReadOpenBatch, type ReadOpenResult, type SlotWriteBatch } from './io-batch.ts';

export interface SplitRunner {
  seal(batch: SealBatch): Promise<Uint8Array[]>;
  open(batch: OpenBatch): Promise<OpenBatchResult>;
  /**
   * Several writes at once; the result is laid out as sealedRunOffsets says. Blocks already in
   * shared memory (a SharedArrayBuffer) are read where they are; others are copied there once.
   */
  sealRuns(batch: SealRunsBatch): Promise<Uint8Array>;
  /**
   * Present when batches may do their own strip I/O off the main thread: reads the slots of the
   * given strips and opens them (io-batch.ts).
   */
  readOpen?(batch: ReadOpenBatch): Promise<ReadOpenResult>;
  /** With readOpen: writes slots, returning per write null or why it failed. */
  writeSlots?(batch: SlotWriteBatch): Promise<(string | null)[]>;
  /** Worker threads available (1 for the calling thread): how many batches are worth running at once. */
  readonly parallelism: number;
  close(): Promise<void>;
}

/** Runs batches on the calling thread (no strip I/O of its own: the main thread must not block on a device). */
export const inlineRunner: SplitRunner = {
  seal: async (b) => sealBatch(b),
  open: async (b) => openBatch(b),
  sealRuns: async (b) => sealRuns(b),
  parallelism: 1,
  close: async () => undefined,
};

export const splitWorkersMax = 16;
/** A worker that dies within this long of the previous death is replaced only after a growing pause ... */
const respawnCalmMs = 10_000;
const respawnDelayMsMin = 100;
/** ... of at most this long. */
const respawnDelayMsMax = 30_000;
/** Batches in flight per worker before callers wait: enough to keep it busy, bounded memory. */
export const splitQueuePerWorkerMax = 8;
/**
 * A worker whose strip I/O job (a blocking pread/pwrite) has not answered in this long is stuck on a
 * hung device: it is replaced, and every job queued on it fails (callers fall back or report an
 * error) instead of waiting behind it for ever. Its thread may stay blocked in the kernel; it is
 * abandoned. Longer than any caller's own I/O deadline, so callers have given up first.
 */
export const workerIoStuckMs = 10_000;

/** The code of jobs failed because their worker got stuck: a strip write may still land later. */
export const workerStuckMessage = 'split worker stuck in strip I/O';

export type JobOp = 'seal' | 'open' | 'sealRuns' | 'readOpen' | 'writeSlots';
type Job = { id: number; op: JobOp; batch: unknown };
type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { message: string; code?: string } };

/** Crypto workers seal and open (and read-and-open); I/O workers only write slots, so a seal never queues behind a pwrite. */
type Role = 'crypto' | 'io';

/** Workers that only write strip slots, beside the crypto workers: they mostly wait in the kernel. */
export const ioWorkersDefault = 2;

interface Slot {
  readonly role: Role;
  worker: Worker;
  pending: Map<number, { resolve: (r: unknown) => void; reject: (e: unknown) => void }>;
  /** Set when the worker was given up on: its late replies are ignored. */
  abandoned?: boolean;
}

/**
 * postMessage clones a typed array's whole backing ArrayBuffer, not just its view: a 4 KiB slice of
 * a 256 MiB payload, or a 32-byte key in Node's 8 KiB Buffer pool, would drag all of it along.
 * Views that do not own their buffer are copied to exactly their bytes first.
 */
function standalone(a: Uint8Array): Uint8Array {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : new Uint8Array(a);
}

/** `a` itself if it lives in a SharedArrayBuffer (postMessage then shares, not copies, it), else a shared copy. */
export function inSharedMemory(a: Uint8Array): Uint8Array {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const s = new Uint8Array(new SharedArrayBuffer(a.byteLength));
  s.set(a);
  return s;
}

/**
 * The volume id and every session key of a batch as views of one small buffer: postMessage then
 * clones one ArrayBuffer per message instead of one per key (a 4 KiB random write spent more on
 * cloning keys than on sealing).
 */
function compactGeometry(b: BatchShape): Pick<BatchShape, 'volumeId' | 'keys'> {
  let bytes = b.volumeId.length;
  for (const strip of b.keys.keys) for (const section of strip ?? []) for (const k of section) if (k) bytes += k.length;
  const packed = new Uint8Array(bytes);
  let at = 0;
  const place = (k: Uint8Array): Uint8Array => {
    packed.set(k, at);
    at += k.length;
    return packed.subarray(at - k.length, at);
  };
  const volumeId = place(b.volumeId);
  return {
    volumeId,
    keys: {
      sectionFirst: b.keys.sectionFirst,
      active: b.keys.active,
      keys: b.keys.keys.map((strip) => strip?.map((section) => section.map((k) => (k ? place(k) : null))) ?? null),
    },
  };
}

export class SplitPool implements SplitRunner {
  private readonly slots: Slot[] = [];
  private readonly waiters: Array<() => void> = [];
  private nextId = 1;
  private closed = false;
  private respawnDelayMs = 0;
  private lastDeathMs = 0;

  private readonly ioStuckMs: number;

  constructor(workers = Math.min(availableParallelism(), splitWorkersMax), opts: { ioStuckMs?: number; ioWorkers?: number } = {}) {
    assert(Number.isInteger(workers) && workers >= 1 && workers <= splitWorkersMax, 'split worker count');
    const ioWorkers = opts.ioWorkers ?? ioWorkersDefault;
    assert(Number.isInteger(ioWorkers) && ioWorkers >= 0 && ioWorkers <= splitWorkersMax, 'I/O worker count');
    this.ioStuckMs = opts.ioStuckMs ?? workerIoStuckMs;
    for (let i = 0; i < workers; i++) this.slots.push(this.spawn('crypto'));
    for (let i = 0; i < ioWorkers; i++) this.slots.push(this.spawn('io'));
  }

  /** Crypto workers (seal/open parallelism). */
  get size(): number {
    return this.slots.filter((s) => s.role === 'crypto').length;
  }

  seal(batch: SealBatch): Promise<Uint8Array[]> {
    const compact: SealBatch = { ...batch, ...compactGeometry(batch), blocks: standalone(batch.blocks) };
    return this.run('seal', compact) as Promise<Uint8Array[]>;
  }

  open(batch: OpenBatch): Promise<OpenBatchResult> {
    const compact: OpenBatch = { ...batch, ...compactGeometry(batch), slots: batch.slots.map(([i, d]) => [i, standalone(d)] as const) };
    return this.run('open', compact) as Promise<OpenBatchResult>;
  }

  sealRuns(batch: SealRunsBatch): Promise<Uint8Array> {
    // The write path's bulk crosses threads in shared memory: the blocks here, the sealed shares
    // (batch.ts sealRuns) back to the journal and on to the strip writers, without a copy each way.
    const blocks = batch.blocks instanceof Uint8Array ? inSharedMemory(batch.blocks) : batch.blocks.map(inSharedMemory);
    return this.run('sealRuns', { ...batch, ...compactGeometry(batch), blocks, runs: packRuns(batch.runs) }) as Promise<Uint8Array>;
  }

  readOpen(batch: ReadOpenBatch): Promise<ReadOpenResult> {
    return this.run('readOpen', { ...batch, ...compactGeometry(batch) }) as Promise<ReadOpenResult>;
  }

  async writeSlots(batch: SlotWriteBatch): Promise<(string | null)[]> {
    // Null back when every write succeeded: the usual answer costs no array of nulls to clone.
    const result = (await this.run('writeSlots', packSlotWrites(batch))) as (string | null)[] | null;
    return result ?? batch.writes.map(() => null);
  }

  get parallelism(): number {
    return this.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    for (const s of this.slots) this.failAll(s, new StripvaultError(ErrorCode.VolumeClosed, 'split pool closed'));
    for (const w of this.waiters.splice(0)) w();
  }

  private spawn(role: Role): Slot {
    const worker = new Worker(new URL('./split-worker-entry.js', import.meta.url));
    const slot: Slot = { role, worker, pending: new Map() };
    worker.unref();
    worker.on('message', (reply: Reply) => {
      const p = slot.pending.get(reply.id);
      if (!p) return;
      slot.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else
        p.reject(
          reply.error.code === undefined
            ? new Error(`split worker: ${reply.error.message}`)
            : new StripvaultError(reply.error.code as ErrorCode, reply.error.message),
        );
      this.waiters.shift()?.();
    });
    // A worker that dies takes its batches with it: fail them, and replace the worker — after a
    // pause that grows while workers keep dying, so a worker that cannot start does not spin a core.
    // Callers waiting for a free slot are woken: the replacement has room.
    const onDeath = (e: unknown) => {
      this.failAll(slot, e instanceof Error ? e : new Error(`split worker exited: ${String(e)}`));
      if (this.closed || this.slots.indexOf(slot) < 0) return;
      const now = Date.now();
      this.respawnDelayMs = now - this.lastDeathMs > respawnCalmMs ? 0 : Math.min(respawnDelayMsMax, Math.max(respawnDelayMsMin, this.respawnDelayMs * 2));
      this.lastDeathMs = now;
      const replace = () => {
        const i = this.slots.indexOf(slot);
        if (this.closed || i < 0) return;
        this.slots[i] = this.spawn(slot.role);
        for (const w of this.waiters.splice(0)) w();
      };
      if (this.respawnDelayMs === 0) replace();
      else setTimeout(replace, this.respawnDelayMs).unref();
    };
    worker.on('error', onDeath);
    worker.on('exit', (code) => {
      if (!this.closed) onDeath(new Error(`split worker exited with code ${code}`));
    });
    return slot;
  }

  /** Replaces a worker stuck in strip I/O; its queued jobs fail with workerStuckMessage. */
  private abandon(slot: Slot): void {
    const i = this.slots.indexOf(slot);
    if (this.closed || i < 0 || slot.abandoned) return;
    slot.abandoned = true;
    this.slots[i] = this.spawn(slot.role);
    this.failAll(slot, new StripvaultError(ErrorCode.DeviceIo, workerStuckMessage, { errno: 'ETIMEDOUT' }));
    // Best effort: a thread blocked in a system call ends only when the call returns.
    void slot.worker.terminate().catch(() => undefined);
    for (const w of this.waiters.splice(0)) w();
  }

  private failAll(slot: Slot, e: unknown): void {
    for (const p of slot.pending.values()) p.reject(e);
    slot.pending.clear();
  }

  private async run(op: JobOp, batch: unknown, transfer: ArrayBuffer[] = []): Promise<unknown> {
    for (;;) {
      if (this.closed) throw new StripvaultError(ErrorCode.VolumeClosed, 'split pool closed');
      // Slot writes go to the I/O workers when there are any; everything else to the crypto workers.
      const role: Role = op === 'writeSlots' && this.slots.some((s) => s.role === 'io') ? 'io' : 'crypto';
      const slot = this.slots.filter((s) => s.role === role).reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
      if (slot.pending.size < splitQueuePerWorkerMax) {
        const id = this.nextId++;
        const job: Job = { id, op, batch };
        return new Promise((resolve, reject) => {
          slot.pending.set(id, { resolve, reject });
          // Batches are copied (structured clone): callers keep their buffers, except those in `transfer`.
          slot.worker.postMessage(job, transfer);
          if (op === 'readOpen' || op === 'writeSlots') {
            setTimeout(() => {
              if (slot.pending.has(id)) this.abandon(slot);
            }, this.ioStuckMs).unref();
          }
        });
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}
