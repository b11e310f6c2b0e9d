import test from 'ava';
import { randomBytes } from 'node:crypto';
import { MemoryDevice } from '../../appliance/device/memory-device.ts';
import { ErrorCode } from '../../appliance/errors.ts';
import { decodeHeader, encodeHeader, newHeader, KeySlotState, addWrapper, removeWrapper } from '../../appliance/strip/header.ts';
import { decodeLabel, encodeLabel, type StripLabel } from '../../appliance/strip/label.ts';
import { dataOffset, headerBytes, headerOffset, keySlotsPerSection, labelBytes, slotBytesFor, stripBytesFor } from '../../appliance/strip/layout.ts';
import { decodeStatusLog, encodeStatusRecord, StatusCode } from '../../appliance/strip/status-log.ts';
import { Strip } from '../../appliance/strip/strip.ts';
import { testWrapper } from '../helpers/volumes.ts';

function label(over: Partial<StripLabel> = {}): StripLabel {
  return {
    volumeId: randomBytes(16),
    stripIndex: 1,
    m: 2,
    n: 3,
    blockBytes: 4096,
    slotBytes: slotBytesFor(4096, 2),
    slotCount: 256,
    stripBytes: stripBytesFor(256, 4096, 2),
    dataOffset,
    originId: randomBytes(16),
    createdAtMs: Date.now(),
    ...over,
  };
}

function body() {
  return {
    volumeBytes: 256 * 4096,
    epoch: 3,
    generationReserved: 99,
    staleStrips: 0b100,
    sections: [[{ state: KeySlotState.Active, serial: 1, key: randomBytes(32) }, ...Array.from({ length: keySlotsPerSection - 1 }, () => ({ state: KeySlotState.Empty, serial: 0, key: Buffer.alloc(32) }))]],
    info: { name: 'disk', createdAt: new Date().toISOString() },
  };
}

test('label round trip and every malformed label rejected with its own code', (t) => {
  const l = label();
  const buf = encodeLabel(l);
  t.is(buf.length, labelBytes);
  t.deepEqual(decodeLabel(buf), l);
  const mutate = (f: (b: Buffer) => void) => {
    const b = Buffer.from(buf);
    f(b);
    return b;
  };
  t.throws(() => decodeLabel(buf.subarray(0, 100)), { code: ErrorCode.StripTruncated } as never);
  t.throws(() => decodeLabel(Buffer.alloc(labelBytes)), { code: ErrorCode.StripBadMagic } as never);
  t.throws(() => decodeLabel(mutate((b) => b.writeUInt16BE(2, 8))), { code: ErrorCode.StripUnknownVersion } as never);
  t.throws(() => decodeLabel(mutate((b) => (b[40]! ^= 1))), { code: ErrorCode.StripChecksum } as never);
  // inconsistent fields with a valid checksum: geometry, index, slot size, slot count, offsets
  t.throws(() => encodeLabel(label({ m: 4, n: 3 })), { code: ErrorCode.StripInconsistent } as never);
  t.throws(() => encodeLabel(label({ stripIndex: 3 })), { code: ErrorCode.StripInconsistent } as never);
  t.throws(() => encodeLabel(label({ slotBytes: 100 })), { code: ErrorCode.StripInconsistent } as never);
  t.throws(() => encodeLabel(label({ blockBytes: 3000 })), { code: ErrorCode.StripInconsistent } as never);
  t.throws(() => encodeLabel(label({ slotCount: 257 })), { code: ErrorCode.StripInconsistent } as never);
  t.throws(() => encodeLabel(label({ dataOffset: 4096 })), { code: ErrorCode.StripInconsistent } as never);
});

