/**
 * Pure encoders and decoders for every NBD message we send or receive. No I/O,
 * no state: Buffers in, Buffers or plain objects out. Decoders check lengths
 * and magics and throw SV_NBD_PROTOCOL on malformed input; the caller decides
 * whether that means an error reply or a hard disconnect.
 */
import { ErrorCode, fail } from '../errors.ts';
import {
  ChunkType,
  InfoType,
  blockStatusDescriptorBytes,
  exportNameReplyBytes,
  exportNameZeroesBytes,
  greetingBytes,
  nbdMagic,
  optionHeaderBytes,
  optionMagic,
  optionReplyHeaderBytes,
  optionReplyMagic,
  requestHeaderBytes,
  requestMagic,
  simpleReplyBytes,
  simpleReplyMagic,
  stringBytesMax,
  structuredReplyHeaderBytes,
  structuredReplyMagic,
} from './protocol.ts';

const empty = Buffer.alloc(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function malformed(message: string, detail?: Record<string, unknown>): never {
  fail(ErrorCode.NbdProtocol, message, detail);
}

function need(buf: Buffer, bytes: number, what: string): void {
  if (buf.length < bytes) malformed(`${what}: ${buf.length} bytes, need ${bytes}`);
}

function exactly(buf: Buffer, bytes: number, what: string): void {
  if (buf.length !== bytes) malformed(`${what}: ${buf.length} bytes, expected ${bytes}`);
}

/** A 64-bit wire integer as a number; above 2^53 it is approximate, which only ever matters for values far beyond any export. */
function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * 0x100000000 + buf.readUInt32BE(at + 4);
}

function writeU64(buf: Buffer, value: number | bigint, at: number): void {
  const v = typeof value === 'bigint' ? value : BigInt(value);
  if (v < 0n || v > 0xffffffffffffffffn) fail(ErrorCode.InvalidArgument, 'value does not fit in 64 bits', { value: String(value) });
  buf.writeBigUInt64BE(v, at);
}

function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    fail(ErrorCode.InvalidArgument, `${what} does not fit in 32 bits`, { value });
  }
}

/** Protocol strings: UTF-8, no NUL, at most stringBytesMax bytes. */
export function decodeString(buf: Buffer, what: string): string {
  if (buf.length > stringBytesMax) malformed(`${what} is ${buf.length} bytes, limit ${stringBytesMax}`);
  let s: string;
  try {
    s = utf8.decode(buf);
  } catch {
    malformed(`${what} is not valid UTF-8`);
  }
  if (s.includes('\0')) malformed(`${what} contains NUL`);
  return s;
}

export function encodeString(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > stringBytesMax) fail(ErrorCode.InvalidArgument, `${what} is ${b.length} bytes, limit ${stringBytesMax}`);
  if (s.includes('\0')) fail(ErrorCode.InvalidArgument, `${what} contains NUL`);
  return b;
}

