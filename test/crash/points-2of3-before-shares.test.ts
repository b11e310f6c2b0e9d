/**
 * Crash points on the embedded default 2-of-3 volume, each at its 1st, 10th and 50th hit, before
 * every share of the write is out: owl.appended (its OWL entry is durable, no share written) and
 * volume.strip-written (some strips have it). See crash-point-matrix.ts.
 */
import test from 'ava';
import { beforeShares, registerCrashPointTests } from '../helpers/crash-point-matrix.ts';

registerCrashPointTests(test, { m: 2, n: 3 }, beforeShares);
