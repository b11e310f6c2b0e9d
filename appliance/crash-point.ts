/**
 * Named points on the write path where crash tests kill the appliance. Off unless the environment
 * variable STRIPVAULT_CRASH_AT is set, e.g. `owl.appended:3` (SIGKILL the third time the point is
 * reached) or `volume.strip-written:7,owl.retired:2` (whichever comes first). Production never
 * sets it; the cost when unset is one map lookup.
 */
import { ErrorCode, fail } from './errors.ts';

export const crashAtEnv = 'STRIPVAULT_CRASH_AT';

/** Every point the code reaches; a crash test may name only these. */
export const crashPoints = [
  /**
   * A write's OWL record, and every one before it, is in the journal file (maybe not durable yet)
   * and the write is being acknowledged; no share of it is out. Earlier writes acknowledged the
   * same way may still be waiting for their sync and shares.
   */
  'owl.acknowledged',
  /** A write's OWL entry is durable; no share of it has been written yet. */
  'owl.appended',
  /** One strip's shares of a write are written (reached once per strip per write). */
  'volume.strip-written',
  /** Every target strip has a write's shares; the OWL entry is not retired yet. */
  'volume.shares-written',
  /** OWL entries were retired (their space is free). */
  'owl.retired',
  /** Recovery replayed one OWL entry onto the strips but has not retired it. */
  'owl.recovery-replayed',
] as const;
export type CrashPoint = (typeof crashPoints)[number];

function parse(text: string | undefined): Map<string, number> {
  const plan = new Map<string, number>();
  if (text === undefined || text === '') return plan;
  for (const part of text.split(',')) {
    const m = /^([a-z.-]+):(\d{1,9})$/.exec(part.trim());
    if (!m || !(crashPoints as readonly string[]).includes(m[1]!) || Number(m[2]) < 1) {
      fail(ErrorCode.InvalidArgument, `${crashAtEnv}: expected POINT:N[,POINT:N] with POINT one of ${crashPoints.join(', ')}`);
    }
    plan.set(m[1]!, Number(m[2]));
  }
  return plan;
}

const plan = parse(process.env[crashAtEnv]);
const hits = new Map<string, number>();

export function crashPoint(point: CrashPoint): void {
  const at = plan.get(point);
  if (at === undefined) return;
  const n = (hits.get(point) ?? 0) + 1;
  hits.set(point, n);
  if (n === at) process.kill(process.pid, 'SIGKILL');
}