/** Human-readable text (error messages, descriptions) is cut, not refused, at the limit, on a character boundary. */
export function truncateText(s: string, bytesMax: number = stringBytesMax): Buffer {
  const clean = s.replaceAll('\0', ' ');
  const b = Buffer.from(clean, 'utf8');
  if (b.length <= bytesMax) return b;
  let end = bytesMax;
  // back off continuation bytes (10xxxxxx) so we never split a character
  while (end > 0 && ((b[end] ?? 0) & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

// ---------------------------------------------------------------- greeting

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(greetingBytes);
  b.writeBigUInt64BE(nbdMagic, 0);
  b.writeBigUInt64BE(optionMagic, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function decodeGreeting(buf: Buffer): { handshakeFlags: number } {
  exactly(buf, greetingBytes, 'greeting');
  if (buf.readBigUInt64BE(0) !== nbdMagic) malformed('greeting: not an NBD server (bad NBDMAGIC)');
  if (buf.readBigUInt64BE(8) !== optionMagic) malformed('greeting: oldstyle or unknown negotiation (no IHAVEOPT)');
  return { handshakeFlags: buf.readUInt16BE(16) };
}

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags, 0);
  return b;
}

export function decodeClientFlags(buf: Buffer): number {
  exactly(buf, 4, 'client flags');
  return buf.readUInt32BE(0);
}

// ---------------------------------------------------------------- options

export interface OptionHeader {
  option: number;
  length: number;
}

export function encodeOptionRequest(option: number, data: Buffer = empty): Buffer {
  const b = Buffer.alloc(optionHeaderBytes + data.length);
  b.writeBigUInt64BE(optionMagic, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, optionHeaderBytes);
  return b;
}

export function decodeOptionHeader(buf: Buffer): OptionHeader {
  exactly(buf, optionHeaderBytes, 'option header');
  if (buf.readBigUInt64BE(0) !== optionMagic) malformed('option header: bad IHAVEOPT magic');
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

export interface OptionReplyHeader {
  option: number;
  replyType: number;
  length: number;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = empty): Buffer {
  const b = Buffer.alloc(optionReplyHeaderBytes + data.length);
  b.writeBigUInt64BE(optionReplyMagic, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(replyType, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, optionReplyHeaderBytes);
  return b;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  exactly(buf, optionReplyHeaderBytes, 'option reply header');
  if (buf.readBigUInt64BE(0) !== optionReplyMagic) malformed('option reply: bad magic');
  return { option: buf.readUInt32BE(8), replyType: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(exportNameReplyBytes + (noZeroes ? 0 : exportNameZeroesBytes));
  writeU64(b, sizeBytes, 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

export function decodeExportNameReply(buf: Buffer): { sizeBytes: number; transmissionFlags: number } {
  need(buf, exportNameReplyBytes, 'export name reply');
  return { sizeBytes: readU64(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

/** NBD_OPT_INFO / NBD_OPT_GO data. */
export interface InfoRequest {
  name: string;
  infoTypes: number[];
}

export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = encodeString(req.name, 'export name');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * req.infoTypes.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  let at = 4 + name.length;
  b.writeUInt16BE(req.infoTypes.length, at);
  at += 2;
  for (const t of req.infoTypes) {
    b.writeUInt16BE(t, at);
    at += 2;
  }
  return b;
}

export function decodeInfoRequest(data: Buffer): InfoRequest {
  need(data, 6, 'info request');
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) malformed('info request: name length exceeds option data', { nameBytes });
  const name = decodeString(data.subarray(4, 4 + nameBytes), 'export name');
  let at = 4 + nameBytes;
  const count = data.readUInt16BE(at);
  at += 2;
  if (data.length - at !== 2 * count) malformed('info request: information request count does not match length', { count });
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++, at += 2) infoTypes.push(data.readUInt16BE(at));
  return { name, infoTypes };
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function encodeMetaContextRequest(req: MetaContextRequest): Buffer {
  const name = encodeString(req.name, 'export name');
  const queries = req.queries.map((q) => encodeString(q, 'meta context query'));
  const b = Buffer.alloc(4 + name.length + 4 + queries.reduce((n, q) => n + 4 + q.length, 0));
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  let at = 4 + name.length;
  b.writeUInt32BE(queries.length, at);
  at += 4;
  for (const q of queries) {
    b.writeUInt32BE(q.length, at);
    q.copy(b, at + 4);
    at += 4 + q.length;
  }
  return b;
}

export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  need(data, 8, 'meta context request');
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 8) malformed('meta context request: name length exceeds option data', { nameBytes });
  const name = decodeString(data.subarray(4, 4 + nameBytes), 'export name');
  let at = 4 + nameBytes;
  const count = data.readUInt32BE(at);
  at += 4;
  // every query takes at least 4 bytes, so a count the data cannot hold is refused before any loop
  if (count > (data.length - at) / 4) malformed('meta context request: query count exceeds option data', { count });
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    need(data, at + 4, 'meta context query length');
    const qBytes = data.readUInt32BE(at);
    at += 4;
    if (qBytes > data.length - at) malformed('meta context request: query length exceeds option data', { qBytes });
    queries.push(decodeString(data.subarray(at, at + qBytes), 'meta context query'));
    at += qBytes;
  }
  if (at !== data.length) malformed('meta context request: trailing bytes');
  return { name, queries };
}

/** NBD_REP_SERVER data: the name, then an optional human-readable description. */
export function encodeServerReply(name: string, description?: string): Buffer {
  const n = encodeString(name, 'export name');
  const d = description === undefined ? empty : truncateText(description);
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function decodeServerReply(data: Buffer): { name: string; description: string } {
  need(data, 4, 'server reply');
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 4) malformed('server reply: name length exceeds reply', { nameBytes });
  return {
    name: decodeString(data.subarray(4, 4 + nameBytes), 'export name'),
    description: decodeString(data.subarray(4 + nameBytes), 'export description'),
  };
}

export type InfoReply =
  | { type: 'export'; sizeBytes: number; transmissionFlags: number }
  | { type: 'name'; name: string }
  | { type: 'description'; description: string }
  | { type: 'block-size'; minimum: number; preferred: number; maximum: number }
  | { type: 'unknown'; infoType: number };

export function encodeInfoReply(info: Exclude<InfoReply, { type: 'unknown' }>): Buffer {
  switch (info.type) {
    case 'export': {
      const b = Buffer.alloc(12);
      b.writeUInt16BE(InfoType.Export, 0);
      writeU64(b, info.sizeBytes, 2);
      b.writeUInt16BE(info.transmissionFlags, 10);
      return b;
    }
    case 'name':
      return Buffer.concat([u16(InfoType.Name), encodeString(info.name, 'export name')]);
    case 'description':
      return Buffer.concat([u16(InfoType.Description), truncateText(info.description)]);
    case 'block-size': {
      checkU32(info.minimum, 'minimum block size');
      checkU32(info.preferred, 'preferred block size');
      checkU32(info.maximum, 'maximum payload');
      const b = Buffer.alloc(14);
      b.writeUInt16BE(InfoType.BlockSize, 0);
      b.writeUInt32BE(info.minimum, 2);
      b.writeUInt32BE(info.preferred, 6);
      b.writeUInt32BE(info.maximum, 10);
      return b;
    }
  }
}

export function decodeInfoReply(data: Buffer): InfoReply {
  need(data, 2, 'info reply');
  const infoType = data.readUInt16BE(0);
  switch (infoType) {
    case InfoType.Export:
      exactly(data, 12, 'NBD_INFO_EXPORT');
      return { type: 'export', sizeBytes: readU64(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case InfoType.Name:
      return { type: 'name', name: decodeString(data.subarray(2), 'export name') };
    case InfoType.Description:
      return { type: 'description', description: decodeString(data.subarray(2), 'export description') };
    case InfoType.BlockSize:
      exactly(data, 14, 'NBD_INFO_BLOCK_SIZE');
      return { type: 'block-size', minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default:
      return { type: 'unknown', infoType };
  }
}

export function encodeMetaContextReply(contextId: number, name: string): Buffer {
  checkU32(contextId, 'meta context id');
  return Buffer.concat([u32(contextId), encodeString(name, 'meta context name')]);
}

export function decodeMetaContextReply(data: Buffer): { contextId: number; name: string } {
  need(data, 4, 'meta context reply');
  return { contextId: data.readUInt32BE(0), name: decodeString(data.subarray(4), 'meta context name') };
}

// ---------------------------------------------------------------- transmission

export interface NbdRequest {
  flags: number;
  type: number;
  /** Opaque to the server; echoed in every reply. */
  cookie: bigint;
  /** Above 2^53 this is approximate (see readU64); such offsets are out of range anyway. */
  offset: number;
  length: number;
}

export function encodeRequest(req: { flags: number; type: number; cookie: bigint; offset: number | bigint; length: number }): Buffer {
  checkU32(req.length, 'request length');
  const b = Buffer.alloc(requestHeaderBytes);
  b.writeUInt32BE(requestMagic, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeBigUInt64BE(req.cookie, 8);
  writeU64(b, req.offset, 16);
  b.writeUInt32BE(req.length, 24);
  return b;
}

export function decodeRequest(buf: Buffer): NbdRequest {
  exactly(buf, requestHeaderBytes, 'request header');
  const magic = buf.readUInt32BE(0);
  if (magic !== requestMagic) malformed('request: bad magic', { magic });
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offset: readU64(buf, 16),
    length: buf.readUInt32BE(24),
  };
}

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.alloc(simpleReplyBytes);
  b.writeUInt32BE(simpleReplyMagic, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

/** Reply framing: both reply kinds start with a 32-bit magic, which decides how many header bytes follow. */
export function replyHeaderBytes(magic: number): number {
  if (magic === simpleReplyMagic) return simpleReplyBytes;
  if (magic === structuredReplyMagic) return structuredReplyHeaderBytes;
  return malformed('reply: bad magic', { magic });
}

export function decodeSimpleReply(buf: Buffer): { error: number; cookie: bigint } {
  exactly(buf, simpleReplyBytes, 'simple reply');
  if (buf.readUInt32BE(0) !== simpleReplyMagic) malformed('simple reply: bad magic');
  return { error: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
}

export interface ChunkHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

export function encodeChunkHeader(h: ChunkHeader): Buffer {
  checkU32(h.length, 'chunk length');
  const b = Buffer.alloc(structuredReplyHeaderBytes);
  b.writeUInt32BE(structuredReplyMagic, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeUInt32BE(h.length, 16);
  return b;
}

export function decodeChunkHeader(buf: Buffer): ChunkHeader {
  exactly(buf, structuredReplyHeaderBytes, 'structured reply header');
  if (buf.readUInt32BE(0) !== structuredReplyMagic) malformed('structured reply: bad magic');
  return { flags: buf.readUInt16BE(4), type: buf.readUInt16BE(6), cookie: buf.readBigUInt64BE(8), length: buf.readUInt32BE(16) };
}

/**
 * A content chunk as two buffers (header+offset, then the data) so a 32 MiB
 * read is never copied just to prepend 28 bytes.
 */
export function encodeOffsetDataChunk(cookie: bigint, flags: number, offset: number, data: Buffer): Buffer[] {
  const head = Buffer.alloc(structuredReplyHeaderBytes + 8);
  encodeChunkHeader({ flags, type: ChunkType.OffsetData, cookie, length: 8 + data.length }).copy(head, 0);
  writeU64(head, offset, structuredReplyHeaderBytes);
  return [head, data];
}

export function encodeOffsetHoleChunk(cookie: bigint, flags: number, offset: number, holeBytes: number): Buffer {
  if (holeBytes === 0) fail(ErrorCode.InvalidArgument, 'a hole chunk must describe at least one byte');
  checkU32(holeBytes, 'hole size');
  const b = Buffer.alloc(structuredReplyHeaderBytes + 12);
  encodeChunkHeader({ flags, type: ChunkType.OffsetHole, cookie, length: 12 }).copy(b, 0);
  writeU64(b, offset, structuredReplyHeaderBytes);
  b.writeUInt32BE(holeBytes, structuredReplyHeaderBytes + 8);
  return b;
}

export interface Extent {
  length: number;
  flags: number;
}

export function encodeBlockStatusChunk(cookie: bigint, flags: number, contextId: number, extents: readonly Extent[]): Buffer {
  if (extents.length === 0) fail(ErrorCode.InvalidArgument, 'a block status chunk needs at least one extent');
  const payload = 4 + blockStatusDescriptorBytes * extents.length;
  const b = Buffer.alloc(structuredReplyHeaderBytes + payload);
  encodeChunkHeader({ flags, type: ChunkType.BlockStatus, cookie, length: payload }).copy(b, 0);
  let at = structuredReplyHeaderBytes;
  b.writeUInt32BE(contextId, at);
  at += 4;
  for (const e of extents) {
    if (e.length === 0) fail(ErrorCode.InvalidArgument, 'extent length must be nonzero');
    checkU32(e.length, 'extent length');
    b.writeUInt32BE(e.length, at);
    b.writeUInt32BE(e.flags >>> 0, at + 4);
    at += blockStatusDescriptorBytes;
  }
  return b;
}

export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message: string): Buffer {
  if (error === 0) fail(ErrorCode.InvalidArgument, 'an error chunk needs a nonzero error');
  const m = truncateText(message);
  const b = Buffer.alloc(structuredReplyHeaderBytes + 6 + m.length);
  encodeChunkHeader({ flags, type: ChunkType.Error, cookie, length: 6 + m.length }).copy(b, 0);
  b.writeUInt32BE(error, structuredReplyHeaderBytes);
  b.writeUInt16BE(m.length, structuredReplyHeaderBytes + 4);
  m.copy(b, structuredReplyHeaderBytes + 6);
  return b;
}

export function encodeNoneChunk(cookie: bigint, flags: number): Buffer {
  return encodeChunkHeader({ flags, type: ChunkType.None, cookie, length: 0 });
}

export type ChunkPayload =
  | { type: 'none' }
  | { type: 'offset-data'; offset: number; data: Buffer }
  | { type: 'offset-hole'; offset: number; holeBytes: number }
  | { type: 'block-status'; contextId: number; extents: Extent[] }
  | { type: 'error'; error: number; message: string; offset?: number }
  | { type: 'unknown'; chunkType: number };

export function decodeChunkPayload(chunkType: number, payload: Buffer): ChunkPayload {
  switch (chunkType) {
    case ChunkType.None:
      exactly(payload, 0, 'NBD_REPLY_TYPE_NONE');
      return { type: 'none' };
    case ChunkType.OffsetData:
      need(payload, 9, 'NBD_REPLY_TYPE_OFFSET_DATA');
      return { type: 'offset-data', offset: readU64(payload, 0), data: payload.subarray(8) };
    case ChunkType.OffsetHole: {
      exactly(payload, 12, 'NBD_REPLY_TYPE_OFFSET_HOLE');
      const holeBytes = payload.readUInt32BE(8);
      if (holeBytes === 0) malformed('hole chunk of zero bytes');
      return { type: 'offset-hole', offset: readU64(payload, 0), holeBytes };
    }
    case ChunkType.BlockStatus: {
      if (payload.length < 4 + blockStatusDescriptorBytes || (payload.length - 4) % blockStatusDescriptorBytes !== 0) {
        malformed('NBD_REPLY_TYPE_BLOCK_STATUS: bad length', { length: payload.length });
      }
      const extents: Extent[] = [];
      for (let at = 4; at < payload.length; at += blockStatusDescriptorBytes) {
        const length = payload.readUInt32BE(at);
        if (length === 0) malformed('block status extent of zero bytes');
        extents.push({ length, flags: payload.readUInt32BE(at + 4) });
      }
      return { type: 'block-status', contextId: payload.readUInt32BE(0), extents };
    }
    case ChunkType.Error:
    case ChunkType.ErrorOffset: {
      const tail = chunkType === ChunkType.ErrorOffset ? 8 : 0;
      need(payload, 6 + tail, 'error chunk');
      const error = payload.readUInt32BE(0);
      const messageBytes = payload.readUInt16BE(4);
      if (messageBytes > payload.length - 6 - tail) malformed('error chunk: message length exceeds chunk');
      // a peer's message is shown to people, never parsed: a bad byte must not hide the error itself
      const message = payload.subarray(6, 6 + messageBytes).toString('utf8');
      if (tail === 0) return { type: 'error', error, message };
      return { type: 'error', error, message, offset: readU64(payload, 6 + messageBytes) };
    }
    default:
      return { type: 'unknown', chunkType };
  }
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v, 0);
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v, 0);
  return b;
}
