/** Shared benchmark timing: run a body repeatedly for a time budget, report MB/s of payload. */
import { performance } from 'node:perf_hooks';

export interface Rate {
  readonly name: string;
  readonly mbPerSec: number;
}

/** Runs `body` (which processes `bytesPerCall` bytes) for about `seconds`, after a short warm-up. */
export function measure(name: string, bytesPerCall: number, body: () => void, seconds = 0.6): Rate {
  const warmEnd = performance.now() + 100;
  while (performance.now() < warmEnd) body();
  let calls = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 8; i++) body();
    calls += 8;
    now = performance.now();
  }
  const mbPerSec = (calls * bytesPerCall) / 1e6 / ((now - start) / 1000);
  return { name, mbPerSec };
}

export function table(rows: ReadonlyArray<Record<string, string | number>>): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number) => (typeof v === 'number' ? v.toFixed(v >= 100 ? 0 : 2) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(cell(r[c]!)).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(cols), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(cell(r[c]!)))))].join('\n');
}
