/**
 * SIGKILL from outside at a seeded moment while the model workload runs (after a seeded number of
 * writes, plus a seeded delay), then a clean restart: every block reads back as its last flushed
 * content or a later write. Also a restart after a crash killed at a seeded moment (opening,
 * replaying the OWL, or serving). Each run prints its seed; CRASH_SEED=<seed> replays its workload
 * and its kill moments.
 */
import test from 'ava';
import { Prng } from '../../appliance/device/prng.ts';
import { crashSeed, type Geometry } from '../helpers/crash-harness.ts';
import { assertCrashReport, runScenario } from '../helpers/crash-scenario.ts';
import { modelTemplate, removeTemplatesAfter } from '../helpers/crash-templates.ts';

removeTemplatesAfter(test);

/** The kill comes after this many writes were issued (seeded): from the first few to hundreds… */
const killAfterWrites = [1, 400] as const;
/** …and a seeded delay after that, so it lands anywhere: mid-request, mid-flush, between requests. */
const killThenMs = [0, 30] as const;
/** Kill delays after a restart is launched: while it opens the store, replays the OWL, or serves. */
const restartKillAfterMs = [200, 2_500] as const;

const runs: Array<{ geometry: Geometry; count: number; slots: number }> = [
  { geometry: { m: 2, n: 3 }, count: 3, slots: 2 },
  { geometry: { m: 3, n: 5 }, count: 1, slots: 1 },
];

for (const { geometry, count, slots } of runs) {
  for (let i = 0; i < count; i++) {
    test(`random SIGKILL under the model workload, ${geometry.m}-of-${geometry.n}, run ${i + 1}`, async (t) => {
      const seed = crashSeed();
      const prng = new Prng(seed).fork();
      const killAt = { writes: prng.nextIntBetween(killAfterWrites[0], killAfterWrites[1]), thenMs: prng.nextIntBetween(killThenMs[0], killThenMs[1]) };
      // The templates' slots bound this file to three appliances at a time.
      const template = await modelTemplate(geometry, slots);
      const rep = await runScenario(t, { template, seed, killAt, workload: { unalignedShare: 0.3 } });
      assertCrashReport(t, rep, { atPoint: false });
    });
  }
}

test('crash point under the workload, then a restart SIGKILLed at a seeded moment, 2-of-3', async (t) => {
  const seed = crashSeed();
  const prng = new Prng(seed).fork();
  const crashAt = `volume.strip-written:${prng.nextIntBetween(1, 40)}`;
  const recoveryKillAfterMs = prng.nextIntBetween(restartKillAfterMs[0], restartKillAfterMs[1]);
  const template = await modelTemplate({ m: 2, n: 3 });
  const rep = await runScenario(t, { template, seed, crashAt, recoveryKillAfterMs, workload: { flushEvery: [3, 12] } });
  assertCrashReport(t, rep, { atPoint: true });
});
