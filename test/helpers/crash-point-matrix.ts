/**
 * The crash-point matrix: write-path crash points × several hit counts per geometry, and crashes
 * during OWL recovery. Each scenario must die by the point itself (SIGKILL it sends
 * itself), and after a clean restart every block must read back as flushed or later.
 */
import type test from 'ava';
import { crashPoints, type CrashPoint } from '../../appliance/crash-point.ts';
import { crashSeed, type Geometry } from './crash-harness.ts';
import { assertCrashReport, runScenario } from './crash-scenario.ts';
import { modelTemplate, removeTemplatesAfter } from './crash-templates.ts';

/** Points reached while writing; owl.recovery-replayed is only reached while recovering. */
export const writePathPoints: readonly CrashPoint[] = crashPoints.filter((p) => p !== 'owl.recovery-replayed');
/** First hit (nothing flushed yet) and thirtieth (a history of writes and flushes); two counts keep the suite within its time budget. */
export const hitCounts = [1, 30] as const;

/**
 * Writes a scenario may issue waiting for its point: with a FLUSH every 3-12 writes that is about
 * a hundred flushes, far more hits than any count above needs; reaching it means the point is missing.
 */
const writesBeforeGivingUp = 800;
/** Frequent flushes, so even an early crash has flushed versions that must not be lost. */
const flushEvery = [3, 12] as const;

export interface RecoveryCase {
  readonly name: string;
  /** The crash under the workload that leaves OWL entries outstanding. */
  readonly first: string;
  /** Restarts that must each die replaying them. */
  readonly during: readonly string[];
  /** Restart and verify twice at the end. */
  readonly verifyTwice?: boolean;
}

export const oneRecoveryCrash: RecoveryCase = { name: 'one crash during recovery', first: 'volume.strip-written:4', during: ['owl.recovery-replayed:1'] };
/** Replaying must be idempotent and its result durable: crash it twice, then open twice. */
export const twoRecoveryCrashes: RecoveryCase = {
  name: 'two crashes during recovery in a row',
  first: 'owl.appended:6',
  during: ['owl.recovery-replayed:1', 'owl.recovery-replayed:1'],
  verifyTwice: true,
};

/** The write-path points split by whether every share of the write is out yet (one test file each). */
export const beforeShares: readonly CrashPoint[] = ['owl.acknowledged', 'owl.appended', 'volume.strip-written'];
export const afterShares: readonly CrashPoint[] = ['volume.shares-written', 'owl.retired'];

/** `points` × hitCounts on one geometry, each scenario asserting the crash point fired. */
export function registerCrashPointTests(t: typeof test, geometry: Geometry, points: readonly CrashPoint[]): void {
  removeTemplatesAfter(t);
  const g = `${geometry.m}-of-${geometry.n}`;
  for (const point of points) {
    for (const n of hitCounts) {
      t(`${g}: crash at ${point}:${n} under the model workload, restart, every block flushed or later`, async (tt) => {
        const template = await modelTemplate(geometry);
        const rep = await runScenario(tt, {
          template,
          seed: crashSeed(),
          crashAt: `${point}:${n}`,
          workload: { writesMax: writesBeforeGivingUp, flushEvery },
        });
        assertCrashReport(tt, rep, { atPoint: true });
      });
    }
  }
}

/** Crashes during OWL recovery on each geometry: `cases[g]` lists the recovery cases run there. */
export function registerRecoveryCrashTests(t: typeof test, runs: ReadonlyArray<{ geometry: Geometry; cases: readonly RecoveryCase[] }>): void {
  removeTemplatesAfter(t);
  for (const { geometry, cases } of runs) {
    const g = `${geometry.m}-of-${geometry.n}`;
    for (const c of cases) {
      const again = c.verifyTwice ? ', clean restart twice' : ', clean restart';
      t(`${g}: ${c.name} (${c.first}, then ${c.during.join(', ')})${again}, every block flushed or later`, async (tt) => {
        // One slot per geometry: the few runs here share a template rather than each preparing one.
        const template = await modelTemplate(geometry, 1);
        const rep = await runScenario(tt, {
          template,
          seed: crashSeed(),
          crashAt: c.first,
          recoveryCrashAt: c.during,
          verifyTwice: c.verifyTwice === true,
          workload: { writesMax: writesBeforeGivingUp, flushEvery },
        });
        assertCrashReport(tt, rep, { atPoint: true });
      });
    }
  }
}
