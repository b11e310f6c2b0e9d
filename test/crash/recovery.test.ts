/**
 * Crashes while the OWL is replayed at open (owl.recovery-replayed), after a crash under the model
 * workload left entries outstanding; then clean restarts, and every block flushed or later.
 */
import test from 'ava';
import { oneRecoveryCrash, registerRecoveryCrashTests, twoRecoveryCrashes } from '../helpers/crash-point-matrix.ts';

registerRecoveryCrashTests(test, [
  { geometry: { m: 2, n: 3 }, cases: [oneRecoveryCrash, twoRecoveryCrashes] },
  { geometry: { m: 3, n: 4 }, cases: [oneRecoveryCrash] },
]);
