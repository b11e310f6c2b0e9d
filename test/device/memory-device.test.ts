import test from 'ava';
import { MemoryDevice, memoryDeviceBytesMax } from '../../appliance/device/memory-device.ts';
import { ErrorCode, StripvaultError } from '../../appliance/errors.ts';
import { contractSizeBytesMin, registerDeviceContract } from './device-contract.ts';

registerDeviceContract(test, 'memory device', async () => new MemoryDevice(contractSizeBytesMin, { id: 'mem-0' }));

test('memory device sizes are bounded', (t) => {
  for (const size of [0, -1, 1.5, memoryDeviceBytesMax + 1]) {
    t.throws(() => new MemoryDevice(size), { instanceOf: StripvaultError, code: ErrorCode.InvalidArgument }, `size ${size}`);
  }
  const device = new MemoryDevice(4096, { id: 'm' });
  t.is(device.id, 'm');
  t.is(device.sizeBytes, 4096);
});
