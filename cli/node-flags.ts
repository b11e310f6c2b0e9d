/**
 * Node options `stripvault serve` is meant to run with. `npm start` and the bin's `#!` line pass
 * them, and so does the benchmark; serve warns when started without them.
 *
 * --max-semi-space-size: V8's young generation, where the data path's short-lived objects (a
 * request, its promises, its journal and strip-write bookkeeping) live and die. With the default
 * 16 MiB a deep queue of 4 KiB writes ran about 28 scavenges a second of several milliseconds
 * each; 64 MiB makes them rarer, and each costs about the same because what survives one is the
 * same in-flight work. 4 KiB random writes at queue depth 32 went from 13.7k to 14.8k IOPS (four
 * alternating rounds, see docs/benchmarks.md); 128 was no better, 256 worse.
 */
export const serveNodeFlags: readonly string[] = ['--max-semi-space-size=64'];

/** A flag's name as V8 and Node compare them: dashes and underscores are the same. */
function flagName(arg: string): string {
  return arg.split('=')[0]!.replaceAll('_', '-');
}

/**
 * Which of serveNodeFlags this process was started without, by name: one set to another value was
 * chosen by someone and is left alone. Looks at the command line and NODE_OPTIONS.
 */
export function missingServeNodeFlags(execArgv: readonly string[] = process.execArgv, nodeOptions: string = process.env['NODE_OPTIONS'] ?? ''): string[] {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return serveNodeFlags.filter((f) => !given.has(flagName(f)));
}
