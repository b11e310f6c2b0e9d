import { setTimeout as sleepMs } from 'node:timers/promises';
import { ErrorCode, fail } from '../errors.ts';
import type { StorageDevice } from './device.ts';
import { checkIoRange } from './io-range.ts';
import { Prng } from './prng.ts';

/**
 * Every fault the wrapper can inject. Error kinds fail the request without touching the inner
 * device; corruption, misdirection and loss succeed silently — those are the ones the volume
 * layer must catch by itself.
 */
export const faultKinds = [
  'gone',
  'delay',
  'readError',
  'writeError',
  'flushError',
  'readCorruption',
  'writeCorruption',
  'misdirectedWrite',
  'lostWrite',
] as const;
export type FaultKind = (typeof faultKinds)[number];
export type FaultOp = 'read' | 'write' | 'flush';

/** Which kinds can strike which operation, in the fixed order the PRNG is consulted. */
const kindsByOp: Readonly<Record<FaultOp, readonly FaultKind[]>> = {
  read: ['gone', 'delay', 'readError', 'readCorruption'],
  write: ['gone', 'delay', 'writeError', 'lostWrite', 'misdirectedWrite', 'writeCorruption'],
  flush: ['gone', 'delay', 'flushError'],
};

/** Longest injectable delay: beyond it a test is hanging, not being slow. */
export const faultDelayMsMax = 60_000;
const delayMsMaxDefault = 10;
const corruptBitsMaxDefault = 1;
const misdirectAlignBytesDefault = 4096;

export interface FaultDeviceOptions {
  /** Same seed and same sequence of requests (in call order) give the same faults. */
  seed: number | bigint;
  /** Defaults to the inner device's id. */
  id?: string;
  /** Per-request probability of each kind, in [0, 1]; absent kinds never strike at random. */
  probabilities?: Partial<Record<FaultKind, number>>;
  /** A delay lasts exactly this long; otherwise it is uniform in [0, delayMsMax]. */
  delayMs?: number;
  delayMsMax?: number;
  /** A corruption flips between 1 and this many distinct bits (default 1). */
  corruptBitsMax?: number;
  /** A misdirected write moves by a non-zero multiple of this many bytes (default 4096). */
  misdirectAlignBytes?: number;
  /** How delays wait; tests replace it to observe delays without measuring time. */
  sleep?: (ms: number) => Promise<void>;
}

/** An explicit fault armed by `inject`: it strikes the next matching requests. */
export interface FaultTrigger {
  /** How many requests it strikes (default 1). */
  times?: number;
  /** Strike only requests whose byte range contains this offset (never a flush). */
  offset?: number;
  /** For 'delay': this long instead of the device's delay setting. */
  delayMs?: number;
  /** For 'misdirectedWrite': land here instead of at a random aligned offset. */
  targetOffset?: number;
}

export interface FaultRecord {
  /** Sequence number of the request (1-based, in call order) or of the disappear() call. */
  readonly seq: number;
  readonly op: FaultOp | 'disappear';
  readonly kind: FaultKind;
  /** The request's offset and length as the caller gave them. */
  readonly offset: number;
  readonly length: number;
  readonly cause: 'random' | 'trigger' | 'manual';
  readonly delayMs?: number;
  /** Bit indexes within the request's data (byte = i >> 3, bit = i & 7). */
  readonly flippedBits?: readonly number[];
  /** Where a misdirected write really landed. */
  readonly targetOffset?: number;
}

interface ArmedTrigger extends FaultTrigger {
  readonly kind: FaultKind;
  remaining: number;
}

/** What one request will suffer, decided synchronously at call time so concurrency cannot reorder draws. */
interface Plan {
  delayMs: number | undefined;
  error: FaultKind | undefined;
  lost: boolean;
  targetOffset: number | undefined;
  flippedBits: number[] | undefined;
}

/**
 * A seeded, reproducible fault-injecting wrapper around any StorageDevice, for tests. Every
 * injected fault is appended to `faults`, so a test can check that each one was noticed.
 */
export class FaultDevice implements StorageDevice {
  readonly id: string;
  readonly sizeBytes: number;
  readonly inner: StorageDevice;
  /** Every fault injected so far, in request order. */
  readonly faults: FaultRecord[] = [];
  readonly #prng: Prng;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #delayMs: number | undefined;
  readonly #delayMsMax: number;
  readonly #corruptBitsMax: number;
  readonly #misdirectAlignBytes: number;
  #probabilities: Partial<Record<FaultKind, number>> = {};
  #triggers: ArmedTrigger[] = [];
  readonly #inFlight = new Set<Promise<unknown>>();
  #seq = 0;
  #gone = false;
  #closed = false;

