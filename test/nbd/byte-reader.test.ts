import { PassThrough } from 'node:stream';
import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import { ByteReader } from '../../appliance/nbd/byte-reader.ts';

test('frames are reassembled across chunk boundaries', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s, 1024);
  s.write(Buffer.from([1, 2]));
  s.write(Buffer.from([3, 4, 5]));
  t.deepEqual([...(await r.read(4))], [1, 2, 3, 4]);
  s.write(Buffer.from([6]));
  t.deepEqual([...(await r.read(2))], [5, 6]);
  t.is((await r.read(0)).length, 0);
});

test('holds at most the read-ahead bound (plus one chunk) when nobody reads', async (t) => {
  const s = new PassThrough({ highWaterMark: 64 });
  const r = new ByteReader(s, 256);
  let accepted = 0;
  for (let i = 0; i < 100; i++) {
    if (s.write(Buffer.alloc(64))) accepted++;
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.true(r.bufferedBytes <= 256 + 64, `buffered ${r.bufferedBytes}`);
  t.true(s.isPaused());
  // the writer side saw back-pressure instead of the reader growing
  t.true(accepted < 100);
  await r.read(256);
  t.false(s.isPaused());
});

test('a large frame is collected even though it exceeds the read-ahead bound', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s, 16);
  const p = r.read(1000);
  for (let i = 0; i < 10; i++) s.write(Buffer.alloc(100, i));
  const b = await p;
  t.is(b.length, 1000);
  t.is(b[999], 9);
});

test('end of stream fails a read that cannot complete, but whole frames already buffered are served', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s);
  s.end(Buffer.from([1, 2, 3]));
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual([...(await r.read(2))], [1, 2]);
  const e = await t.throwsAsync(r.read(2));
  t.true(isStripvaultError(e, ErrorCode.NbdConnectionClosed));
});

test('stop() fails the pending read and drops later input', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s);
  const p = r.read(10);
  r.stop('done');
  const e = await t.throwsAsync(p);
  t.true(isStripvaultError(e, ErrorCode.NbdConnectionClosed));
  s.write(Buffer.alloc(100));
  await new Promise((resolve) => setImmediate(resolve));
  t.is(r.bufferedBytes, 0);
});

test('detach hands back what was read ahead', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s);
  s.write(Buffer.from([1, 2, 3]));
  t.deepEqual([...(await r.read(1))], [1]);
  t.deepEqual([...r.detach()], [2, 3]);
});

test('a read into a destination fills exactly the buffer it makes, whether the bytes are buffered or still arriving', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s, 1 << 20);
  const made: Buffer[] = [];
  const into = (n: number) => {
    const b = Buffer.from(new SharedArrayBuffer(n));
    made.push(b);
    return b;
  };
  // Buffered already, inside one chunk: still copied into the destination.
  s.write(Buffer.from('abcdefgh'));
  await new Promise((res) => setImmediate(res));
  const first = await r.read(3, into);
  t.is(first, made[0]!);
  t.is(first.toString(), 'abc');
  // Spanning chunks that arrive after the read is asked for.
  const pending = r.read(9, into);
  s.write(Buffer.from('ij'));
  s.write(Buffer.from('klmn'));
  const second = await pending;
  t.is(second, made[1]!);
  t.true(second.buffer instanceof SharedArrayBuffer);
  t.is(second.toString(), 'defghijkl');
  t.is((await r.read(2)).toString(), 'mn', 'what is left is read as before');
  t.is((await r.read(0, into)).length, 0);
});

test('readNow takes a frame that is already here, and takes nothing when it is not', async (t) => {
  const s = new PassThrough();
  const r = new ByteReader(s, 1024);
  t.is(r.readNow(1), undefined, 'nothing buffered yet');
  s.write(Buffer.from([1, 2, 3]));
  await new Promise((resolve) => setImmediate(resolve));
  t.is(r.readNow(4), undefined, 'three bytes are not a four-byte frame');
  t.is(r.bufferedBytes, 3, 'and none were consumed');
  let made = 0;
  const into = (n: number): Buffer => (made++, Buffer.alloc(n));
  t.deepEqual([...r.readNow(2, into)!], [1, 2]);
  t.is(made, 1, 'the destination is made only for a frame that is here');
  t.is(r.readNow(2, into), undefined);
  t.is(made, 1);
  const later = r.read(2);
  s.write(Buffer.from([4]));
  t.deepEqual([...(await later)], [3, 4], 'read() picks up where readNow left off');
  t.is(r.readNow(0)!.length, 0);
  r.stop('done');
  t.is(r.readNow(1), undefined);
  await t.throwsAsync(r.read(1), { code: ErrorCode.NbdConnectionClosed } as never);
});
