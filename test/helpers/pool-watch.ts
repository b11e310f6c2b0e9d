/**
 * Oracles for reuse of the process-wide shared pool (appliance/split/shared-buffers.ts), for the
 * session 4 review tests:
 *  - poisonPool: every buffer given back is filled with a poison byte at once. A buffer that is
 *    written while it sits in the pool (a seal worker still sealing into it) no longer holds the
 *    poison when it is next taken; a device or journal still reading one given back reads poison.
 *    Each buffer's `gen` counts its gives, so a reader can tell whether the memory it was handed
 *    was given back before it used it.
 *  - WatchedGateDevice: a pass-through device whose data writes can be held at a gate; when a held
 *    write finally lands it checks that its buffer was not given back meanwhile.
 *  - LateRunner: a SplitRunner over a real one whose chosen jobs are answered early (a worker given
 *    up on, as SplitPool.abandon does) or late, while their work is done when the test says.
 */
import type { ExecutionContext } from 'ava';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { sealRuns, type OpenBatch, type OpenBatchResult, type SealBatch, type SealRunsBatch } from '../../appliance/split/batch.ts';
import { writeSlotList, type ReadOpenBatch, type ReadOpenResult, type SlotWriteBatch } from '../../appliance/split/io-batch.ts';
import { sharedBuffers } from '../../appliance/split/shared-buffers.ts';
import { workerStuckMessage, type SplitRunner } from '../../appliance/split/split-pool.ts';
import { GatedDevice } from './gated-device.ts';

export const poisonByte = 0xe7;

export interface PoolWatch {
  /** Problems seen: free memory written, memory given back twice, a held write landing from memory given back. */
  readonly violations: string[];
  /** How often the memory was given back so far (0: never; undefined: not from the pool). */
  gen(sab: ArrayBufferLike): number | undefined;
  readonly takes: number;
  readonly gives: number;
}

export function poisonPool(t: ExecutionContext): PoolWatch {
  const gens = new Map<SharedArrayBuffer, number>();
  const free = new Set<SharedArrayBuffer>();
  const violations: string[] = [];
  let takes = 0;
  let gives = 0;
  const take = sharedBuffers.take.bind(sharedBuffers);
  const give = sharedBuffers.give.bind(sharedBuffers);
  const wipe = sharedBuffers.wipe.bind(sharedBuffers);
  sharedBuffers.take = (bytes: number): Buffer => {
    const b = take(bytes);
    const sab = b.buffer as SharedArrayBuffer;
    takes++;
    if (free.has(sab)) {
      free.delete(sab);
      const at = new Uint8Array(sab).findIndex((x) => x !== poisonByte);
      if (at >= 0) violations.push(`memory (${sab.byteLength} bytes, given back ${gens.get(sab)} times) was written at ${at} while it was in the pool`);
    }
    if (!gens.has(sab)) gens.set(sab, 0);
    return b;
  };
  sharedBuffers.give = (b: Buffer): void => {
    const sab = b.buffer as SharedArrayBuffer;
    gives++;
    if (free.has(sab)) violations.push('memory given back twice');
    give(b);
    gens.set(sab, (gens.get(sab) ?? 0) + 1);
    free.add(sab);
    new Uint8Array(sab).fill(poisonByte);
  };
  // A closing volume zeroes what the pool keeps: poison it again, so the check above still holds.
  sharedBuffers.wipe = (): void => {
    wipe();
    for (const sab of free) new Uint8Array(sab).fill(poisonByte);
  };
  t.teardown(() => {
    Reflect.deleteProperty(sharedBuffers, 'take');
    Reflect.deleteProperty(sharedBuffers, 'give');
    Reflect.deleteProperty(sharedBuffers, 'wipe');
  });
  return {
    violations,
    gen: (sab) => (sab instanceof SharedArrayBuffer ? gens.get(sab) : undefined),
    get takes() {
      return takes;
    },
    get gives() {
      return gives;
    },
  };
}

