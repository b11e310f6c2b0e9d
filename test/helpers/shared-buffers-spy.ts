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

/**
 * Takes every buffer the process-wide pool keeps (other tests leave some), so what a test gives
 * back is kept whatever came before; they go back when the test ends.
 */
export function drainSharedBuffers(t: ExecutionContext): void {
  const held: Buffer[] = [];
  for (let size = 64 * 1024; size <= 16 * 1024 * 1024; size *= 2) {
    for (;;) {
      const kept = sharedBuffers.keptBytes;
      const b = sharedBuffers.take(size);
      held.push(b);
      if (sharedBuffers.keptBytes === kept) break;
    }
  }
  t.is(sharedBuffers.keptBytes, 0);
  t.teardown(() => {
    for (const b of held) sharedBuffers.give(b);
  });
}

/** Whether any buffer the pool keeps in the size class of `bytes` holds `probe`, as the next takers would get them. */
export function poolHolds(probe: Uint8Array, bytes: number): boolean {
  const seen: Buffer[] = [];
  let found = false;
  for (;;) {
    const kept = sharedBuffers.keptBytes;
    const b = sharedBuffers.take(bytes);
    seen.push(b);
    if (b.indexOf(probe) >= 0) found = true;
    if (sharedBuffers.keptBytes === kept) break;
  }
  for (const b of seen) sharedBuffers.give(b);
  return found;
}
