/**
 * Crash points on a 3-of-4 volume built with the CLI, each at its 1st, 10th and 50th hit, before
 * every share of the write is out: owl.appended (its OWL entry is durable, no share written) and
 * volume.strip-written (some strips have it). See crash-point-matrix.ts.
 */
import test from 'ava';
import { beforeShares, registerCrashPointTests } from '../helpers/crash-point-matrix.ts';

registerCrashPointTests(test, { m: 3, n: 4 }, beforeShares);