/** A GatedDevice that checks each held write's memory when it lands. */
export class WatchedGateDevice extends GatedDevice {
  held = 0;
  landed = 0;
  constructor(
    inner: StorageDevice,
    readonly watch: PoolWatch,
  ) {
    super(inner);
  }
  override async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset < this.dataFrom) return this.inner.write(offset, data);
    const gen = this.watch.gen(data.buffer);
    const gated = this.holding;
    if (gated) this.held++;
    await this.gate();
    if (gated) this.landed++;
    if (gen !== undefined && this.watch.gen(data.buffer) !== gen) {
      this.watch.violations.push(`${this.id}: a write held at ${offset} landed from memory given back to the pool while it waited`);
    }
    return this.inner.write(offset, data);
  }
}

type Deferred = { run: () => void };

/**
 * Passes every job to `inner`, except those `pick` chooses. A chosen seal or slot write is answered
 * at once with the error SplitPool gives when it abandons a worker, and its work — sealing into
 * the caller's output, or writing the slots — is done inline when the test calls release(), as the
 * abandoned worker would when its system call returns. A `late` slot write is answered (its writes
 * done, cancel flags or not: a pwrite under way cannot be stopped) once its caller has given up on
 * it and set a cancel flag.
 */
export class LateRunner implements SplitRunner {
  readonly deferred: Deferred[] = [];
  #seals = 0;
  #writes = 0;
  constructor(
    readonly inner: SplitRunner,
    readonly pick: { sealRuns?: (n: number) => boolean; writeSlots?: (n: number) => 'abandon' | 'late' | null },
    readonly watch: PoolWatch,
  ) {}
  get parallelism(): number {
    return this.inner.parallelism;
  }
  seal(batch: SealBatch): Promise<Uint8Array[]> {
    return this.inner.seal(batch);
  }
  open(batch: OpenBatch): Promise<OpenBatchResult> {
    return this.inner.open(batch);
  }
  sealRuns(batch: SealRunsBatch): Promise<Uint8Array> {
    if (!this.pick.sealRuns?.(this.#seals++) || batch.out === undefined) return this.inner.sealRuns(batch);
    const out = batch.out;
    const gen = this.watch.gen(out.buffer);
    this.deferred.push({
      run: () => {
        // The abandoned worker finishes: it seals into the output it was given.
        if (gen !== undefined && this.watch.gen(out.buffer) !== gen) this.watch.violations.push('an abandoned seal wrote into output memory given back to the pool');
        sealRuns(batch);
      },
    });
    return Promise.reject(new StripvaultError(ErrorCode.DeviceIo, workerStuckMessage, { errno: 'ETIMEDOUT' }));
  }
  readOpen(batch: ReadOpenBatch): Promise<ReadOpenResult> {
    return this.inner.readOpen!(batch);
  }
  writeSlots(batch: SlotWriteBatch): Promise<(string | null)[]> {
    const how = this.pick.writeSlots?.(this.#writes++) ?? null;
    if (how === null) return this.inner.writeSlots!(batch);
    const gens = batch.writes.map((w) => this.watch.gen(w.data.buffer));
    const doWrites = (): (string | null)[] => {
      batch.writes.forEach((w, k) => {
        if (gens[k] !== undefined && this.watch.gen(w.data.buffer) !== gens[k]) this.watch.violations.push(`a worker pwrite at ${w.offset} read memory given back to the pool`);
      });
      return writeSlotList({ ...batch, cancel: new Int32Array(batch.cancel.length) });
    };
    if (how === 'abandon') {
      this.deferred.push({ run: () => void doWrites() });
      return Promise.reject(new StripvaultError(ErrorCode.DeviceIo, workerStuckMessage, { errno: 'ETIMEDOUT' }));
    }
    return new Promise((resolve) => {
      const poll = (): void => {
        if (batch.cancel.some((_, g) => Atomics.load(batch.cancel, g) !== 0)) resolve(doWrites());
        else setTimeout(poll, 5);
      };
      poll();
    });
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  /** Lets every deferred job do its work now. */
  release(): void {
    for (const d of this.deferred.splice(0)) d.run();
  }
}
