import test from 'ava';
import { ErrorCode, isStripvaultError } from '../../appliance/errors.ts';
import {
  decodeChunkHeader,
  decodeChunkPayload,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextReply,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeRequest,
  decodeServerReply,
  decodeSimpleReply,
  decodeString,
  encodeBlockStatusChunk,
  encodeClientFlags,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeNoneChunk,
  encodeOffsetDataChunk,
  encodeOffsetHoleChunk,
  encodeOptionReply,
  encodeOptionRequest,
  encodeRequest,
  encodeServerReply,
  encodeSimpleReply,
  replyHeaderBytes,
  truncateText,
} from '../../appliance/nbd/codec.ts';
import type { ChunkPayload } from '../../appliance/nbd/codec.ts';
import {
  ChunkType,
  Command,
  HandshakeFlag,
  InfoType,
  NbdErrno,
  Option,
  Reply,
  ReplyFlag,
  optionReplyHeaderBytes,
  stringBytesMax,
  structuredReplyHeaderBytes,
} from '../../appliance/nbd/protocol.ts';

const protocolError = { instanceOf: Error } as const;

function throwsProtocol(t: import('ava').ExecutionContext, fn: () => unknown, message?: RegExp): void {
  const e = t.throws(fn, protocolError);
  t.true(isStripvaultError(e, ErrorCode.NbdProtocol), `expected SV_NBD_PROTOCOL, got ${String(e)}`);
  if (message !== undefined) t.regex(e?.message ?? '', message);
}

/** Splits an encoded chunk into header and payload, as a receiver would. */
function chunk(parts: Buffer | Buffer[]): { header: ReturnType<typeof decodeChunkHeader>; payload: ChunkPayload } {
  const b = Buffer.concat(Array.isArray(parts) ? parts : [parts]);
  const header = decodeChunkHeader(b.subarray(0, structuredReplyHeaderBytes));
  const body = b.subarray(structuredReplyHeaderBytes);
  return { header, payload: decodeChunkPayload(header.type, body) };
}

