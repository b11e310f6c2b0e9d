/**
 * Templates the crash test files share within one ava worker: prepared once on first use (each
 * geometry with the model's region filled with pattern A), removed when the file's tests end.
 */
import type test from 'ava';
import { prepareTemplate, type Geometry, type Template } from './crash-harness.ts';
import { fillA, filledRegion } from './crash-scenario.ts';

/** Volume size for geometries built with the CLI: small, the workloads touch a few MiB. */
const cliVolumeBytes = 64 * 1024 ** 2;

const prepared = new Map<string, Promise<Template>>();

/** `slots`: runs of this geometry the file lets go at once (each slot costs one appliance start to prepare). */
export function modelTemplate(g: Geometry, slots = 2): Promise<Template> {
  const key = `${g.m}-of-${g.n}/${slots}`;
  let p = prepared.get(key);
  if (p === undefined) {
    p = prepareTemplate({ geometry: g, sizeBytes: cliVolumeBytes, slots, fill: { ...filledRegion, content: fillA } });
    prepared.set(key, p);
  }
  return p;
}

/** Removes every template this worker prepared once the file's tests are done. */
export function removeTemplatesAfter(t: typeof test): void {
  t.after.always(async () => {
    for (const p of prepared.values()) await (await p.catch(() => undefined))?.remove();
    prepared.clear();
  });
}
