/**
 * The behaviour every StorageDevice owes the volume layer, as one ava suite that each device
 * test file registers against its own device. Not a test file itself (no .test.ts).
 */
import type { ExecutionContext, TestFn } from 'ava';
import type { StorageDevice } from '../../appliance/device/device.ts';
import { ioBytesMax } from '../../appliance/device/io-range.ts';
import { Prng } from '../../appliance/device/prng.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import type { ErrorCode as ErrorCodeType } from '../../appliance/errors.ts';

/** Each test gets a device that reads all zeros, at least `contractSizeBytesMin` long. */
export type OpenFreshDevice = () => Promise<StorageDevice>;

export const contractSizeBytesMin = 1024 * 1024;

export async function expectCode(
  t: ExecutionContext,
  run: () => Promise<unknown>,
  code: ErrorCodeType,
): Promise<StripvaultError> {
  const error = await t.throwsAsync(run, { instanceOf: StripvaultError, code });
  return error as StripvaultError;
}

/** Byte equality that stays fast on megabytes (ava's deepEqual does not) and names the first difference. */
export function assertBytes(t: ExecutionContext, actual: Uint8Array, expected: Uint8Array, label: string): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  if (a.equals(expected)) {
    t.pass(label);
    return;
  }
  let i = 0;
  while (i < Math.min(a.length, expected.length) && a[i] === expected[i]) i++;
  t.fail(`${label}: lengths ${a.length}/${expected.length}, first difference at byte ${i}`);
}

/** Registers the contract as serial tests (a shared block device must not see two at once). */
export function registerDeviceContract(test: TestFn, name: string, openFresh: OpenFreshDevice): void {
  const withDevice = (title: string, body: (t: ExecutionContext, device: StorageDevice) => Promise<void>) => {
    test.serial(`${name}: ${title}`, async (t) => {
      const device = await openFresh();
      try {
        t.true(device.sizeBytes >= contractSizeBytesMin, 'device large enough for the contract');
        await body(t, device);
      } finally {
        await device.close();
      }
    });
  };

  withDevice('round trips at odd offsets and lengths, overlaps included', async (t, device) => {
    const size = device.sizeBytes;
    const model = Buffer.alloc(size);
    const prng = new Prng(7);
    const extents: Array<[number, number]> = [
      [0, 1],
      [1, 3],
      [511, 2],
      [4095, 4097],
      [6000, 100], // overlaps the previous write
      [65_537, 65_535],
      [123_457, 300_001],
      [size - 4096, 4096],
      [size - 1, 1],
    ];
    for (const [offset, length] of extents) {
      const data = prng.bytes(length);
      await device.write(offset, data);
      data.copy(model, offset);
    }
    await device.flush();
    for (const [offset, length] of extents) {
      assertBytes(t, await device.read(offset, length), model.subarray(offset, offset + length), `extent ${offset}+${length}`);
    }
    // Unaligned reads that straddle written and never-written bytes.
    assertBytes(t, await device.read(4000, 10_000), model.subarray(4000, 14_000), 'straddling read');
    assertBytes(t, await device.read(0, size), model, 'whole device');
  });

  withDevice('zero-length requests are no-ops, even at the very end', async (t, device) => {
    t.is((await device.read(device.sizeBytes, 0)).length, 0);
    await device.write(device.sizeBytes, new Uint8Array(0));
    await device.write(0, new Uint8Array(0));
    t.is((await device.read(0, 16)).length, 16);
  });

  withDevice('concurrent requests to disjoint regions all land', async (t, device) => {
    const prng = new Prng(11);
    const strideBytes = 40_009;
    const chunks = Array.from({ length: 16 }, (_, i) => ({ offset: i * strideBytes + 3, data: prng.bytes(10_007) }));
    await Promise.all(chunks.map((c) => device.write(c.offset, c.data)));
    const back = await Promise.all(chunks.map((c) => device.read(c.offset, c.data.length)));
    chunks.forEach((c, i) => assertBytes(t, back[i]!, c.data, `chunk ${i}`));
  });

  withDevice('buffers are not shared with the caller', async (t, device) => {
    const data = Buffer.from('stripvault owns its bytes');
    await device.write(100, data);
    data.fill(0);
    const first = await device.read(100, data.length);
    first.fill(0xff);
    t.is((await device.read(100, data.length)).toString(), 'stripvault owns its bytes');
  });

  withDevice('requests outside the device are refused', async (t, device) => {
    const size = device.sizeBytes;
    await expectCode(t, () => device.read(size, 1), ErrorCode.DeviceOutOfRange);
    await expectCode(t, () => device.read(size - 1, 2), ErrorCode.DeviceOutOfRange);
    await expectCode(t, () => device.read(-1, 1), ErrorCode.DeviceOutOfRange);
    await expectCode(t, () => device.write(size - 2, new Uint8Array(3)), ErrorCode.DeviceOutOfRange);
    await expectCode(t, () => device.write(size + 4096, new Uint8Array(0)), ErrorCode.DeviceOutOfRange);
    await expectCode(t, () => device.read(1.5, 1), ErrorCode.InvalidArgument);
    await expectCode(t, () => device.read(0, Number.NaN), ErrorCode.InvalidArgument);
    await expectCode(t, () => device.read(0, -1), ErrorCode.InvalidArgument);
    await expectCode(t, () => device.read(0, ioBytesMax + 1), ErrorCode.InvalidArgument);
    // A refused write must not have touched the last bytes.
    t.deepEqual(await device.read(size - 2, 2), Buffer.alloc(2));
  });

  withDevice('a closed device refuses everything, and closing twice is fine', async (t, device) => {
    await device.write(0, Buffer.from('x'));
    await device.close();
    await device.close();
    await expectCode(t, () => device.read(0, 1), ErrorCode.DeviceClosed);
    await expectCode(t, () => device.write(0, Buffer.from('y')), ErrorCode.DeviceClosed);
    await expectCode(t, () => device.flush(), ErrorCode.DeviceClosed);
  });
}