test('greeting: wire bytes match the spec and round-trip', (t) => {
  const g = encodeGreeting(HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes);
  t.is(g.toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
  t.deepEqual(decodeGreeting(g), { handshakeFlags: 3 });
  t.is(decodeClientFlags(encodeClientFlags(3)), 3);
});

test('greeting: oldstyle, wrong magic and short input are refused', (t) => {
  const oldstyle = Buffer.alloc(18);
  oldstyle.writeBigUInt64BE(0x4e42444d41474943n, 0);
  oldstyle.writeBigUInt64BE(0x00420281861253n, 8);
  throwsProtocol(t, () => decodeGreeting(oldstyle), /IHAVEOPT/);
  throwsProtocol(t, () => decodeGreeting(Buffer.alloc(18)), /NBDMAGIC/);
  throwsProtocol(t, () => decodeGreeting(Buffer.alloc(17)));
  throwsProtocol(t, () => decodeClientFlags(Buffer.alloc(3)));
});

test('option request and reply headers round-trip', (t) => {
  const data = Buffer.from('hello');
  const req = encodeOptionRequest(Option.Go, data);
  t.deepEqual(decodeOptionHeader(req.subarray(0, 16)), { option: Option.Go, length: 5 });
  t.deepEqual(req.subarray(16), data);
  const rep = encodeOptionReply(Option.List, Reply.ErrUnsup, Buffer.from('no'));
  t.is(rep.subarray(0, 8).toString('hex'), '0003e889045565a9');
  t.deepEqual(decodeOptionReplyHeader(rep.subarray(0, optionReplyHeaderBytes)), { option: Option.List, replyType: Reply.ErrUnsup, length: 2 });
  const bad = Buffer.from(req.subarray(0, 16));
  bad[0] = 0;
  throwsProtocol(t, () => decodeOptionHeader(bad), /IHAVEOPT/);
  throwsProtocol(t, () => decodeOptionReplyHeader(Buffer.alloc(20)));
});

test('export name reply: with and without the 124 zero bytes', (t) => {
  const full = encodeExportNameReply(1 << 30, 0x1ed, false);
  t.is(full.length, 134);
  t.true(full.subarray(10).every((b) => b === 0));
  const short = encodeExportNameReply(1 << 30, 0x1ed, true);
  t.is(short.length, 10);
  t.deepEqual(decodeExportNameReply(short), { sizeBytes: 1 << 30, transmissionFlags: 0x1ed });
});

test('info request (GO/INFO data) round-trips, including the empty default name', (t) => {
  for (const req of [
    { name: 'disk', infoTypes: [InfoType.BlockSize, InfoType.Name] },
    { name: '', infoTypes: [] },
    { name: 'ünïcode', infoTypes: [InfoType.Description] },
  ]) {
    t.deepEqual(decodeInfoRequest(encodeInfoRequest(req)), req);
  }
});

test('info request: lengths that lie are refused', (t) => {
  const good = encodeInfoRequest({ name: 'disk', infoTypes: [3] });
  const hugeName = Buffer.from(good);
  hugeName.writeUInt32BE(0xfffffff0, 0);
  throwsProtocol(t, () => decodeInfoRequest(hugeName), /name length/);
  const badCount = Buffer.from(good);
  badCount.writeUInt16BE(7, 8);
  throwsProtocol(t, () => decodeInfoRequest(badCount), /count/);
  throwsProtocol(t, () => decodeInfoRequest(good.subarray(0, 5)));
  throwsProtocol(t, () => decodeInfoRequest(Buffer.concat([good, Buffer.alloc(1)])));
  const nul = encodeInfoRequest({ name: 'ab', infoTypes: [] });
  nul[5] = 0;
  throwsProtocol(t, () => decodeInfoRequest(nul), /NUL/);
  const notUtf8 = encodeInfoRequest({ name: 'ab', infoTypes: [] });
  notUtf8[4] = 0xff;
  throwsProtocol(t, () => decodeInfoRequest(notUtf8), /UTF-8/);
});

test('meta context request round-trips and refuses inconsistent counts', (t) => {
  const req = { name: 'disk', queries: ['base:allocation', 'qemu:dirty-bitmap:x', 'base:'] };
  t.deepEqual(decodeMetaContextRequest(encodeMetaContextRequest(req)), req);
  t.deepEqual(decodeMetaContextRequest(encodeMetaContextRequest({ name: '', queries: [] })), { name: '', queries: [] });
  const b = encodeMetaContextRequest(req);
  const count = Buffer.from(b);
  count.writeUInt32BE(0xffffffff, 8);
  throwsProtocol(t, () => decodeMetaContextRequest(count), /query count/);
  const qlen = Buffer.from(b);
  qlen.writeUInt32BE(0x7fffffff, 12);
  throwsProtocol(t, () => decodeMetaContextRequest(qlen), /query length/);
  throwsProtocol(t, () => decodeMetaContextRequest(Buffer.concat([b, Buffer.alloc(3)])), /trailing/);
});

test('server, info and meta context replies round-trip', (t) => {
  t.deepEqual(decodeServerReply(encodeServerReply('disk', 'a test disk')), { name: 'disk', description: 'a test disk' });
  t.deepEqual(decodeServerReply(encodeServerReply('disk')), { name: 'disk', description: '' });
  t.deepEqual(decodeInfoReply(encodeInfoReply({ type: 'export', sizeBytes: 2 ** 40, transmissionFlags: 0x0d6d })), {
    type: 'export',
    sizeBytes: 2 ** 40,
    transmissionFlags: 0x0d6d,
  });
  t.deepEqual(decodeInfoReply(encodeInfoReply({ type: 'name', name: 'disk' })), { type: 'name', name: 'disk' });
  t.deepEqual(decodeInfoReply(encodeInfoReply({ type: 'description', description: 'd' })), { type: 'description', description: 'd' });
  t.deepEqual(decodeInfoReply(encodeInfoReply({ type: 'block-size', minimum: 512, preferred: 4096, maximum: 32 << 20 })), {
    type: 'block-size',
    minimum: 512,
    preferred: 4096,
    maximum: 32 << 20,
  });
  t.deepEqual(decodeInfoReply(Buffer.from([0, 9, 1, 2])), { type: 'unknown', infoType: 9 });
  throwsProtocol(t, () => decodeInfoReply(Buffer.from([0, 0, 1])), /NBD_INFO_EXPORT/);
  throwsProtocol(t, () => decodeInfoReply(Buffer.from([0, 3, 0, 0])), /BLOCK_SIZE/);
  t.deepEqual(decodeMetaContextReply(encodeMetaContextReply(7, 'base:allocation')), { contextId: 7, name: 'base:allocation' });
});

test('request header: spec layout, round trip, 64-bit offsets', (t) => {
  const r = { flags: 1, type: Command.Write, cookie: 0xdeadbeefcafef00dn, offset: 2 ** 40 + 512, length: 4096 };
  const b = encodeRequest(r);
  t.is(b.length, 28);
  t.is(b.readUInt32BE(0), 0x25609513);
  t.deepEqual(decodeRequest(b), r);
  const far = encodeRequest({ flags: 0, type: Command.Read, cookie: 1n, offset: 0xffffffffffffffffn, length: 1 });
  t.true(decodeRequest(far).offset > Number.MAX_SAFE_INTEGER);
  const bad = Buffer.from(b);
  bad.writeUInt32BE(0x12560953, 0); // the historic request magic the spec reserves
  throwsProtocol(t, () => decodeRequest(bad), /magic/);
  throwsProtocol(t, () => decodeRequest(b.subarray(0, 27)));
});

test('simple reply round-trips; reply framing picks the header size by magic', (t) => {
  const b = encodeSimpleReply(NbdErrno.EIO, 42n);
  t.deepEqual(decodeSimpleReply(b), { error: 5, cookie: 42n });
  t.is(replyHeaderBytes(b.readUInt32BE(0)), 16);
  t.is(replyHeaderBytes(0x668e33ef), 20);
  throwsProtocol(t, () => replyHeaderBytes(0x96744668), /magic/);
});

test('structured chunks: OFFSET_DATA, OFFSET_HOLE, BLOCK_STATUS, ERROR, NONE round-trip', (t) => {
  const data = Buffer.from('some data');
  const d = chunk(encodeOffsetDataChunk(9n, ReplyFlag.Done, 4096, data));
  t.deepEqual(d.header, { flags: ReplyFlag.Done, type: ChunkType.OffsetData, cookie: 9n, length: 8 + data.length });
  t.deepEqual(d.payload, { type: 'offset-data', offset: 4096, data });

  t.deepEqual(chunk(encodeOffsetHoleChunk(9n, 0, 8192, 512)).payload, { type: 'offset-hole', offset: 8192, holeBytes: 512 });

  const extents = [
    { length: 4096, flags: 0 },
    { length: 65536, flags: 3 },
  ];
  const bs = chunk(encodeBlockStatusChunk(3n, ReplyFlag.Done, 1, extents));
  t.is(bs.header.length, 4 + 16);
  t.deepEqual(bs.payload, { type: 'block-status', contextId: 1, extents });

  const e = chunk(encodeErrorChunk(4n, ReplyFlag.Done, NbdErrno.EINVAL, 'bad range'));
  t.is(e.header.type, ChunkType.Error);
  t.deepEqual(e.payload, { type: 'error', error: 22, message: 'bad range' });

  const n = chunk(encodeNoneChunk(5n, ReplyFlag.Done));
  t.deepEqual(n.header, { flags: 1, type: 0, cookie: 5n, length: 0 });
  t.deepEqual(n.payload, { type: 'none' });
});

test('structured chunks: malformed payloads are refused', (t) => {
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.None, Buffer.alloc(1)));
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.OffsetData, Buffer.alloc(8)));
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.OffsetHole, Buffer.alloc(11)));
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.OffsetHole, Buffer.alloc(12)), /zero bytes/);
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.BlockStatus, Buffer.alloc(4)), /bad length/);
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.BlockStatus, Buffer.alloc(13)), /bad length/);
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.BlockStatus, Buffer.alloc(12)), /zero bytes/);
  const lying = Buffer.alloc(8);
  lying.writeUInt32BE(5, 0);
  lying.writeUInt16BE(100, 4);
  throwsProtocol(t, () => decodeChunkPayload(ChunkType.Error, lying), /message length/);
  t.deepEqual(decodeChunkPayload(0x1234, Buffer.alloc(3)), { type: 'unknown', chunkType: 0x1234 });
  throwsProtocol(t, () => decodeChunkHeader(Buffer.alloc(20)), /magic/);
});

