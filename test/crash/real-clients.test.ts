/**
 * Crashes under real NBD clients: a region filled with pattern A (flushed) is overwritten by
 * nbdcopy (a file of pattern B, different in every block) or by fio's nbd engine (randwrite,
 * 4 KiB, iodepth 16, one buffer pattern per job) when the appliance is SIGKILLed at a seeded
 * moment (after it wrote a seeded amount). After a clean restart every block must be wholly A or wholly one of the B
 * versions: never a mix, never unreadable. Each run prints its seed; CRASH_SEED replays its kill moment.
 */
import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Prng } from '../../appliance/device/prng.ts';
import { connect, crashRun, crashSeed, describeExit, prepareTemplate, type Template } from '../helpers/crash-harness.ts';
import { crashBlockBytes as bb, patternBlock, patternRange, repeatedPattern } from '../helpers/crash-patterns.ts';
import { checkWholeBlocks, nbdUri, startTool, waitForServerWrites, type ToolRun } from '../helpers/crash-tools.ts';

/** 32 MiB at the start of the disk: nbdcopy writes from offset 0. */
const regionBlocks = 8192;
/** Blocks past the region that no client touches: they must still read as zeros. */
const beyondBlocks = 256;
const fioPatterns = [0x1badb002, 0xfeedface] as const;
/**
 * The kill comes once the server has written a seeded share of what a full pass over the region
 * costs it (N/M bytes of shares per byte, plus headers), then a seeded few ms later: from the first
 * requests to past the end (the OWL writes each share twice), whatever the machine's load.
 */
const killAtShare = [0.01, 1.5] as const;
const killThenMs = [0, 30] as const;
/** A client that has not made the server write that much by then is stuck. */
const progressMsMax = 120_000;
/** A client that outlives the server this long is stuck; the test kills it. */
const clientExitMsMax = 30_000;

let templateP: Promise<Template> | undefined;
const template = () =>
  (templateP ??= prepareTemplate({
    geometry: { m: 2, n: 3 },
    fill: { firstBlock: 0, blocks: regionBlocks, content: (first, n) => patternRange('A', first, n) },
  }));
test.after.always(async () => (await templateP?.catch(() => undefined))?.remove());

interface ClientCrash {
  /** Runs in the run's scratch directory before the server starts (e.g. writes the source file). */
  readonly prepare?: (root: string) => Promise<void>;
  readonly allowed: (block: number) => ReadonlyArray<readonly [string, Buffer]>;
  /** Content every block must have if the client finished (and flushed) before the kill. */
  readonly whenComplete?: string;
}

