import test from 'ava';
import { createHash } from 'node:crypto';
import { FaultDevice, faultKinds } from '../../appliance/device/fault-device.ts';
import type { FaultDeviceOptions, FaultKind, FaultRecord } from '../../appliance/device/fault-device.ts';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode, StripvaultError, isStripvaultError } from '../../appliance/errors.ts';
import { assertBytes, contractSizeBytesMin, expectCode, registerDeviceContract } from './device-contract.ts';

const sizeBytes = 256 * 1024;

function setup(options: Partial<FaultDeviceOptions> = {}) {
  const inner = new MemoryDevice(sizeBytes, { id: 'inner' });
  const device = new FaultDevice(inner, { seed: 1, ...options });
  return { inner, device };
}

/** XOR of two equal-length buffers as a sorted list of differing bit indexes. */
function differingBits(a: Uint8Array, b: Uint8Array): number[] {
  const bits: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i]! ^ b[i]!;
    for (let bit = 0; bit < 8; bit++) if (x & (1 << bit)) bits.push(i * 8 + bit);
  }
  return bits;
}

registerDeviceContract(test, 'fault device without faults', async () => {
  return new FaultDevice(new MemoryDevice(contractSizeBytesMin), { seed: 99, probabilities: {} });
});

test('read, write and flush errors fail the request and are logged', async (t) => {
  const { inner, device } = setup();
  device.inject('readError');
  device.inject('writeError');
  device.inject('flushError');

  const readError = await expectCode(t, () => device.read(100, 10), ErrorCode.DeviceIo);
  t.like(readError.detail, { op: 'read', offset: 100, length: 10, errno: 'EIO', injected: true });
  t.deepEqual(await device.read(100, 10), Buffer.alloc(10), 'one-shot: the next read succeeds');

  await expectCode(t, () => device.write(0, Buffer.from('lost to an error')), ErrorCode.DeviceIo);
  t.deepEqual(await inner.read(0, 16), Buffer.alloc(16), 'a failed write never reached the device');
  await expectCode(t, () => device.flush(), ErrorCode.DeviceIo);
  await device.flush();

  t.deepEqual(
    device.faults.map((f) => [f.op, f.kind, f.cause]),
    [
      ['read', 'readError', 'trigger'],
      ['write', 'writeError', 'trigger'],
      ['flush', 'flushError', 'trigger'],
    ],
  );
  t.is(device.pendingTriggers, 0);
});

test('read corruption flips exactly the logged bits and leaves the device intact', async (t) => {
  const { inner, device } = setup({ corruptBitsMax: 6, seed: 3 });
  const data = new Prng(1).bytes(16_384);
  await inner.write(0, data);
  device.inject('readCorruption', { offset: 10_000 });

  assertBytes(t, await device.read(0, 8192), data.subarray(0, 8192), 'a read not covering the offset is clean');
  const corrupted = await device.read(8192, 8192);
  const [fault] = device.faults;
  t.like(fault, { op: 'read', kind: 'readCorruption', offset: 8192, length: 8192 });
  t.true(fault!.flippedBits!.length >= 1 && fault!.flippedBits!.length <= 6);
  t.deepEqual(differingBits(corrupted, data.subarray(8192)), fault!.flippedBits);
  assertBytes(t, await inner.read(0, 16_384), data, 'stored bytes untouched');
  assertBytes(t, await device.read(8192, 8192), data.subarray(8192), 'the next read is clean');
});

test('write corruption stores flipped bits but never touches the caller buffer', async (t) => {
  const { inner, device } = setup({ corruptBitsMax: 3 });
  const data = new Prng(2).bytes(4096);
  const original = Buffer.from(data);
  device.inject('writeCorruption');
  await device.write(4096, data);
  t.deepEqual(data, original, 'caller buffer unchanged');
  const [fault] = device.faults;
  t.like(fault, { op: 'write', kind: 'writeCorruption', offset: 4096, length: 4096 });
  t.deepEqual(differingBits(await inner.read(4096, 4096), data), fault!.flippedBits);
});

