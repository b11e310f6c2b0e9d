/**
 * The NBD wire format: every magic, number and flag of the protocol
 * (shared/reference/nbd-protocol.md), plus the limits this implementation
 * enforces. Nothing else in appliance/nbd/ spells a wire number.
 *
 * Magics that do not fit in 32 bits are bigints because they are read with
 * readBigUInt64BE; everything else is a plain number.
 */

// ---------------------------------------------------------------- magics

/** 'NBDMAGIC', first 8 bytes the server sends. */
export const nbdMagic = 0x4e42444d41474943n;
/** 'IHAVEOPT': second word of the newstyle greeting and the prefix of every option request. */
export const optionMagic = 0x49484156454f5054n;
export const optionReplyMagic = 0x0003e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;
export const structuredReplyMagic = 0x668e33ef;
/** Reserved by the experimental EXTENDED_HEADERS extension; we never negotiate it. */
export const extendedRequestMagic = 0x21e41c71;

// ---------------------------------------------------------------- handshake

export const HandshakeFlag = {
  FixedNewstyle: 1 << 0,
  NoZeroes: 1 << 1,
} as const;

export const ClientFlag = {
  FixedNewstyle: 1 << 0,
  NoZeroes: 1 << 1,
} as const;

export const clientFlagsKnown = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;

export const TransmissionFlag = {
  HasFlags: 1 << 0,
  ReadOnly: 1 << 1,
  SendFlush: 1 << 2,
  SendFua: 1 << 3,
  Rotational: 1 << 4,
  SendTrim: 1 << 5,
  SendWriteZeroes: 1 << 6,
  SendDf: 1 << 7,
  CanMultiConn: 1 << 8,
  SendResize: 1 << 9,
  SendCache: 1 << 10,
  SendFastZero: 1 << 11,
  BlockStatusPayload: 1 << 12,
} as const;

export const Option = {
  ExportName: 1,
  Abort: 2,
  List: 3,
  PeekExport: 4,
  StartTls: 5,
  Info: 6,
  Go: 7,
  StructuredReply: 8,
  ListMetaContext: 9,
  SetMetaContext: 10,
  ExtendedHeaders: 11,
} as const;

const replyErrorBit = 0x80000000;

export const Reply = {
  Ack: 1,
  Server: 2,
  Info: 3,
  MetaContext: 4,
  ErrUnsup: replyErrorBit + 1,
  ErrPolicy: replyErrorBit + 2,
  ErrInvalid: replyErrorBit + 3,
  ErrPlatform: replyErrorBit + 4,
  ErrTlsReqd: replyErrorBit + 5,
  ErrUnknown: replyErrorBit + 6,
  ErrShutdown: replyErrorBit + 7,
  ErrBlockSizeReqd: replyErrorBit + 8,
  ErrTooBig: replyErrorBit + 9,
  ErrExtHeaderReqd: replyErrorBit + 10,
} as const;

export function isErrorReply(replyType: number): boolean {
  return replyType >= replyErrorBit;
}

export const InfoType = {
  Export: 0,
  Name: 1,
  Description: 2,
  BlockSize: 3,
} as const;

// ---------------------------------------------------------------- transmission

export const Command = {
  Read: 0,
  Write: 1,
  Disc: 2,
  Flush: 3,
  Trim: 4,
  Cache: 5,
  WriteZeroes: 6,
  BlockStatus: 7,
  Resize: 8,
} as const;

export const CommandFlag = {
  Fua: 1 << 0,
  NoHole: 1 << 1,
  Df: 1 << 2,
  ReqOne: 1 << 3,
  FastZero: 1 << 4,
  PayloadLen: 1 << 5,
} as const;

export const ReplyFlag = {
  Done: 1 << 0,
} as const;

const chunkErrorBit = 0x8000;

export const ChunkType = {
  None: 0,
  OffsetData: 1,
  OffsetHole: 2,
  BlockStatus: 5,
  BlockStatusExt: 6,
  Error: chunkErrorBit + 1,
  ErrorOffset: chunkErrorBit + 2,
} as const;

export function isErrorChunk(chunkType: number): boolean {
  return (chunkType & chunkErrorBit) !== 0;
}

/** Error values on the wire; not the host's errno. */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

export type NbdErrno = (typeof NbdErrno)[keyof typeof NbdErrno];

/** base:allocation extent flags. */
export const StateFlag = {
  Hole: 1 << 0,
  Zero: 1 << 1,
} as const;

export const metaContextBaseAllocation = 'base:allocation';
export const metaNamespaceBase = 'base:';

// ---------------------------------------------------------------- fixed sizes

export const greetingBytes = 18;
export const clientFlagsBytes = 4;
export const optionHeaderBytes = 16;
export const optionReplyHeaderBytes = 20;
export const exportNameReplyBytes = 10;
export const exportNameZeroesBytes = 124;
export const requestHeaderBytes = 28;
export const simpleReplyBytes = 16;
export const structuredReplyHeaderBytes = 20;
export const blockStatusDescriptorBytes = 8;

// ---------------------------------------------------------------- limits

/** Largest READ/WRITE payload we take; the spec's interoperable maximum (2^25). */
export const requestBytesMax = 32 * 1024 * 1024;
/** The spec's hard limit for names, descriptions, queries and error messages. */
export const stringBytesMax = 4096;
/** Metadata context queries accepted in one SET/LIST_META_CONTEXT. */
export const metaContextsMax = 16;
/** The largest well-formed option we accept: a SET_META_CONTEXT with a maximal name and metaContextsMax maximal queries. */
export const optionBytesMax = 4 + stringBytesMax + 4 + metaContextsMax * (4 + stringBytesMax);
/** Options one connection may send before it is judged a denial of service. */
export const optionsPerHandshakeMax = 1024;
/** Open connections per server; more are closed at once. */
export const connectionsMax = 512;
/** Requests one connection may have in the backend at once; then we stop reading its socket. */
export const inflightPerConnectionMax = 64;
/** Payload bytes (write data held, read data pending) one connection may have in flight; one request may always run. */
export const inflightBytesPerConnectionMax = 64 * 1024 * 1024;
/** The spec's bound on descriptors in one BLOCK_STATUS chunk. */
export const blockStatusExtentsMax = 1 << 20;
/** Bytes the stream reader holds ahead of the protocol before pausing the socket. */
export const readAheadBytesMax = 256 * 1024;
/** A client that has not reached transmission by then is dropped. */
export const handshakeTimeoutMs = 10_000;
/** After we end a connection, how long we wait for the peer to close before destroying it. */
export const socketLingerMs = 2_000;
/** How long close() lets in-flight requests finish before cutting connections. */
export const closeGraceMs = 30_000;

/** The spec's limit on a minimum block size. */
export const blockSizeMinLimit = 65536;
/** The spec's floor for a preferred block size. */
export const blockSizePreferredFloor = 512;