async function crashUnderClient(t: ExecutionContext, what: string, start: (uri: string, root: string) => ToolRun, c: ClientCrash): Promise<void> {
  const seed = crashSeed();
  const prng = new Prng(seed);
  const tpl = await template();
  const fullPassBytes = (regionBlocks * bb * tpl.geometry.n) / tpl.geometry.m;
  const killAtBytes = Math.round(fullPassBytes * (killAtShare[0] + prng.nextFloat() * (killAtShare[1] - killAtShare[0])));
  const thenMs = prng.nextIntBetween(killThenMs[0], killThenMs[1]);
  const label = `seed ${seed}, ${what}, SIGKILL ${thenMs} ms after the server wrote ${(killAtBytes / 2 ** 20).toFixed(1)} MiB`;
  const run = await crashRun(t, tpl);
  await c.prepare?.(run.scratch);
  const p = await run.start();
  const tool = start(nbdUri(p.at, tpl.exportName), run.scratch);
  t.teardown(() => void tool.child.kill('SIGKILL'));
  const progress = await waitForServerWrites(p.child.pid!, killAtBytes, tool.done, progressMsMax);
  await new Promise((r) => setTimeout(r, thenMs));
  p.kill('SIGKILL');
  const exit = await p.exited;
  const stuck = setTimeout(() => tool.child.kill('SIGKILL'), clientExitMsMax);
  const result = await tool.done;
  clearTimeout(stuck);
  t.is(exit.signal, 'SIGKILL', `${label}: server ${describeExit(exit)}`);
  // The client may have finished first (then every block must hold its data) or failed on the lost server.
  const completed = result.code === 0;

  const v = await run.start();
  const client = await connect(v.at, tpl.exportName).catch((e: unknown) => {
    throw new Error(`[${label}] after restart, cannot open export ${tpl.exportName}: ${(e as Error).message}\n${run.logs()}`);
  });
  try {
    const region = await checkWholeBlocks(client, bb, 0, regionBlocks, c.allowed);
    const beyond = await checkWholeBlocks(client, bb, regionBlocks, beyondBlocks, () => [['zeros', Buffer.alloc(bb)]]);
    const counts = [...region.counts].map(([k, n]) => `${n} ${k}`).join(', ');
    t.log(`${label} (${progress}): client ${completed ? 'finished first' : `ended ${result.signal ?? `with code ${result.code}`}`}; blocks: ${counts}`);
    const context = `[${label}]\n${run.logs()}\nclient output:\n${result.output.slice(-2000)}`;
    t.deepEqual(region.bad, [], `blocks neither A nor a whole client write:\n${region.bad.slice(0, 20).join('\n')}\n${context}`);
    t.deepEqual(beyond.bad, [], `blocks past the region changed:\n${beyond.bad.slice(0, 20).join('\n')}\n${context}`);
    if (completed && c.whenComplete !== undefined) {
      t.is(region.counts.get(c.whenComplete), regionBlocks, `client finished and flushed, yet not every block is ${c.whenComplete}\n${context}`);
    }
  } finally {
    await client.close();
    t.is((await v.stop()).code, 0, `verifying serve did not stop cleanly\n${run.logs()}`);
  }
}

test('nbdcopy of pattern B over pattern A, SIGKILL mid-copy: every block wholly A or B', async (t) => {
  await crashUnderClient(t, 'nbdcopy', (uri, root) => startTool('nbdcopy', ['--flush', join(root, 'b.img'), uri]), {
    prepare: (root) => writeFile(join(root, 'b.img'), patternRange('B', 0, regionBlocks)),
    allowed: (b) => [
      ['A', patternBlock('A', b)],
      ['B', patternBlock('B', b)],
    ],
    whenComplete: 'B',
  });
});

test("fio nbd randwrite bs=4k iodepth=16, two jobs with fixed patterns, SIGKILL mid-run: every block wholly A or one job's", async (t) => {
  const patterns = fioPatterns.map((w) => [`fio 0x${w.toString(16)}`, repeatedPattern(w)] as const);
  await crashUnderClient(
    t,
    'fio',
    (uri, root) =>
      startTool(
        'fio',
        fioPatterns.flatMap((w, j) => [
          `--name=job${j}`,
          '--ioengine=nbd',
          `--uri=${uri}`,
          '--rw=randwrite',
          '--bs=4k',
          '--iodepth=16',
          '--offset=0',
          `--size=${regionBlocks * bb}`,
          `--buffer_pattern=0x${w.toString(16)}`,
          '--scramble_buffers=0',
          '--time_based',
          '--runtime=60',
        ]),
        root,
      ),
    { allowed: (b) => [['A', patternBlock('A', b)], ...patterns] },
  );
});

test('the whole-block check names a torn block', async (t) => {
  // Guards the checker used above: a block half A, half B must not pass.
  const torn = Buffer.concat([patternBlock('A', 3).subarray(0, bb / 2), patternBlock('B', 3).subarray(bb / 2)]);
  const fake = { read: async (_o: number, n: number) => Buffer.concat([torn, Buffer.alloc(n - bb)]) } as unknown as Parameters<typeof checkWholeBlocks>[0];
  const r = await checkWholeBlocks(fake, bb, 3, 2, (b) => [['A', patternBlock('A', b)], ['B', patternBlock('B', b)], ...(b === 4 ? [['zeros', Buffer.alloc(bb)] as const] : [])]);
  t.deepEqual(r.bad, ['block 3: mix of A and B']);
  t.is(r.counts.get('zeros'), 1);
});