test('header round trip; forged, truncated, foreign-key and wrong-label headers rejected', (t) => {
  const w = testWrapper();
  const labelBuf = encodeLabel(label());
  const h = newHeader(body(), [w]);
  h.sequence = 7;
  const buf = encodeHeader(labelBuf, h);
  t.is(buf.length, headerBytes);
  const back = decodeHeader(labelBuf, buf, [w]);
  t.is(back.sequence, 7);
  t.deepEqual(back.body, h.body);
  t.true(back.headerKey.equals(h.headerKey));

  t.throws(() => decodeHeader(labelBuf, buf.subarray(0, 500), [w]), { code: ErrorCode.StripTruncated } as never);
  t.throws(() => decodeHeader(labelBuf, Buffer.alloc(headerBytes), [w]), { code: ErrorCode.StripBadMagic } as never);
  t.throws(() => decodeHeader(labelBuf, buf, [testWrapper()]), { code: ErrorCode.StripNoKeyForWrapper } as never);
  t.throws(() => decodeHeader(labelBuf, buf, [{ id: w.id, key: randomBytes(32) }]), { code: ErrorCode.StripNoKeyForWrapper } as never);
  // any change to the label, the wrap slots, the sequence or the body breaks the signature
  const otherLabel = encodeLabel(label());
  t.throws(() => decodeHeader(otherLabel, buf, [w]), { code: ErrorCode.StripHeaderAuth } as never);
  for (const pos of [16, 24, 100, 1070, 1200]) {
    const forged = Buffer.from(buf);
    forged[pos]! ^= 0x40;
    t.throws(() => decodeHeader(labelBuf, forged, [w]), { code: ErrorCode.StripHeaderAuth } as never, `byte ${pos}`);
  }
  const huge = Buffer.from(buf);
  huge.writeUInt32BE(0xffffffff, 12);
  t.throws(() => decodeHeader(labelBuf, huge, [w]), { code: ErrorCode.StripTruncated } as never);
});

test('many-to-one: a header opens with any of its wrappers, and not after that wrapper is removed', (t) => {
  const [a, b] = [testWrapper(), testWrapper()];
  const labelBuf = encodeLabel(label());
  const h = newHeader(body(), [a]);
  addWrapper(h, b);
  t.is(decodeHeader(labelBuf, encodeHeader(labelBuf, h), [b]).body.epoch, 3);
  removeWrapper(h, a.id);
  const buf = encodeHeader(labelBuf, h);
  t.throws(() => decodeHeader(labelBuf, buf, [a]), { code: ErrorCode.StripNoKeyForWrapper } as never);
  t.is(decodeHeader(labelBuf, buf, [b]).body.generationReserved, 99);
});

test('a torn header write leaves the other copy; the newest valid copy wins', async (t) => {
  const w = testWrapper();
  const l = label();
  const device = new MemoryDevice(l.stripBytes + 8192);
  const strip = await Strip.format({ device, base: 4096 }, l, newHeader(body(), [w]), { zeroData: true });
  strip.header.body.generationReserved = 1234;
  await strip.writeHeader();
  t.is((await Strip.load({ device, base: 4096 }, [w])).header.body.generationReserved, 1234);
  // tear the newest copy: writeHeader wrote both, so the other copy has the same header
  const copy = strip.header.sequence % 2;
  await device.write(4096 + headerOffset + copy * headerBytes + 1100, randomBytes(64));
  const loaded = await Strip.load({ device, base: 4096 }, [w]);
  t.is(loaded.header.body.generationReserved, 1234);
  t.is(loaded.header.sequence, strip.header.sequence - 1);
  // a write torn half way (crash while writing the first copy of the next update) leaves the other
  loaded.header.body.generationReserved = 5678;
  loaded.header.sequence += 1;
  await device.write(4096 + headerOffset + (loaded.header.sequence % 2) * headerBytes, encodeHeader(loaded.labelBytes, loaded.header).subarray(0, 1100));
  t.is((await Strip.load({ device, base: 4096 }, [w])).header.body.generationReserved, 1234);
  // tear both: a typed error
  await device.write(4096 + headerOffset + (1 - copy) * headerBytes + 1100, randomBytes(64));
  await t.throwsAsync(Strip.load({ device, base: 4096 }, [w]), { code: ErrorCode.StripHeaderAuth } as never);
  // a device too small for the strip it claims
  await t.throwsAsync(Strip.load({ device: new MemoryDevice(1000), base: 0 }, [w]), { code: ErrorCode.DeviceTooSmall } as never);
});

test('status log keeps intact records in order and skips torn ones', (t) => {
  const area = Buffer.alloc(64 * 1024);
  for (let seq = 1; seq <= 5; seq++) encodeStatusRecord({ sequence: seq, atMs: 1000 + seq, code: StatusCode.Opened, arg: Buffer.alloc(0) }).copy(area, seq * 64);
  area[3 * 64 + 20]! ^= 1;
  const recs = decodeStatusLog(area);
  t.deepEqual(recs.map((r) => r.sequence), [1, 2, 4, 5]);
});
