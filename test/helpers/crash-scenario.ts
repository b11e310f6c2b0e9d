/**
 * One crash scenario under the model workload: start serve on a copy of a template (with a crash
 * point, or killed from outside after a delay), run the workload until the appliance dies,
 * optionally crash it again during recovery, restart it cleanly, and read back every block the
 * model knows about. The caller asserts on the report (assertCrashReport does the usual ones).
 */
import type { ExecutionContext } from 'ava';
import { crashAtEnv } from '../../appliance/crash-point.ts';
import type { NbdClient } from '../../appliance/nbd/client.ts';
import { CrashModel, describeMismatches } from './crash-model.ts';
import { crashBlockBytes, patternBlock, patternRange } from './crash-patterns.ts';
import { connect, crashRun, deathMsMax, describeExit, type ApplianceProcess, type CrashRun, type ExitInfo, type Template } from './crash-harness.ts';
import { runWorkload, verifyBlocks, type VerifyResult, type WorkloadOptions, type WorkloadResult } from './crash-workload.ts';

/** The blocks a model workload writes: 2 MiB at 1 MiB, inside the region templates fill with A. */
export const modelRegion = { firstBlock: 256, blocks: 512 } as const;
/** Filled with pattern "A" in templates, around the workload region, so lost writes do not hide as zeros. */
export const filledRegion = { firstBlock: 0, blocks: 1024 } as const;
/** Untouched blocks outside the filled region checked after every crash (they must read as zeros). */
export const untouchedZeroBlocks = [1024, 1025, 2047, 4096, 8191] as const;

export const fillA = (first: number, blocks: number) => patternRange('A', first, blocks);

/** The content a model block has before any write: A inside the filled region, zeros elsewhere. */
export function initialContent(block: number): Buffer {
  const inFill = block >= filledRegion.firstBlock && block < filledRegion.firstBlock + filledRegion.blocks;
  return inFill ? patternBlock('A', block) : Buffer.alloc(crashBlockBytes);
}

export interface ScenarioOptions {
  readonly template: Template;
  readonly seed: number;
  /** STRIPVAULT_CRASH_AT for the first child. */
  readonly crashAt?: string;
  /**
   * SIGKILL the first child from outside once the workload has issued `writes` writes, `thenMs`
   * later: anchored to progress, so a loaded machine shifts the moment less than a bare delay.
   */
  readonly killAt?: { readonly writes: number; readonly thenMs: number };
  /** Crash plans for restarts that are expected to die while recovering, in order. */
  readonly recoveryCrashAt?: readonly string[];
  /** Then one more restart, SIGKILLed from outside this long after it was launched (before, during or after recovery). */
  readonly recoveryKillAfterMs?: number;
  /** Restart and verify a second time after the first verification (recovery must be durable). */
  readonly verifyTwice?: boolean;
  readonly workload?: Partial<Omit<WorkloadOptions, 'seed' | 'stop'>>;
}

export interface DeathReport {
  readonly crashAt: string | undefined;
  /** The child reached "serving" before it died (or was stopped). */
  readonly served: boolean;
  readonly exit: ExitInfo;
  /** The harness killed it (an outside kill, or a crash point that was never reached). */
  readonly killedByHarness: boolean;
}

export interface ScenarioReport {
  readonly seed: number;
  readonly label: string;
  readonly workload: WorkloadResult | undefined;
  readonly first: DeathReport;
  readonly recoveries: readonly DeathReport[];
  readonly restartKill: DeathReport | undefined;
  readonly verifications: readonly VerifyResult[];
  /** Exit of the verifying children after SIGTERM (each must be 0). */
  readonly cleanStops: readonly ExitInfo[];
  readonly logs: string;
  /** Elapsed time at each step, for the report (never asserted on). */
  readonly phases: readonly string[];
}