  constructor(inner: StorageDevice, options: FaultDeviceOptions) {
    this.inner = inner;
    this.id = options.id ?? inner.id;
    this.sizeBytes = inner.sizeBytes;
    this.#prng = new Prng(options.seed);
    this.#sleep = options.sleep ?? ((ms) => sleepMs(ms));
    if (options.delayMs !== undefined) checkDelayMs(this.id, options.delayMs);
    this.#delayMs = options.delayMs;
    this.#delayMsMax = checkDelayMs(this.id, options.delayMsMax ?? delayMsMaxDefault);
    this.#corruptBitsMax = checkPositiveInteger(
      this.id,
      'corruptBitsMax',
      options.corruptBitsMax ?? corruptBitsMaxDefault,
    );
    this.#misdirectAlignBytes = checkPositiveInteger(
      this.id,
      'misdirectAlignBytes',
      options.misdirectAlignBytes ?? misdirectAlignBytesDefault,
    );
    this.setProbabilities(options.probabilities ?? {});
  }

  /** Replaces the random fault probabilities (e.g. write clean data first, then turn faults on). */
  setProbabilities(probabilities: Partial<Record<FaultKind, number>>): void {
    for (const [kind, p] of Object.entries(probabilities)) {
      checkKind(this.id, kind);
      if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
        fail(ErrorCode.InvalidArgument, `fault device ${this.id}: probability of ${kind} must be in [0, 1]`, {
          device: this.id,
          kind,
          p,
        });
      }
    }
    this.#probabilities = { ...probabilities };
  }

  /** Arms a one-shot (or `times`-shot) fault for the next matching requests. */
  inject(kind: FaultKind, trigger: FaultTrigger = {}): void {
    checkKind(this.id, kind);
    const times = checkPositiveInteger(this.id, 'times', trigger.times ?? 1);
    if (trigger.delayMs !== undefined) checkDelayMs(this.id, trigger.delayMs);
    if (trigger.offset !== undefined) checkIoRange(this.id, this.sizeBytes, trigger.offset, 1);
    if (trigger.targetOffset !== undefined) checkIoRange(this.id, this.sizeBytes, trigger.targetOffset, 0);
    this.#triggers.push({ ...trigger, kind, remaining: times });
  }

  /** Faults armed by `inject` that have not struck yet. */
  get pendingTriggers(): number {
    return this.#triggers.reduce((n, t) => n + t.remaining, 0);
  }

  /** The device vanishes: every later request throws SV_DEVICE_GONE until `reappear()`. */
  disappear(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.faults.push({ seq: ++this.#seq, op: 'disappear', kind: 'gone', offset: 0, length: 0, cause: 'manual' });
  }

  reappear(): void {
    this.#gone = false;
  }

  get gone(): boolean {
    return this.#gone;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#track(this.#read(offset, length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#track(this.#write(offset, data));
  }

  flush(): Promise<void> {
    return this.#track(this.#flush());
  }

  /** Waits for requests already started (delayed ones included), then closes the inner device. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    await this.inner.close();
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inFlight.add(p);
    const forget = () => this.#inFlight.delete(p);
    p.then(forget, forget);
    return p;
  }

  async #read(offset: number, length: number): Promise<Buffer> {
    const { seq, plan } = this.#begin('read', offset, length);
    await this.#delayAndFail('read', seq, offset, length, plan);
    const data = Buffer.from(await this.inner.read(offset, length));
    if (plan.flippedBits !== undefined) flipBits(data, plan.flippedBits);
    return data;
  }

  async #write(offset: number, data: Uint8Array): Promise<void> {
    const { seq, plan } = this.#begin('write', offset, data.length);
    await this.#delayAndFail('write', seq, offset, data.length, plan);
    if (plan.lost) return;
    let bytes = data;
    if (plan.flippedBits !== undefined) {
      // A copy: corrupting the caller's buffer would make the fault visible where a real one is not.
      bytes = Buffer.from(data);
      flipBits(bytes, plan.flippedBits);
    }
    await this.inner.write(plan.targetOffset ?? offset, bytes);
  }

  async #flush(): Promise<void> {
    const { seq, plan } = this.#begin('flush', 0, 0);
    await this.#delayAndFail('flush', seq, 0, 0, plan);
    await this.inner.flush();
  }

  /** Validates the request, then draws its faults in a fixed order and logs them. */
  #begin(op: FaultOp, offset: number, length: number): { seq: number; plan: Plan } {
    if (this.#closed) fail(ErrorCode.DeviceClosed, `device ${this.id} is closed`, { device: this.id });
    if (op !== 'flush') checkIoRange(this.id, this.sizeBytes, offset, length);
    const seq = ++this.#seq;
    this.#throwIfGone(op, seq, offset, length);

    // Draw for every kind, struck or not, so one fault never shifts the stream for the next.
    const struck = new Map<FaultKind, { cause: 'random' | 'trigger'; trigger: ArmedTrigger | undefined }>();
    for (const kind of kindsByOp[op]) {
      const random = this.#prng.chance(this.#probabilities[kind] ?? 0);
      const trigger = this.#triggers.find((t) => t.kind === kind && matches(t, op, offset, length));
      if (trigger !== undefined) struck.set(kind, { cause: 'trigger', trigger });
      else if (random) struck.set(kind, { cause: 'random', trigger: undefined });
    }

    const plan: Plan = {
      delayMs: undefined,
      error: undefined,
      lost: false,
      targetOffset: undefined,
      flippedBits: undefined,
    };
    const record = (kind: FaultKind, extra: Partial<FaultRecord> = {}): void => {
      const hit = struck.get(kind);
      if (hit === undefined) return;
      if (hit.trigger !== undefined) this.#consume(hit.trigger);
      this.faults.push({ seq, op, kind, offset, length, cause: hit.cause, ...extra });
    };

    if (struck.has('gone')) {
      record('gone');
      this.#gone = true;
      this.#throwIfGone(op, seq, offset, length);
    }
    const delay = struck.get('delay');
    if (delay !== undefined) {
      plan.delayMs = delay.trigger?.delayMs ?? this.#delayMs ?? this.#prng.nextIntBetween(0, this.#delayMsMax);
      record('delay', { delayMs: plan.delayMs });
    }
    const errorKind = (['readError', 'writeError', 'flushError'] as const).find((k) => struck.has(k));
    if (errorKind !== undefined) {
      plan.error = errorKind;
      record(errorKind);
      return { seq, plan };
    }
    if (struck.has('lostWrite')) {
      plan.lost = true;
      record('lostWrite');
      return { seq, plan };
    }
    const misdirect = struck.get('misdirectedWrite');
    if (misdirect !== undefined) {
      const target = misdirect.trigger?.targetOffset ?? this.#misdirectTarget(offset, length);
      // Not applicable (nowhere else to land): the fault does not strike and an armed trigger stays armed.
      if (target !== undefined && target !== offset && target + length <= this.sizeBytes) {
        plan.targetOffset = target;
        record('misdirectedWrite', { targetOffset: target });
      }
    }
    const corruption = (['readCorruption', 'writeCorruption'] as const).find((k) => struck.has(k));
    if (corruption !== undefined && length > 0) {
      plan.flippedBits = this.#pickBits(length);
      record(corruption, { flippedBits: plan.flippedBits });
    }
    return { seq, plan };
  }

  async #delayAndFail(op: FaultOp, seq: number, offset: number, length: number, plan: Plan): Promise<void> {
    if (plan.delayMs !== undefined && plan.delayMs > 0) await this.#sleep(plan.delayMs);
    // The device may have vanished while this request waited.
    this.#throwIfGone(op, seq, offset, length);
    if (plan.error !== undefined) {
      fail(ErrorCode.DeviceIo, `device ${this.id}: injected ${op} error`, {
        device: this.id,
        op,
        offset,
        length,
        seq,
        errno: 'EIO',
        injected: true,
      });
    }
  }

  #throwIfGone(op: FaultOp, seq: number, offset: number, length: number): void {
    if (this.#gone) {
      fail(ErrorCode.DeviceGone, `device ${this.id} has disappeared`, { device: this.id, op, offset, length, seq });
    }
  }

  #consume(trigger: ArmedTrigger): void {
    trigger.remaining -= 1;
    if (trigger.remaining === 0) this.#triggers = this.#triggers.filter((t) => t !== trigger);
  }

  /** A different offset, shifted by a whole number of alignment units, where the write still fits. */
  #misdirectTarget(offset: number, length: number): number | undefined {
    const align = this.#misdirectAlignBytes;
    const kMin = -Math.floor(offset / align);
    const kMax = Math.floor((this.sizeBytes - length - offset) / align);
    if (kMin === kMax) return undefined;
    let k = this.#prng.nextIntBetween(kMin, kMax - 1);
    if (k >= 0) k += 1;
    return offset + k * align;
  }

  #pickBits(length: number): number[] {
    const bitCount = length * 8;
    const count = this.#prng.nextIntBetween(1, Math.min(this.#corruptBitsMax, bitCount));
    const bits = new Set<number>();
    while (bits.size < count) bits.add(this.#prng.nextInt(bitCount));
    return [...bits].sort((a, b) => a - b);
  }
}

function matches(trigger: ArmedTrigger, op: FaultOp, offset: number, length: number): boolean {
  if (trigger.offset === undefined) return true;
  return op !== 'flush' && offset <= trigger.offset && trigger.offset < offset + length;
}

function flipBits(data: Uint8Array, bits: readonly number[]): void {
  for (const bit of bits) data[bit >> 3]! ^= 1 << (bit & 7);
}

function checkKind(id: string, kind: string): asserts kind is FaultKind {
  if (!(faultKinds as readonly string[]).includes(kind)) {
    fail(ErrorCode.InvalidArgument, `fault device ${id}: unknown fault kind ${kind}`, { device: id, kind });
  }
}

function checkDelayMs(id: string, ms: number): number {
  if (!Number.isInteger(ms) || ms < 0 || ms > faultDelayMsMax) {
    fail(ErrorCode.InvalidArgument, `fault device ${id}: delay ${ms} ms outside [0, ${faultDelayMsMax}]`, {
      device: id,
      ms,
    });
  }
  return ms;
}

function checkPositiveInteger(id: string, name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    fail(ErrorCode.InvalidArgument, `fault device ${id}: ${name} must be a positive integer`, {
      device: id,
      [name]: value,
    });
  }
  return value;
}
