/**
 * Crash points on a 3-of-4 volume built with the CLI, each at its 1st, 10th and 50th hit, after
 * every share of the write is out: volume.shares-written (OWL entry not yet retired) and
 * owl.retired (entries retired). See crash-point-matrix.ts.
 */
import test from 'ava';
import { afterShares, registerCrashPointTests } from '../helpers/crash-point-matrix.ts';

registerCrashPointTests(test, { m: 3, n: 4 }, afterShares);
