/**
 * A seeded NBD workload that a CrashModel can judge: whole-block writes, unaligned writes (partial
 * blocks, spanning block boundaries), some FUA, periodic FLUSH, occasional read-back checks, with
 * several requests in flight but never two writes touching the same block. It runs until a request
 * fails (the appliance died), a bound is reached, or it is told to stop.
 */
import { Prng } from '../../appliance/device/prng.ts';
import type { NbdClient } from '../../appliance/nbd/client.ts';
import { CrashModel, describeMismatches, type Mismatch } from './crash-model.ts';
import { writeBytes } from './crash-patterns.ts';

export interface WorkloadOptions {
  readonly seed: number;
  /** The region written: blocks [firstBlock, firstBlock + blocks). */
  readonly firstBlock: number;
  readonly blocks: number;
  /** Requests in flight at once (default 8). */
  readonly inflightMax?: number;
  /** Writes issued at most (default 4000). */
  readonly writesMax?: number;
  /** Bound on the whole run (default 20 s); reaching it is not an error, the caller decides. */
  readonly durationMsMax?: number;
  /** Share of writes that are not whole aligned blocks (default 0.25). */
  readonly unalignedShare?: number;
  /** Share of writes sent with FUA (default 0.05). */
  readonly fuaShare?: number;
  /** Writes between FLUSHes, drawn from [min, max] each time (default [6, 24]). */
  readonly flushEvery?: readonly [number, number];
  /** Largest whole-block write, in blocks (default 4). */
  readonly writeBlocksMax?: number;
  /** Share of steps that read back an idle block and compare it with the model (default 0.05). */
  readonly readShare?: number;
  /** Stops issuing new requests once it returns true (e.g. the test killed the appliance). */
  readonly stop?: () => boolean;
}

export type WorkloadEnd = 'request-failed' | 'writes-max' | 'duration-max' | 'stopped';

export interface WorkloadResult {
  readonly end: WorkloadEnd;
  readonly writes: number;
  readonly writesAcked: number;
  readonly flushes: number;
  readonly flushesAcked: number;
  /** The first failed request (expected once the appliance dies). */
  readonly error: Error | undefined;
  /** Read-backs during the run that did not match the model: a bug without any crash. */
  readonly liveMismatches: readonly Mismatch[];
}

const inflightMaxDefault = 8;
const writesMaxDefault = 4000;
const durationMsMaxDefault = 20_000;
/** Tries to find an idle range before waiting for something in flight to finish. */
const pickTriesMax = 16;

