/**
 * The scheduled scrub: each volume is scrubbed `everyMs` after its last whole pass finished (or
 * after it was created) at `rateBytesPerSec` (DESIGN §5: "a scrub reads every share on a
 * schedule"). Progress is kept in the store, so a restart resumes a pass where it stopped instead
 * of starting over — a weekly scrub is never postponed for ever by restarts. Runs in the
 * background, one volume at a time; nothing runs while the appliance is sealed; stop() aborts a
 * scrub between chunks (saving where it was) and waits for it.
 */
import type { Appliance } from './appliance.ts';
import { ErrorCode, StripvaultError, fail } from './errors.ts';
import type { VolumeRecord } from './store/store.ts';

export const scrubEveryMsMin = 1000;
/** How often the schedule looks for due volumes, at most. */
export const scrubTickMsMax = 60_000;
/** Scrub progress is saved to the store at most this often (and whenever a scrub stops). */
export const scrubCursorSaveMs = 10_000;
/** After a failed scrub (volume unavailable, say) the volume is left alone this long, at most. */
export const scrubRetryMsMax = 60 * 60_000;

export interface ScrubSchedule {
  /** Scrub passes finished so far (one volume scrubbed whole = one). */
  readonly passes: number;
  stop(): Promise<void>;
}

export interface ScrubScheduleOptions {
  readonly everyMs: number;
  readonly rateBytesPerSec: number;
  readonly now?: () => number;
}

function isDue(record: VolumeRecord, everyMs: number, now: number): boolean {
  if (record.state === 'offline') return false;
  if (record.scrubNextBlock > 0) return true;
  const since = (record.scrubCompletedAt ?? record.createdAt).getTime();
  return now - since >= everyMs;
}

export function startScrubSchedule(appliance: Appliance, opts: ScrubScheduleOptions): ScrubSchedule {
  if (!Number.isSafeInteger(opts.everyMs) || opts.everyMs < scrubEveryMsMin) {
    fail(ErrorCode.InvalidArgument, `scrub interval must be at least ${scrubEveryMsMin} ms`);
  }
  const now = opts.now ?? Date.now;
  const abort = new AbortController();
  let passes = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const failedAt = new Map<string, number>();

  const scrubOne = async (record: VolumeRecord): Promise<void> => {
    const volume = await appliance.openVolume(record.id);
    const from = record.scrubNextBlock;
    await appliance.recordEvent(from > 0 ? 'scrub.resumed' : 'scrub.started', record.id, { volume: record.name, fromBlock: from });
    let saved = now();
    const report = await volume.scrub({
      fromBlock: from,
      rateBytesPerSec: opts.rateBytesPerSec,
      signal: abort.signal,
      onProgress: (p) => {
        if (now() - saved < scrubCursorSaveMs) return;
        saved = now();
        appliance.store.setScrubCursor(record.id, p.blocksDone).catch(() => undefined);
      },
    });
    const complete = report.nextBlock === report.blocksTotal;
    if (complete) await appliance.store.setScrubCursor(record.id, 0, new Date(now()));
    else await appliance.store.setScrubCursor(record.id, report.nextBlock);
    await appliance.recordEvent(complete ? 'scrub.finished' : 'scrub.paused', record.id, {
      volume: record.name,
      fromBlock: from,
      blocksDone: report.blocksDone,
      blocksRepaired: report.blocksRepaired,
      blocksLost: report.blocksLost,
      caughtUp: report.caughtUp,
      complete,
    });
    if (complete) passes++;
  };

  const tick = async (): Promise<void> => {
    const status = await appliance.keys.status();
    if (!status.initialized || status.sealed) return;
    for (const record of await appliance.store.listVolumes()) {
      if (abort.signal.aborted) return;
      if (!isDue(record, opts.everyMs, now())) continue;
      const failed = failedAt.get(record.id);
      if (failed !== undefined && now() - failed < Math.min(opts.everyMs, scrubRetryMsMax)) continue;
      try {
        await scrubOne(record);
        failedAt.delete(record.id);
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        failedAt.set(record.id, now());
        await appliance.recordEvent('scrub.failed', record.id, { volume: record.name, code: e.code }).catch(() => undefined);
      }
    }
  };
  const schedule = () => {
    timer = setTimeout(
      () => {
        running = tick()
          .catch((e: unknown) => appliance.log.log('error', 'scrub.crashed', { message: (e as Error).message }))
          .finally(() => {
            if (!abort.signal.aborted) schedule();
          });
      },
      Math.min(opts.everyMs, scrubTickMsMax),
    );
    timer.unref();
  };
  schedule();
  return {
    get passes() {
      return passes;
    },
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