test('a misdirected write lands a whole number of alignment units away', async (t) => {
  const { inner, device } = setup({ misdirectAlignBytes: 512, seed: 8 });
  const data = new Prng(3).bytes(1000);
  device.inject('misdirectedWrite', { times: 2 });

  await device.write(8192 + 7, data);
  const random = device.faults[0]!;
  t.like(random, { op: 'write', kind: 'misdirectedWrite', offset: 8199, length: 1000 });
  const target = random.targetOffset!;
  t.not(target, 8199);
  t.is((target - 8199) % 512, 0);
  t.true(target >= 0 && target + 1000 <= sizeBytes);
  assertBytes(t, await inner.read(target, 1000), data, 'data is at the wrong place');
  if (Math.abs(target - 8199) >= 1000) {
    t.deepEqual(await inner.read(8199, 1000), Buffer.alloc(1000), 'and not at the right one');
  }

  await device.write(65_536, data);
  t.like(device.faults[1], { kind: 'misdirectedWrite', offset: 65_536 }, 'times: 2 strikes twice');
  await device.write(65_536, data);
  t.is(device.faults.length, 2, 'and then no more');
  assertBytes(t, await inner.read(65_536, 1000), data, 'the third write landed where asked');
});

test('a misdirected write can be sent to an explicit offset', async (t) => {
  const { inner, device } = setup();
  const data = new Prng(4).bytes(1000);
  device.inject('misdirectedWrite', { targetOffset: 0 });
  await device.write(131_072, data);
  t.like(device.faults, [{ kind: 'misdirectedWrite', offset: 131_072, targetOffset: 0, cause: 'trigger' }]);
  assertBytes(t, await inner.read(0, 1000), data, 'explicit target received the write');
  t.deepEqual(await inner.read(131_072, 1000), Buffer.alloc(1000));
});

test('a write that cannot land anywhere else is not misdirected and the trigger stays armed', async (t) => {
  const inner = new MemoryDevice(8192);
  const device = new FaultDevice(inner, { seed: 1, misdirectAlignBytes: 8192 });
  device.inject('misdirectedWrite');
  await device.write(0, Buffer.alloc(4096, 1));
  t.deepEqual(device.faults, []);
  t.is(device.pendingTriggers, 1);
  t.deepEqual(await inner.read(0, 4), Buffer.alloc(4, 1));
});

test('a lost write is acknowledged and never stored', async (t) => {
  const { inner, device } = setup();
  device.inject('lostWrite', { offset: 300 });
  await device.write(0, Buffer.alloc(100, 7)); // does not cover offset 300
  await device.write(250, Buffer.alloc(100, 9)); // does
  await device.flush();
  t.deepEqual(await inner.read(0, 100), Buffer.alloc(100, 7));
  t.deepEqual(await inner.read(250, 100), Buffer.alloc(100));
  t.like(device.faults, [{ op: 'write', kind: 'lostWrite', offset: 250, length: 100 }]);
});

test('delays hold the request until the sleep resolves', async (t) => {
  const sleeps: number[] = [];
  let release: () => void = () => {};
  const { device } = setup({
    delayMs: 25,
    sleep: (ms) => {
      sleeps.push(ms);
      return new Promise((resolve) => (release = resolve));
    },
  });
  device.inject('delay');
  let settled = false;
  const reading = device.read(0, 10).then((b) => {
    settled = true;
    return b;
  });
  await new Promise((resolve) => setImmediate(resolve));
  t.false(settled, 'still waiting');
  t.deepEqual(sleeps, [25]);
  release();
  t.deepEqual(await reading, Buffer.alloc(10));
  t.like(device.faults, [{ op: 'read', kind: 'delay', delayMs: 25 }]);

  device.inject('delay', { delayMs: 40 });
  const writing = device.write(0, Buffer.from('late'));
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(sleeps, [25, 40], 'a trigger can carry its own delay');
  release();
  await writing;
});

test('random delays stay within delayMsMax and really sleep', async (t) => {
  const { device } = setup({ delayMsMax: 3, probabilities: { delay: 1 } });
  for (let i = 0; i < 5; i++) await device.read(i, 1);
  t.is(device.faults.length, 5);
  for (const fault of device.faults) t.true(fault.delayMs! >= 0 && fault.delayMs! <= 3 && fault.cause === 'random');
});