export async function runWorkload(client: NbdClient, model: CrashModel, opts: WorkloadOptions): Promise<WorkloadResult> {
  const prng = new Prng(opts.seed);
  const bb = model.blockBytes;
  const inflightMax = opts.inflightMax ?? inflightMaxDefault;
  const writesMax = opts.writesMax ?? writesMaxDefault;
  const deadline = Date.now() + (opts.durationMsMax ?? durationMsMaxDefault);
  const [flushMin, flushMax] = opts.flushEvery ?? [6, 24];
  const regionStart = opts.firstBlock * bb;
  const regionBytes = opts.blocks * bb;
  const inflight = new Set<Promise<void>>();
  const liveMismatches: Mismatch[] = [];
  let error: Error | undefined;
  let writes = 0;
  let writesAcked = 0;
  let flushes = 0;
  let flushesAcked = 0;
  let untilFlush = prng.nextIntBetween(flushMin, flushMax);
  let flushInFlight = false;

  const track = (p: Promise<void>) => {
    const q = p.catch((e: unknown) => {
      error ??= e instanceof Error ? e : new Error(String(e));
    });
    inflight.add(q);
    void q.finally(() => inflight.delete(q));
  };
  // Blocks being read back: no write may start on them until the read is answered.
  const reading = new Set<number>();
  const idle = (first: number, last: number) => {
    for (let b = first; b <= last; b++) if (reading.has(b)) return false;
    return !model.busy(first, last);
  };
  const waitOne = () => (inflight.size > 0 ? Promise.race(inflight) : Promise.resolve());

  /** An idle [offset, length) for a write or read, or null if every try hit something in flight. */
  const pick = (): { offset: number; length: number } | null => {
    for (let i = 0; i < pickTriesMax; i++) {
      let offset: number;
      let length: number;
      if (prng.chance(opts.unalignedShare ?? 0.25)) {
        // Up to three blocks long, anywhere: partial heads and tails, sometimes a single byte.
        length = prng.chance(0.1) ? 1 : prng.nextIntBetween(1, 3 * bb);
        offset = regionStart + prng.nextInt(regionBytes - length + 1);
      } else {
        const n = prng.nextIntBetween(1, Math.min(opts.writeBlocksMax ?? 4, opts.blocks));
        offset = regionStart + prng.nextInt(opts.blocks - n + 1) * bb;
        length = n * bb;
      }
      const first = Math.floor(offset / bb);
      const last = Math.floor((offset + length - 1) / bb);
      if (idle(first, last)) return { offset, length };
    }
    return null;
  };

  let end: WorkloadEnd;
  for (;;) {
    if (error !== undefined) {
      end = 'request-failed';
      break;
    }
    if (opts.stop?.() === true) {
      end = 'stopped';
      break;
    }
    if (writes >= writesMax) {
      end = 'writes-max';
      break;
    }
    if (Date.now() > deadline) {
      end = 'duration-max';
      break;
    }
    if (inflight.size >= inflightMax) {
      await waitOne();
      continue;
    }
    if (untilFlush <= 0 && !flushInFlight) {
      untilFlush = prng.nextIntBetween(flushMin, flushMax);
      const f = model.beginFlush();
      flushes++;
      flushInFlight = true;
      track(
        client
          .flush()
          .then(() => {
            model.ackFlush(f);
            flushesAcked++;
          })
          .finally(() => (flushInFlight = false)),
      );
      continue;
    }
    if (prng.chance(opts.readShare ?? 0.05)) {
      const block = opts.firstBlock + prng.nextInt(opts.blocks);
      if (idle(block, block)) {
        // Nothing in flight touches it, so it must read as its newest version right now.
        const expected = model.latest(block);
        reading.add(block);
        track(
          client
            .read(block * bb, bb)
            .then((got) => {
              if (!got.equals(expected)) {
                const m = model.check(block, got);
                liveMismatches.push(m ?? { block, seed: model.seed, found: 'an older candidate', expected: 'the newest acknowledged write' });
              }
            })
            .finally(() => reading.delete(block)),
        );
      }
      continue;
    }
    const range = pick();
    if (range === null) {
      await waitOne();
      continue;
    }
    const write = model.nextWrite;
    const data = writeBytes(opts.seed, write, range.offset, range.length, bb);
    const fua = prng.chance(opts.fuaShare ?? 0.05);
    const ticket = model.beginWrite(range.offset, data, fua);
    writes++;
    untilFlush--;
    track(
      client.write(range.offset, data, { fua }).then(
        () => {
          model.ackWrite(ticket);
          writesAcked++;
        },
        (e: unknown) => {
          model.abandonWrite(ticket);
          throw e;
        },
      ),
    );
  }
  while (inflight.size > 0) await waitOne();
  if (liveMismatches.length > 0 && error === undefined) error = new Error(`read-back during the workload:\n${describeMismatches(liveMismatches)}`);
  return { end, writes, writesAcked, flushes, flushesAcked, error, liveMismatches };
}

export interface VerifyResult {
  readonly blocksChecked: number;
  readonly mismatches: readonly Mismatch[];
}

/** Blocks read per request when verifying. */
const verifyRunBlocks = 64;

/**
 * Reads `blocks` (sorted or not) through `client` and checks each against the model. A read that
 * fails is itself a failure of the guarantee: it is thrown, not reported as a mismatch.
 */
export async function verifyBlocks(client: NbdClient, model: CrashModel, blocks: readonly number[]): Promise<VerifyResult> {
  const bb = model.blockBytes;
  const sorted = [...new Set(blocks)].sort((a, b) => a - b);
  const mismatches: Mismatch[] = [];
  const runs: Array<[number, number]> = [];
  for (const b of sorted) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === b && last[1] < verifyRunBlocks) last[1]++;
    else runs.push([b, 1]);
  }
  // A few runs at once: enough to keep the server busy, few enough to stay far below its limits.
  const parallel = 4;
  for (let i = 0; i < runs.length; i += parallel) {
    const batch = runs.slice(i, i + parallel);
    const datas = await Promise.all(batch.map(([first, n]) => client.read(first * bb, n * bb)));
    batch.forEach(([first, n], j) => {
      const data = datas[j]!;
      for (let k = 0; k < n; k++) {
        const m = model.check(first + k, data.subarray(k * bb, (k + 1) * bb));
        if (m) mismatches.push(m);
      }
    });
  }
  return { blocksChecked: sorted.length, mismatches };
}
