/**
 * Key operations that touch both the key manager's records and the volumes' strip headers:
 * presenting a volume to another COI, withdrawing it, rotating a COI's workgroup key, and
 * crypto-shredding a volume. Records change first (audited, refused if the audit log cannot be
 * written); strip headers follow online. Every step is safe to repeat after a failure part way.
 */
import { ErrorCode, fail, isStripvaultError } from './errors.ts';
import type { Appliance } from './appliance.ts';
import { Strip } from './strip/strip.ts';
import type { StripLocation } from './strip/strip.ts';
import { audited } from '../keymgr/audit.ts';
import type { Actor, ShredReport, VirtualDiskInfo, VolumeKeyOps } from '../keymgr/key-manager-api.ts';

export const shredEventKind = 'volume.shredded';

export class VirtualDisks implements VolumeKeyOps {
  readonly #appliance: Appliance;

  constructor(appliance: Appliance) {
    this.#appliance = appliance;
  }

  async presentVolume(request: { name: string; volume: string; coi: string }, actor: Actor): Promise<VirtualDiskInfo> {
    const a = this.#appliance;
    const record = await a.store.getVolume(request.volume);
    const volume = await a.openVolume(record.id);
    const wrapper = await a.keys.wrapperForCoi(request.coi);
    try {
      const info = await a.keys.presentVolume({ name: request.name, volumeId: record.id, coi: request.coi }, actor);
      await volume.addWrapper(wrapper);
      return info;
    } finally {
      wrapper.key.fill(0);
    }
  }

  async withdrawVirtualDisk(name: string, actor: Actor): Promise<void> {
    const a = this.#appliance;
    const disk = (await a.keys.listVirtualDisks()).find((d) => d.name === name);
    if (!disk) fail(ErrorCode.NotFound, `no virtual disk named "${name}"`);
    const siblings = await a.keys.listVirtualDisks({ volumeId: disk.volumeId });
    if (siblings.length <= 1) {
      fail(ErrorCode.StoreConflict, `"${name}" is the last virtual disk of volume ${disk.volumeName}: remove or shred the volume instead`);
    }
    const volume = await a.openVolume(disk.volumeId);
    // Checked before the record changes: the COI's key cannot leave a header that is out of reach.
    const away = volume.health().strips.filter((st) => st.state === 'missing' || st.state === 'failed').map((st) => st.index);
    if (away.length > 0) {
      fail(ErrorCode.VolumeUnavailable, `volume ${disk.volumeName}: strip(s) ${away.join(', ')} out of service; withdraw once they are back or rebuilt`, { strips: away });
    }
    await a.keys.withdrawVirtualDisk(name, actor);
    // The COI's keys no longer open this volume (another of its COIs still does).
    for (const id of await this.#coiKeyIds(disk.coi)) if (volume.wrapperIds().includes(id)) await volume.removeWrapper(Buffer.from(id, 'hex'));
  }

  /**
   * New workgroup key for the COI; every volume it is presented to is re-wrapped under it and the
   * old key is destroyed. A rotation interrupted part way is finished by the next call.
   */
  async rotateCoiKey(coi: string, actor: Actor): Promise<{ readonly oldKeyId: string; readonly newKeyId: string }> {
    const a = this.#appliance;
    const live = (await a.keys.listWorkgroupKeys({ coi })).filter((k) => k.state !== 'destroyed');
    const active = live.find((k) => k.state === 'active');
    // Retired keys left by an interrupted rotation: finish that one instead of starting another.
    const unfinished = live.filter((k) => k.state === 'retired');
    const rotation =
      unfinished.length > 0 && active ? { oldKeyId: unfinished[0]!.id, newKeyId: active.id } : await a.keys.rotateWorkgroupKey(coi, actor);
    await this.#finishRotation(coi, actor);
    return rotation;
  }

  /**
   * Re-wraps every volume the COI presents under its active key, then destroys its retired keys.
   * Nothing is destroyed until every presented volume is re-wrapped: a volume that cannot be opened
   * stops it (with an error), and calling again finishes it.
   */
  async #finishRotation(coi: string, actor: Actor, force = false): Promise<string[]> {
    const a = this.#appliance;
    const retired = (await a.keys.listWorkgroupKeys({ coi })).filter((k) => k.state === 'retired').map((k) => k.id);
    if (retired.length === 0) return [];
    const wrapper = await a.keys.wrapperForCoi(coi);
    try {
      for (const disk of await a.keys.listVirtualDisks({ coi })) {
        const volume = await a.openVolume(disk.volumeId);
        await volume.addWrapper(wrapper);
        for (const id of retired) if (volume.wrapperIds().includes(id)) await volume.removeWrapper(Buffer.from(id, 'hex'), { force });
      }
    } finally {
      wrapper.key.fill(0);
    }
    for (const id of retired) await a.keys.destroyWorkgroupKey(id, actor);
    return retired;
  }

