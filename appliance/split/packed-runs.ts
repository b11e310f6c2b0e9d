/**
 * The runs of a seal batch as they cross to a worker: one row of numbers per run and one byte
 * array for every run's targets and zero mask, instead of an object, a targets array and maybe a
 * mask per run. Structured-cloning those was most of a small batch's message (a turn of 4 KiB
 * random writes is a run each); rows and bytes are two flat buffers.
 */
import { assert } from '../errors.ts';
import type { SealRun } from './batch.ts';

export interface PackedRuns {
  /** packedRunRowWidth numbers per run: first, count, generation, epoch, zero mask at (-1: none), targets at, targets. */
  readonly rows: Float64Array;
  /** Every run's targets (one strip index per byte), then its zero mask (one byte per block) if it has one. */
  readonly bytes: Uint8Array;
}

export const packedRunRowWidth = 7;
/** Strip indices travel as bytes. */
const targetIndexMax = 255;

export function packRuns(runs: readonly SealRun[]): PackedRuns {
  let total = 0;
  for (const r of runs) total += r.targets.length + (r.zero === null ? 0 : r.zero.length);
  const rows = new Float64Array(runs.length * packedRunRowWidth);
  const bytes = new Uint8Array(total);
  let row = 0;
  let at = 0;
  for (const r of runs) {
    rows[row++] = r.first;
    rows[row++] = r.count;
    rows[row++] = r.generation;
    rows[row++] = r.epoch;
    const targetsAt = at;
    for (const t of r.targets) {
      assert(Number.isInteger(t) && t >= 0 && t <= targetIndexMax, 'seal run target is a strip index');
      bytes[at++] = t;
    }
    let zeroAt = -1;
    if (r.zero !== null) {
      assert(r.zero.length === r.count, 'seal run zero mask has a byte per block');
      zeroAt = at;
      bytes.set(r.zero, at);
      at += r.zero.length;
    }
    rows[row++] = zeroAt;
    rows[row++] = targetsAt;
    rows[row++] = r.targets.length;
  }
  return { rows, bytes };
}

/**
 * The worker's side of packRuns. Rows that do not fit their bytes are refused here; what the
 * numbers mean (ranges, counts against the blocks) is checked by the seal itself, as for any batch.
 */
export function unpackRuns(p: PackedRuns): SealRun[] {
  const { rows, bytes } = p;
  assert(rows instanceof Float64Array && bytes instanceof Uint8Array && rows.length % packedRunRowWidth === 0, 'packed seal runs');
  const runs: SealRun[] = [];
  for (let row = 0; row < rows.length; row += packedRunRowWidth) {
    for (let f = row; f < row + packedRunRowWidth; f++) assert(Number.isSafeInteger(rows[f]) && rows[f]! >= (f === row + 4 ? -1 : 0), 'packed seal run fields are whole numbers');
    const count = rows[row + 1]!;
    const zeroAt = rows[row + 4]!;
    const targetsAt = rows[row + 5]!;
    const targetsEnd = targetsAt + rows[row + 6]!;
    assert(targetsEnd <= bytes.length && (zeroAt === -1 || zeroAt + count <= bytes.length), 'packed seal run lies in its bytes');
    runs.push({
      first: rows[row]!,
      count,
      generation: rows[row + 2]!,
      epoch: rows[row + 3]!,
      zero: zeroAt === -1 ? null : bytes.subarray(zeroAt, zeroAt + count),
      targets: Array.from(bytes.subarray(targetsAt, targetsEnd)),
    });
  }
  return runs;
}
