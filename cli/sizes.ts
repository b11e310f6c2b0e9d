/** Human sizes on the command line: 4096, 4K, 64M, 1G, 2T (binary units), 1GiB. */
import { ErrorCode, fail } from '../appliance/errors.ts';

const units: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$/i.exec(text);
  if (!m) fail(ErrorCode.InvalidArgument, `${what}: cannot read "${text}" as a size (e.g. 4096, 64M, 1G)`);
  const value = Number(m[1]) * units[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) fail(ErrorCode.InvalidArgument, `${what}: ${text} is too large`);
  return value;
}

export function formatSize(bytes: number): string {
  for (const [u, f] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= f && bytes % f === 0) return `${bytes / f}${u}`;
  }
  return `${bytes}`;
}

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Durations on the command line: 500ms, 30s, 15m, 24h, 7d; "0" or "off" is null (disabled). */
export function parseDuration(text: string, what = 'duration'): number | null {
  if (text === '0' || text === 'off') return null;
  const m = /^\s*(\d+)\s*(ms|s|m|h|d)\s*$/i.exec(text);
  if (!m) fail(ErrorCode.InvalidArgument, `${what}: cannot read "${text}" as a duration (e.g. 30s, 15m, 24h, 7d, off)`);
  const value = Number(m[1]) * durationUnits[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value)) fail(ErrorCode.InvalidArgument, `${what}: ${text} is too long`);
  return value;
}
