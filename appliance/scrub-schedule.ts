/**
 * The scheduled scrub: every `everyMs`, each volume of the appliance is scrubbed at `rateBytesPerSec`
 * (DESIGN §5: "a scrub reads every share on a schedule"). Runs in the background, one volume at a
 * time; stop() aborts a scrub in progress between chunks and waits for it.
 */
import type { Appliance } from './appliance.ts';
import { ErrorCode, StripvaultError, fail } from './errors.ts';

export const scrubEveryMsMin = 1000;

export interface ScrubSchedule {
  /** Completed passes so far (all volumes scrubbed once = one pass). */
  readonly passes: number;
  stop(): Promise<void>;
}

export function startScrubSchedule(appliance: Appliance, opts: { everyMs: number; rateBytesPerSec: number }): ScrubSchedule {
  if (!Number.isSafeInteger(opts.everyMs) || opts.everyMs < scrubEveryMsMin) {
    fail(ErrorCode.InvalidArgument, `scrub interval must be at least ${scrubEveryMsMin} ms`);
  }
  const abort = new AbortController();
  let passes = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const pass = async (): Promise<void> => {
    for (const record of await appliance.store.listVolumes()) {
      if (abort.signal.aborted) return;
      try {
        const volume = await appliance.openVolume(record.id);
        await appliance.recordEvent('scrub.started', record.id, { volume: record.name });
        const report = await volume.scrub({ rateBytesPerSec: opts.rateBytesPerSec, signal: abort.signal });
        await appliance.recordEvent('scrub.finished', record.id, {
          volume: record.name,
          blocksDone: report.blocksDone,
          blocksRepaired: report.blocksRepaired,
          blocksLost: report.blocksLost,
          caughtUp: report.caughtUp,
          complete: report.nextBlock === report.blocksTotal,
        });
      } catch (e) {
        if (!(e instanceof StripvaultError)) throw e;
        await appliance.recordEvent('scrub.failed', record.id, { volume: record.name, code: e.code }).catch(() => undefined);
      }
    }
    passes++;
  };
  const schedule = () => {
    timer = setTimeout(() => {
      running = pass()
        .catch((e: unknown) => appliance.log.log('error', 'scrub.crashed', { message: (e as Error).message }))
        .finally(() => {
          if (!abort.signal.aborted) schedule();
        });
    }, opts.everyMs);
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
