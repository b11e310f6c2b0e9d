/**
 * `npm run bench`: every benchmark, each measuring stripvault against a peer in the same run and
 * printing ratios. `npm run bench -- split nbd` runs a subset. Timings live here, never in tests.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { benchReedSolomon } from './reed-solomon.ts';
import { benchBatch, benchSplit } from './split.ts';
import { benchVolume } from './volume.ts';
import { table } from './timing.ts';

const suites: Record<string, () => Promise<void>> = {
  async split() {
    console.log('\n## Split engine: seal/open vs raw node:crypto AES-256-CTR, one core (target: 2-of-3 64 KiB >= 0.10x)\n');
    console.log(table(benchSplit() as unknown as Record<string, string | number>[]));
    console.log('\n## Batched seal/open as the volume sends them to a worker: JavaScript engine vs native addon, one core\n');
    console.log(table(benchBatch() as unknown as Record<string, string | number>[]));
  },
  async 'reed-solomon'() {
    console.log('\n## Reed-Solomon over GF(2^8), MB/s of primary data\n');
    const rows = await benchReedSolomon();
    console.log(table(rows.map((r) => ({ case: r.name, 'MB/s': r.mbPerSec }))));
  },
  async volume() {
    console.log('\n## Volume on strip files: degraded (one strip missing) vs healthy, and rebuild speed\n');
    console.log(table(await benchVolume()));
  },
  async nbd() {
    console.log('\n## NBD: stripvault vs qemu-nbd (raw, LUKS1), nbdcopy and fio\n');
    // Its own process: the servers it starts and the tools it drives must not share our event loop.
    const script = fileURLToPath(new URL('./nbd.ts', import.meta.url));
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: 'inherit' });
      child.on('exit', resolve);
    });
    if (code !== 0) throw new Error(`nbd benchmark exited with ${code}`);
  },
};

const wanted = process.argv.slice(2);
for (const name of wanted) if (!(name in suites)) throw new Error(`unknown benchmark "${name}"; have: ${Object.keys(suites).join(', ')}`);
for (const [name, run] of Object.entries(suites)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue;
  await run();
}
