/**
 * Reed-Solomon throughput: encode, and reconstruct with one (and two) data fragments missing,
 * in MB/s of primary data, for the geometries and block sizes the split engine uses.
 *
 *   node --import tsx bench/reed-solomon.ts
 *
 * prints a table, with raw AES-256-CTR (node:crypto) alongside for scale. To compare with npm
 * Reed-Solomon packages in the same run on the same data, install them in a scratch directory
 * (never in this repository) and point RS_CANDIDATES_DIR at it:
 *
 *   mkdir -p /tmp/rs-cand && cd /tmp/rs-cand && npm init -y \
 *     && npm i @ronomon/reed-solomon @digitaldefiance/reed-solomon-erasure.wasm
 *   RS_CANDIDATES_DIR=/tmp/rs-cand node --import tsx bench/reed-solomon.ts
 *
 * (@ronomon/reed-solomon is a native addon: its install script must be allowed to build.)
 */

import { createCipheriv, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { erasureCodec } from '../appliance/split/reed-solomon.ts';

export interface BenchResult {
  name: string;
  mbPerSec: number;
}

export interface BenchReedSolomonOptions {
  /** Wall time per measurement round; three rounds, best kept. */
  roundMs?: number;
  /** Directory with candidate npm packages installed (default: $RS_CANDIDATES_DIR). */
  candidatesDir?: string;
}

const geometries: ReadonlyArray<readonly [number, number]> = [
  [2, 3],
  [3, 5],
  [4, 6],
];
const totalBytesList = [4096, 65536];
const roundMsDefault = 150;
const rounds = 5;
const warmupMs = 50;

/** One implementation prepared for one (m, n, size): closures over its own buffer layout. */
interface Prepared {
  encode(): void | Promise<void>;
  /** Rebuild data with the given data fragments missing; returns the rebuilt data, for checking. */
  reconstruct?(missing: readonly number[]): Uint8Array[] | Promise<Uint8Array[]>;
}

interface Implementation {
  name: string;
  prepare(m: number, n: number, data: readonly Uint8Array[]): Prepared;
}

const stripvault: Implementation = {
  name: 'stripvault',
  prepare(m, n, data) {
    const codec = erasureCodec(m, n);
    const fragments = codec.encode(data);
    return {
      encode: () => void codec.encode(data),
      reconstruct: (missing) => codec.reconstructData(fragments.map((f, i) => (missing.includes(i) ? undefined : f))),
    };
  },
};

interface Ronomon {
  create(k: number, m: number): unknown;
  encode(
    context: unknown, sources: number, targets: number,
    buffer: Buffer, bufferOffset: number, bufferSize: number,
    parity: Buffer, parityOffset: number, paritySize: number,
    callback: (error?: Error) => void,
  ): void;
}

/** @ronomon/reed-solomon: native C (Cauchy, SIMD where available), async through the libuv pool. */
function ronomon(lib: Ronomon): Implementation {
  return {
    name: '@ronomon/reed-solomon',
    prepare(m, n, data) {
      const shardBytes = Math.ceil(data[0]!.length / 8) * 8; // the addon requires multiples of 8
      const context = lib.create(m, n - m);
      const buffer = Buffer.alloc(shardBytes * m);
      data.forEach((d, i) => buffer.set(d, i * shardBytes));
      const parity = Buffer.alloc(shardBytes * (n - m));
      let allData = 0;
      for (let i = 0; i < m; i++) allData |= 1 << i;
      let allParity = 0;
      for (let i = m; i < n; i++) allParity |= 1 << i;
      const run = (sources: number, targets: number): Promise<void> =>
        new Promise((ok, ko) =>
          lib.encode(context, sources, targets, buffer, 0, buffer.length, parity, 0, parity.length, (e) => (e ? ko(e) : ok())),
        );
      return {
        encode: () => run(allData, allParity),
        reconstruct: async (missing) => {
          let targets = 0;
          for (const i of missing) targets |= 1 << i;
          let sources = 0;
          let count = 0;
          for (let i = 0; i < n && count < m; i++) {
            if (targets & (1 << i)) continue;
            sources |= 1 << i;
            count++;
          }
          for (const i of missing) buffer.fill(0, i * shardBytes, (i + 1) * shardBytes);
          await run(sources, targets);
          return data.map((d, i) => buffer.subarray(i * shardBytes, i * shardBytes + d.length));
        },
      };
    },
  };
}

interface RsWasm {
  encode(shards: Uint8Array, dataShards: number, parityShards: number): number;
  reconstruct(shards: Uint8Array, dataShards: number, parityShards: number, available: boolean[]): number;
}

/** @digitaldefiance/reed-solomon-erasure.wasm: the Rust reed-solomon-erasure crate in WebAssembly. */
function rsWasm(lib: RsWasm): Implementation {
  return {
    name: 'reed-solomon-erasure.wasm',
    prepare(m, n, data) {
      const shardBytes = data[0]!.length;
      const shards = new Uint8Array(shardBytes * n);
      data.forEach((d, i) => shards.set(d, i * shardBytes));
      const check = (code: number): void => {
        if (code !== 0) throw new Error(`reed-solomon-erasure.wasm failed with result ${code}`);
      };
      check(lib.encode(shards, m, n - m));
      return {
        encode: () => check(lib.encode(shards, m, n - m)),
        reconstruct: (missing) => {
          for (const i of missing) shards.fill(0, i * shardBytes, (i + 1) * shardBytes);
          check(lib.reconstruct(shards, m, n - m, Array.from({ length: n }, (_, i) => !missing.includes(i))));
          return data.map((_, i) => shards.subarray(i * shardBytes, (i + 1) * shardBytes));
        },
      };
    },
  };
}

interface BnbReedSolomon {
  encodeSegment(data: Uint8Array): Uint8Array[];
}

/** @bnb-chain/reed-solomon: pure JS port of klauspost/reedsolomon; encode only (no reconstruct API). */
function bnb(ReedSolomon: new (dataShards: number, parityShards: number, segmentSize: number) => BnbReedSolomon): Implementation {
  return {
    name: '@bnb-chain/reed-solomon',
    prepare(m, n, data) {
      const rs = new ReedSolomon(m, n - m, 1 << 24);
      const whole = new Uint8Array(data.reduce((sum, d) => sum + d.length, 0));
      let offset = 0;
      for (const d of data) {
        whole.set(d, offset);
        offset += d.length;
      }
      const shards = rs.encodeSegment(whole);
      if (shards.length !== n) throw new Error(`@bnb-chain/reed-solomon returned ${shards.length} shards`);
      return { encode: () => void rs.encodeSegment(whole) };
    },
  };
}

function loadCandidates(dir: string | undefined): Implementation[] {
  if (dir === undefined || !existsSync(join(dir, 'node_modules'))) return [];
  const require = createRequire(join(resolve(dir), 'package.json'));
  const out: Implementation[] = [];
  try {
    out.push(ronomon(require('@ronomon/reed-solomon') as Ronomon));
  } catch (e) {
    console.error(`skipping @ronomon/reed-solomon: ${(e as Error).message}`);
  }
  try {
    const { ReedSolomonErasure } = require('@digitaldefiance/reed-solomon-erasure.wasm') as {
      ReedSolomonErasure: { fromCurrentDirectorySync(): RsWasm };
    };
    out.push(rsWasm(ReedSolomonErasure.fromCurrentDirectorySync()));
  } catch (e) {
    console.error(`skipping @digitaldefiance/reed-solomon-erasure.wasm: ${(e as Error).message}`);
  }
  try {
    const { ReedSolomon } = require('@bnb-chain/reed-solomon') as {
      ReedSolomon: new (dataShards: number, parityShards: number, segmentSize: number) => BnbReedSolomon;
    };
    out.push(bnb(ReedSolomon));
  } catch (e) {
    console.error(`skipping @bnb-chain/reed-solomon: ${(e as Error).message}`);
  }
  return out;
}

/** Operations per second of fn, best of `rounds` rounds (a shared machine only ever slows us down). */
async function measure(fn: () => unknown, roundMs: number): Promise<number> {
  const run = async (ms: number): Promise<number> => {
    let ops = 0;
    const start = performance.now();
    let elapsed = 0;
    while (elapsed < ms) {
      for (let i = 0; i < 16; i++) {
        const r = fn();
        if (r instanceof Promise) await r;
      }
      ops += 16;
      elapsed = performance.now() - start;
    }
    return ops / (elapsed / 1000);
  };
  await run(warmupMs);
  let best = 0;
  for (let r = 0; r < rounds; r++) best = Math.max(best, await run(roundMs));
  return best;
}

/** Fragments as the split engine cuts them: consecutive subarrays of one package buffer. */
function makeData(m: number, totalBytes: number): Uint8Array[] {
  const fragmentBytes = Math.ceil(totalBytes / m);
  const whole = new Uint8Array(randomBytes(fragmentBytes * m));
  return Array.from({ length: m }, (_, i) => whole.subarray(i * fragmentBytes, (i + 1) * fragmentBytes));
}

function sameData(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  return a.length === b.length && a.every((x, i) => Buffer.compare(x, b[i]!) === 0);
}

export async function benchReedSolomon(options: BenchReedSolomonOptions = {}): Promise<BenchResult[]> {
  const roundMs = options.roundMs ?? roundMsDefault;
  const implementations = [stripvault, ...loadCandidates(options.candidatesDir ?? process.env.RS_CANDIDATES_DIR)];
  const results: BenchResult[] = [];
  for (const [m, n] of geometries) {
    for (const totalBytes of totalBytesList) {
      const data = makeData(m, totalBytes);
      const expected = data.map((d) => Uint8Array.from(d));
      const losses: number[][] = [[0]];
      if (n - m >= 2) losses.push([0, 1]);
      for (const impl of implementations) {
        const label = `${impl.name} (${m},${n}) ${totalBytes / 1024}KiB`;
        try {
          const prepared = impl.prepare(m, n, data);
          results.push({ name: `${label} encode`, mbPerSec: ((await measure(prepared.encode, roundMs)) * totalBytes) / 1e6 });
          const reconstruct = prepared.reconstruct;
          if (reconstruct === undefined) continue;
          for (const missing of losses) {
            if (!sameData(await reconstruct(missing), expected)) {
              throw new Error(`reconstruct without [${missing}] returned wrong data`);
            }
            const ops = await measure(() => reconstruct(missing), roundMs);
            results.push({ name: `${label} reconstruct -${missing.length}`, mbPerSec: (ops * totalBytes) / 1e6 });
          }
        } catch (e) {
          // Our own code failing is a bug to surface; a candidate failing is a finding to report.
          if (impl === stripvault) throw e;
          console.error(`${label}: candidate failed: ${(e as Error).message}`);
        }
      }
    }
  }
  return results;
}

/** Raw AES-256-CTR through node:crypto on one block: the yardstick the split engine is held to. */
async function benchAesCtr(totalBytes: number, roundMs: number): Promise<number> {
  const key = randomBytes(32);
  const iv = randomBytes(16);
  const block = randomBytes(totalBytes);
  const ops = await measure(() => {
    const cipher = createCipheriv('aes-256-ctr', key, iv);
    cipher.update(block);
    cipher.final();
  }, roundMs);
  return (ops * totalBytes) / 1e6;
}

async function main(): Promise<void> {
  const results = await benchReedSolomon();
  const width = Math.max(...results.map((r) => r.name.length));
  const aes = new Map<number, number>();
  for (const size of totalBytesList) aes.set(size, await benchAesCtr(size, roundMsDefault));
  console.log(`${'case'.padEnd(width)}  ${'MB/s'.padStart(8)}  vs AES-CTR`);
  for (const r of results) {
    const size = r.name.includes(' 4KiB') ? 4096 : 65536;
    const ratio = r.mbPerSec / aes.get(size)!;
    console.log(`${r.name.padEnd(width)}  ${r.mbPerSec.toFixed(0).padStart(8)}  ${ratio.toFixed(2)}x`);
  }
  for (const [size, mbPerSec] of aes) console.log(`${`aes-256-ctr node:crypto ${size / 1024}KiB`.padEnd(width)}  ${mbPerSec.toFixed(0).padStart(8)}`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await main();
}