test('ERROR_OFFSET chunks carry the offset', (t) => {
  const p = Buffer.alloc(6 + 2 + 8);
  p.writeUInt32BE(NbdErrno.EIO, 0);
  p.writeUInt16BE(2, 4);
  p.write('io', 6);
  p.writeBigUInt64BE(8192n, 8);
  t.deepEqual(decodeChunkPayload(ChunkType.ErrorOffset, p), { type: 'error', error: 5, message: 'io', offset: 8192 });
});

test('strings: the 4096-byte limit, and messages truncated on a character boundary', (t) => {
  t.is(decodeString(Buffer.alloc(stringBytesMax, 0x61), 'name').length, stringBytesMax);
  throwsProtocol(t, () => decodeString(Buffer.alloc(stringBytesMax + 1, 0x61), 'name'), /limit/);
  t.throws(() => encodeInfoRequest({ name: 'x'.repeat(stringBytesMax + 1), infoTypes: [] }));
  const cut = truncateText('é'.repeat(3000));
  t.true(cut.length <= stringBytesMax);
  t.is(cut.length % 2, 0);
  t.notThrows(() => new TextDecoder('utf-8', { fatal: true }).decode(cut));
  const e = chunk(encodeErrorChunk(1n, 1, NbdErrno.EIO, 'x'.repeat(10_000)));
  t.is((e.payload as { message: string }).message.length, stringBytesMax);
});

test('encoders refuse values the wire cannot carry', (t) => {
  t.throws(() => encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: -1, length: 1 }));
  t.throws(() => encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 2 ** 32 }));
  t.throws(() => encodeOffsetHoleChunk(1n, 0, 0, 0));
  t.throws(() => encodeBlockStatusChunk(1n, 0, 1, []));
  t.throws(() => encodeBlockStatusChunk(1n, 0, 1, [{ length: 0, flags: 0 }]));
  t.throws(() => encodeErrorChunk(1n, 0, 0, 'no error is not an error'));
});