test('a disappeared device fails every request until it reappears', async (t) => {
  const { device } = setup();
  await device.write(0, Buffer.from('before'));
  device.disappear();
  t.true(device.gone);
  await expectCode(t, () => device.read(0, 6), ErrorCode.DeviceGone);
  await expectCode(t, () => device.write(0, Buffer.from('during')), ErrorCode.DeviceGone);
  await expectCode(t, () => device.flush(), ErrorCode.DeviceGone);
  t.like(device.faults, [{ op: 'disappear', kind: 'gone', cause: 'manual' }]);
  device.reappear();
  t.is((await device.read(0, 6)).toString(), 'before', 'nothing was written while gone');
});

test('a device can vanish at random or by trigger, and while a request waits', async (t) => {
  const random = setup({ probabilities: { gone: 1 } }).device;
  await expectCode(t, () => random.read(0, 1), ErrorCode.DeviceGone);
  await expectCode(t, () => random.read(0, 1), ErrorCode.DeviceGone);
  t.like(random.faults, [{ op: 'read', kind: 'gone', cause: 'random' }], 'logged once, when it vanished');

  const triggered = setup().device;
  await triggered.flush();
  triggered.inject('gone');
  await expectCode(t, () => triggered.flush(), ErrorCode.DeviceGone);
  t.true(triggered.gone);

  let release: () => void = () => {};
  const waiting = setup({ delayMs: 5, sleep: () => new Promise((resolve) => (release = resolve)) }).device;
  waiting.inject('delay');
  const reading = waiting.read(0, 1);
  await new Promise((resolve) => setImmediate(resolve));
  waiting.disappear();
  release();
  await expectCode(t, () => reading, ErrorCode.DeviceGone);
});

test('bad requests are refused before any fault is drawn', async (t) => {
  const { device } = setup();
  device.inject('readError');
  await expectCode(t, () => device.read(sizeBytes, 1), ErrorCode.DeviceOutOfRange);
  t.is(device.pendingTriggers, 1);
  await expectCode(t, () => device.read(0, 1), ErrorCode.DeviceIo);
});

test('options and triggers are validated', (t) => {
  const invalid = { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument };
  const inner = new MemoryDevice(4096);
  t.throws(() => new FaultDevice(inner, { seed: 1, probabilities: { readError: 1.5 } }), invalid);
  t.throws(() => new FaultDevice(inner, { seed: 1, probabilities: { bogus: 0.1 } as Partial<Record<FaultKind, number>> }), invalid);
  t.throws(() => new FaultDevice(inner, { seed: 1, delayMs: -1 }), invalid);
  t.throws(() => new FaultDevice(inner, { seed: 1, delayMsMax: 10 ** 9 }), invalid);
  t.throws(() => new FaultDevice(inner, { seed: 1, corruptBitsMax: 0 }), invalid);
  t.throws(() => new FaultDevice(inner, { seed: 1, misdirectAlignBytes: 0 }), invalid);
  const device = new FaultDevice(inner, { seed: 1 });
  t.throws(() => device.inject('lostWrite', { times: 0 }), invalid);
  t.throws(() => device.inject('lostWrite', { offset: 4096 }), { instanceOf: StripvaultError, code: ErrorCode.DeviceOutOfRange });
  t.throws(() => device.setProbabilities({ writeError: -0.1 }), invalid);
});

interface WorkloadResult {
  faults: FaultRecord[];
  outcomes: string[];
  contentsSha256: string;
  /** Requests whose effect differed from what the fault log explains (must stay empty). */
  unexplained: string[];
}

