/** An appliance in a temp data dir, unsealed with the dev share, with the default COI. */
import { Appliance, type ApplianceOptions } from '../../appliance/appliance.ts';
import { silentLogger } from '../../appliance/log.ts';
import { devUnseal, ensureDefaultCoi } from '../../keymgr/dev-unseal.ts';

export async function devAppliance(dataDir: string, opts: Partial<ApplianceOptions> = {}): Promise<Appliance> {
  const appliance = await Appliance.open({ dataDir, log: silentLogger, splitWorkers: 0, ...opts });
  await devUnseal(appliance.keys, appliance.dataDir, () => undefined, { initialize: true });
  await ensureDefaultCoi(appliance.keys);
  return appliance;
}