  async shredVolume(name: string, actor: Actor): Promise<ShredReport> {
    const a = this.#appliance;
    const record = await a.store.getVolume(name);
    const entry = { actor: actor.name, action: 'volume.shred', subject: `volume:${record.name}`, detail: { volumeId: record.id } };
    return audited(a.audit, entry, async () => {
      // Read from the strips themselves (the wrap ids are plaintext), so a shred needs no key and
      // still works on a volume that no longer opens — e.g. a re-run after an interrupted shred.
      const locations: Array<{ index: number; loc: StripLocation | null }> = [];
      for (const s of record.strips) {
        try {
          locations.push({ index: s.index, loc: { device: await a.deviceById(s.deviceId), base: s.offsetBytes } });
        } catch (e) {
          if (!isStripvaultError(e)) throw e;
          locations.push({ index: s.index, loc: null });
        }
      }
      const inHeaders = new Set<string>();
      for (const { loc } of locations) if (loc) for (const id of await Strip.wrapperIdsAt(loc).catch(() => [])) inHeaders.add(id);
      const disks = await a.keys.listVirtualDisks({ volumeId: record.id });
      // Every COI whose keys can open this volume: those presenting it, and those whose (live) keys
      // are still in its headers — withdrawn earlier, or by an earlier, interrupted shred.
      const byId = new Map((await a.keys.listWorkgroupKeys()).map((k) => [k.id, k] as const));
      const cois = new Set(disks.map((d) => d.coi));
      for (const id of inHeaders) {
        const k = byId.get(id);
        if (k !== undefined && k.state !== 'destroyed') cois.add(k.coi);
      }
      for (const disk of disks) await a.keys.withdrawVirtualDisk(disk.name, actor);
      const destroyed: string[] = [];
      for (const coi of cois) {
        // The COI keeps serving its other volumes under a fresh key; every key of it that could
        // open this volume is destroyed once those are re-wrapped.
        const active = (await a.keys.listWorkgroupKeys({ coi })).find((k) => k.state === 'active');
        if (active !== undefined && inHeaders.has(active.id)) await a.keys.rotateWorkgroupKey(coi, actor);
        // force: a sibling's strip that is out of service right now will need a rebuild; the shred
        // does not wait for it.
        destroyed.push(...(await this.#finishRotation(coi, actor, true)));
      }
      await a.closeVolume(record.id);
      const wipe = { wiped: [] as number[], unreachable: [] as number[] };
      for (const { index, loc } of locations) {
        try {
          if (!loc) throw new Error('device unavailable');
          await Strip.wipeHeadersAt(loc);
          wipe.wiped.push(index);
        } catch {
          wipe.unreachable.push(index);
        }
      }
      await a.keys.forgetDestroyedKeys();
      await a.store.setVolumeState(record.id, 'offline');
      await a.recordEvent(shredEventKind, record.id, { name: record.name, destroyedKeyIds: destroyed, wiped: wipe.wiped, unreachable: wipe.unreachable });
      return { volumeName: record.name, destroyedKeyIds: destroyed };
    });
  }

  async verifyShred(name: string): Promise<{ readonly clean: boolean; readonly findings: readonly string[] }> {
    const a = this.#appliance;
    const record = await a.store.getVolume(name);
    const findings: string[] = [];
    const shredded = (await a.store.listEvents({ subject: record.id, limit: 1000 })).find((e) => e.kind === shredEventKind);
    if (!shredded) return { clean: false, findings: [`volume ${record.name} has not been shredded`] };
    const keyIds = (shredded.detail['destroyedKeyIds'] as string[] | undefined) ?? [];
    if (a.isVolumeOpen(record.id)) findings.push('the volume is open in this appliance (its keys are in memory)');
    for (const d of await a.keys.listVirtualDisks({ volumeId: record.id })) findings.push(`virtual disk ${d.name} still presents the volume`);
    for (const id of await a.keys.workgroupKeyMaterialPresent(keyIds)) findings.push(`workgroup key ${id} is still stored (wrapped) in the metadata store`);
    const cached = new Set(a.keys.cachedKeyIds());
    for (const id of keyIds) if (cached.has(id)) findings.push(`workgroup key ${id} is held unwrapped in memory`);
    for (const s of record.strips) {
      try {
        const device = await a.deviceById(s.deviceId);
        if (!(await Strip.headersWiped({ device, base: s.offsetBytes }))) findings.push(`strip ${s.index}: its header copies still hold wrapped keys`);
      } catch (e) {
        if (!isStripvaultError(e)) throw e;
        findings.push(`strip ${s.index}: unreachable (${e.code}), its header cannot be checked — it opens only with destroyed keys`);
      }
    }
    return { clean: findings.length === 0, findings };
  }

  async #coiKeyIds(coi: string): Promise<string[]> {
    return (await this.#appliance.keys.listWorkgroupKeys({ coi })).filter((k) => k.state !== 'destroyed').map((k) => k.id);
  }

}