function flip(data: Uint8Array, bits: readonly number[] | undefined): Buffer {
  const copy = Buffer.from(data);
  for (const bit of bits ?? []) copy[bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

/**
 * A fixed mix of requests against a device faulting at random; GONE is answered by reappear().
 * Alongside, a model replays each request as the fault log says it went, and every read and
 * the whole device after every write are checked against it: the log must tell the whole truth.
 */
async function runWorkload(seed: number): Promise<WorkloadResult> {
  const inner = new MemoryDevice(sizeBytes);
  const probabilities = Object.fromEntries(faultKinds.map((k) => [k, k === 'gone' ? 0.01 : 0.04]));
  const device = new FaultDevice(inner, { seed, probabilities, delayMsMax: 1, corruptBitsMax: 4, misdirectAlignBytes: 4096 });
  const ops = new Prng(1234); // the same requests for every seed
  const model = Buffer.alloc(sizeBytes);
  const outcomes: string[] = [];
  const unexplained: string[] = [];
  for (let i = 0; i < 600; i++) {
    const choice = ops.nextInt(10);
    const length = ops.nextIntBetween(1, 3 * 4096);
    const offset = ops.nextInt(sizeBytes - length + 1);
    const data = ops.bytes(length);
    const logged = device.faults.length;
    const faultsOf = () => new Map(device.faults.slice(logged).map((f) => [f.kind, f]));
    try {
      if (choice < 5) {
        await device.write(offset, data);
        const f = faultsOf();
        if (!f.has('lostWrite')) {
          const target = f.get('misdirectedWrite')?.targetOffset ?? offset;
          flip(data, f.get('writeCorruption')?.flippedBits).copy(model, target);
        }
        if (!(await inner.read(0, sizeBytes)).equals(model)) unexplained.push(`write #${i}`);
      } else if (choice < 9) {
        const got = await device.read(offset, length);
        const expected = flip(model.subarray(offset, offset + length), faultsOf().get('readCorruption')?.flippedBits);
        if (!got.equals(expected)) unexplained.push(`read #${i}`);
      } else {
        await device.flush();
      }
      outcomes.push('ok');
    } catch (e) {
      if (!isStripvaultError(e)) throw e;
      outcomes.push(`${e.code}@${String(e.detail?.['seq'])}`);
      if (e.code === ErrorCode.DeviceGone) device.reappear();
    }
  }
  const contentsSha256 = createHash('sha256').update(await inner.read(0, sizeBytes)).digest('hex');
  return { faults: device.faults, outcomes, contentsSha256, unexplained };
}

test('the same seed and requests give the same faults, outcomes and bytes', async (t) => {
  const first = await runWorkload(5);
  const second = await runWorkload(5);
  t.deepEqual(second.faults, first.faults);
  t.deepEqual(second.outcomes, first.outcomes);
  t.is(second.contentsSha256, first.contentsSha256);
  t.deepEqual(first.unexplained, [], 'every effect on the data is explained by the fault log');

  const kindsSeen = new Set(first.faults.map((f) => f.kind));
  t.deepEqual([...faultKinds].filter((k) => !kindsSeen.has(k)), [], 'the workload exercised every kind');

  // Every failing fault surfaced as an error on exactly its request, and no other request failed.
  const failing = first.faults.filter((f) => f.kind === 'gone' || f.kind.endsWith('Error'));
  const failed = first.outcomes.filter((o) => o !== 'ok');
  t.deepEqual(
    failed,
    failing.map((f) => `${f.kind === 'gone' ? ErrorCode.DeviceGone : ErrorCode.DeviceIo}@${f.seq}`),
  );

  const other = await runWorkload(6);
  t.notDeepEqual(other.faults, first.faults, 'another seed gives other faults');
});

test('close waits for a delayed request instead of cutting it off', async (t) => {
  let release: () => void = () => {};
  const { device } = setup({ delayMs: 5, sleep: () => new Promise((resolve) => (release = resolve)) });
  device.inject('delay');
  const writing = device.write(0, Buffer.from('in flight'));
  await new Promise((resolve) => setImmediate(resolve));
  let closed = false;
  const closing = device.close().then(() => (closed = true));
  await new Promise((resolve) => setImmediate(resolve));
  t.false(closed, 'close is waiting');
  await expectCode(t, () => device.read(0, 1), ErrorCode.DeviceClosed);
  release();
  await t.notThrowsAsync(writing);
  await closing;
  t.true(closed);
});