export async function runScenario(t: ExecutionContext, opts: ScenarioOptions): Promise<ScenarioReport> {
  const { template, seed } = opts;
  const label = [
    `seed ${seed}`,
    `${template.geometry.m}-of-${template.geometry.n}`,
    opts.crashAt ? `${crashAtEnv}=${opts.crashAt}` : '',
    opts.killAt !== undefined ? `SIGKILL ${opts.killAt.thenMs} ms after write #${opts.killAt.writes}` : '',
    ...(opts.recoveryCrashAt ?? []).map((c) => `then during recovery ${c}`),
    opts.recoveryKillAfterMs !== undefined ? `then a restart killed after ${opts.recoveryKillAfterMs} ms` : '',
  ]
    .filter(Boolean)
    .join(', ');
  const run = await crashRun(t, template);
  try {
    return await scenarioSteps(run, opts, label);
  } catch (e) {
    // Whatever broke (a restart that cannot serve, a read that fails), the seed goes with it.
    const msg = (e as Error).message;
    throw new Error(msg.startsWith('[') ? msg : `[${label}] ${msg}\n${run.logs()}`);
  }
}

async function scenarioSteps(run: CrashRun, opts: ScenarioOptions, label: string): Promise<ScenarioReport> {
  const { template, seed } = opts;
  const started = Date.now();
  const phases: string[] = [];
  const phase = (what: string) => phases.push(`${what} ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // Every crash here is a SIGKILL of the server: the page cache survives, so acknowledged writes must.
  const model = new CrashModel({ seed, blockBytes: template.blockBytes, initial: initialContent, acknowledgedSurvives: true });

  const p = run.launch(opts.crashAt);
  const { workload, death } = await crashUnderWorkload(p, template, model, opts);
  phase('crashed');
  const recoveries: DeathReport[] = [];
  for (const plan of opts.recoveryCrashAt ?? []) recoveries.push(await crashDuringRecovery(run, plan));
  if (recoveries.length > 0) phase('recovery crashes');
  let restartKill: DeathReport | undefined;
  if (opts.recoveryKillAfterMs !== undefined) {
    restartKill = await killRestart(run, opts.recoveryKillAfterMs);
    phase('restart killed');
  }

  const verifications: VerifyResult[] = [];
  const cleanStops: ExitInfo[] = [];
  const blocks = blocksToVerify(model);
  for (let round = 0; round < (opts.verifyTwice ? 2 : 1); round++) {
    const v = await run.start();
    const client = await connect(v.at, template.exportName);
    try {
      verifications.push(await verifyBlocks(client, model, blocks));
    } catch (e) {
      // Never an error: a read that fails after a crash breaks the guarantee as much as wrong bytes.
      throw new Error(`read after restart failed: ${(e as Error).message}`);
    } finally {
      await client.close();
      cleanStops.push(await v.stop());
    }
    phase(`verified${round > 0 ? ' again' : ''}`);
  }
  return { seed, label, workload, first: death, recoveries, restartKill, verifications, cleanStops, logs: run.logs(), phases };
}

function blocksToVerify(model: CrashModel): number[] {
  const out = new Set<number>(model.touched());
  for (let b = filledRegion.firstBlock; b < filledRegion.firstBlock + filledRegion.blocks; b++) out.add(b);
  for (const b of untouchedZeroBlocks) out.add(b);
  return [...out];
}

async function crashUnderWorkload(
  p: ApplianceProcess,
  template: Template,
  model: CrashModel,
  opts: ScenarioOptions,
): Promise<{ workload: WorkloadResult | undefined; death: DeathReport }> {
  const r = await p.serving();
  if ('code' in r) return { workload: undefined, death: { crashAt: opts.crashAt, served: false, exit: r, killedByHarness: false } };
  let killedByHarness = false;
  let timer: NodeJS.Timeout | undefined;
  let client: NbdClient | undefined;
  let workload: WorkloadResult | undefined;
  try {
    client = await connect(r, template.exportName);
    const killAt = opts.killAt;
    const armKill = () => {
      if (killAt === undefined || timer !== undefined || model.writes < killAt.writes) return;
      timer = setTimeout(() => {
        killedByHarness = true;
        p.kill('SIGKILL');
      }, killAt.thenMs);
    };
    workload = await runWorkload(client, model, {
      seed: model.seed,
      ...modelRegion,
      ...opts.workload,
      // An outside kill must land mid-workload: no other bound may end it first.
      ...(killAt !== undefined ? { writesMax: Number.MAX_SAFE_INTEGER, durationMsMax: 120_000 } : {}),
      stop: () => {
        armKill();
        return p.exit() !== undefined;
      },
    });
  } finally {
    clearTimeout(timer);
    client?.destroy();
  }
  // A request failed because the child died — or it is still alive (the point was never reached,
  // or the failure was something else): then it gets deathMsMax to die before the harness kills it.
  const exit = await Promise.race([p.exited, new Promise<undefined>((res) => setTimeout(() => res(undefined), workload?.end === 'request-failed' ? deathMsMax : 0).unref())]);
  if (exit === undefined) {
    killedByHarness = true;
    p.kill('SIGKILL');
  }
  return { workload, death: { crashAt: opts.crashAt, served: true, exit: await p.exited, killedByHarness } };
}

/** A restart with a crash plan that must kill it before it serves (recovery runs at open). */
async function crashDuringRecovery(run: CrashRun, plan: string): Promise<DeathReport> {
  const p = run.launch(plan);
  const r = await p.serving();
  if ('code' in r) return { crashAt: plan, served: false, exit: r, killedByHarness: false };
  p.kill('SIGKILL');
  return { crashAt: plan, served: true, exit: await p.exited, killedByHarness: true };
}

/** A plain restart killed from outside after `ms`, wherever it is: opening, replaying or serving. */
async function killRestart(run: CrashRun, ms: number): Promise<DeathReport> {
  const p = run.launch();
  let killedByHarness = false;
  const timer = setTimeout(() => {
    killedByHarness = true;
    p.kill('SIGKILL');
  }, ms);
  const r = await p.serving();
  const served = !('code' in r);
  const exit = await p.exited;
  clearTimeout(timer);
  return { crashAt: undefined, served, exit, killedByHarness };
}

/** Whether a death was the crash point firing: SIGKILL, not sent by the harness. */
export function diedAtPoint(d: DeathReport): boolean {
  return d.exit.signal === 'SIGKILL' && !d.killedByHarness;
}

function describeDeath(d: DeathReport): string {
  const how = d.killedByHarness ? `still ${d.served ? 'serving' : 'starting'}, so the harness killed it` : describeExit(d.exit);
  return `${d.crashAt ? `${crashAtEnv}=${d.crashAt}` : 'outside kill'}: ${how}`;
}

export interface ExpectDeath {
  /** The first child must die by its crash point (true) or by the harness's outside kill (false). */
  readonly atPoint: boolean;
}

/**
 * The usual assertions: the first child died as planned, each recovery crash fired before serving,
 * every read after restart succeeded and matched a candidate, every verifier stopped cleanly.
 */
export function assertCrashReport(t: ExecutionContext, rep: ScenarioReport, expect: ExpectDeath): void {
  const w = rep.workload;
  t.log(
    `${rep.label}: ${w ? `${w.writes} writes (${w.writesAcked} acked), ${w.flushes} flushes (${w.flushesAcked} acked), ended ${w.end}` : 'no workload'}; ` +
      `${describeDeath(rep.first)}; ${rep.restartKill ? `restart killed ${rep.restartKill.served ? 'after it served' : 'before it served'}; ` : ''}verified ${rep.verifications.map((v) => v.blocksChecked).join(' + ')} blocks; ${rep.phases.join(', ')}`,
  );
  const context = `[${rep.label}]\n${rep.logs}`;
  if (expect.atPoint) t.true(diedAtPoint(rep.first), `crash point did not fire — ${describeDeath(rep.first)}\n${context}`);
  else t.true(rep.first.killedByHarness && rep.first.exit.signal === 'SIGKILL', `not killed from outside as planned — ${describeDeath(rep.first)}\n${context}`);
  if (w) t.deepEqual(w.liveMismatches, [], `read-back mismatches before any crash:\n${describeMismatches(w.liveMismatches)}\n${context}`);
  for (const r of rep.recoveries) t.true(diedAtPoint(r) && !r.served, `recovery crash did not fire — ${describeDeath(r)}\n${context}`);
  const k = rep.restartKill;
  if (k) t.true(k.killedByHarness && k.exit.signal === 'SIGKILL', `restart was to be killed from outside — ${describeDeath(k)}\n${context}`);
  for (const v of rep.verifications) t.is(v.mismatches.length, 0, `blocks not as flushed or later:\n${describeMismatches(v.mismatches)}\n${context}`);
  for (const e of rep.cleanStops) t.is(e.code, 0, `verifying serve ${describeExit(e)}\n${context}`);
}
