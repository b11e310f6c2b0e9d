import type { ExecutionContext } from 'ava';
import { sharedBuffers } from '../../appliance/split/shared-buffers.ts';

/** Records which memory the process-wide pool hands out and takes back, for the length of a test. */
export function spyOnSharedBuffers(t: ExecutionContext): { taken: SharedArrayBuffer[]; given: SharedArrayBuffer[] } {
  const taken: SharedArrayBuffer[] = [];
  const given: SharedArrayBuffer[] = [];
  const take = sharedBuffers.take.bind(sharedBuffers);
  const give = sharedBuffers.give.bind(sharedBuffers);
  sharedBuffers.take = (bytes: number): Buffer => {
    const b = take(bytes);
    taken.push(b.buffer as SharedArrayBuffer);
    return b;
  };
  sharedBuffers.give = (b: Buffer): void => {
    given.push(b.buffer as SharedArrayBuffer);
    give(b);
  };
  t.teardown(() => {
    Reflect.deleteProperty(sharedBuffers, 'take');
    Reflect.deleteProperty(sharedBuffers, 'give');
  });
  return { taken, given };
}
