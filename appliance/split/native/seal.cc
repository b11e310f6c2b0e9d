// Seal and open whole batches of stripvault blocks in one N-API call, reusing OpenSSL EVP contexts.
// Why native: with node:crypto every 4 KiB block pays for creating 1 CTR + 1 SHA-256 + N GCM objects,
// which costs several times the AES work itself (issue 3). This file is a second implementation of
// the share format: the byte layout mirrors appliance/split/{aont,split,share-binding,reed-solomon}.ts
// and strip/slot.ts, and test/split/native-seal.test.ts checks the two are byte-identical.
// It is only ever called through appliance/split/native-seal.ts, which validates its inputs first;
// every size and range is checked here again so that a bad call throws instead of touching memory
// outside the buffers it was handed. Every property (and array element) is read before the first
// buffer pointer is taken: a getter is JavaScript, and it could detach or shrink a buffer whose
// pointer we already hold. Keys are not kept between calls: cached copies and OpenSSL key
// schedules are overwritten before each call returns.
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <vector>

namespace {

constexpr size_t kAontKey = 32, kTag = 16, kNonce = 12, kAad = 56, kMeta = 32, kVolId = 16;
constexpr int kSharesMax = 16;                          // reed-solomon.ts fragmentsMax
constexpr int64_t kBlockBytesMin = 512, kBlockBytesMax = 1 << 20;  // geometry.ts
constexpr int64_t kSlotBytesMax = 2 << 20;
constexpr int64_t kCountMax = 1 << 20;                 // blocks per call
constexpr int64_t kEpochMax = 0xffffffffLL;            // share-binding.ts epochMax
constexpr int64_t kAddressMax = (1LL << 40) - 1;       // share-binding.ts addressMax (5 nonce bytes)
constexpr int64_t kGenerationMax = (1LL << 48) - 1;    // share-binding.ts generationMax (6 nonce bytes)
constexpr int64_t kSectionsMax = 1 << 16;
constexpr int64_t kSectionFirstMax = 1LL << 40;
constexpr int64_t kSectionBytesMax = 1LL << 50;
constexpr int64_t kOffsetMax = 1LL << 48;
enum Kind : uint8_t { kData = 1, kZero = 2 };

// GF(2^8), polynomial 0x11d (gf256.ts).
uint8_t gfExp[512], gfLog[256];
void gfInit() {
  unsigned x = 1;
  for (int i = 0; i < 255; i++) { gfExp[i] = (uint8_t)x; gfLog[x] = (uint8_t)i; x <<= 1; if (x & 0x100) x ^= 0x11d; }
  for (int i = 255; i < 512; i++) gfExp[i] = gfExp[i - 255];
}
// Filled once at load (before any thread can call in).
const bool gfReady = (gfInit(), true);
inline uint8_t gfMul(uint8_t a, uint8_t b) { return (a && b) ? gfExp[gfLog[a] + gfLog[b]] : 0; }
inline uint8_t gfInv(uint8_t a) { return gfExp[255 - gfLog[a]]; }  // a != 0

// reed-solomon.ts parityMatrix. seal checks the caller's copy against it: open's XOR rebuild relies
// on row 0 being all ones, and a different matrix would go unnoticed until a degraded read.
void parityMatrix(int m, int n, uint8_t* p) {
  const int rows = n - m;
  for (int i = 0; i < rows; i++) for (int j = 0; j < m; j++) p[i * m + j] = gfInv((uint8_t)((m + i) ^ j));
  if (rows == 0) return;
  for (int j = 0; j < m; j++) { const uint8_t s = gfInv(p[j]); for (int i = 0; i < rows; i++) p[i * m + j] = gfMul(p[i * m + j], s); }
  for (int i = 1; i < rows; i++) { const uint8_t s = gfInv(p[i * m]); for (int j = 0; j < m; j++) p[i * m + j] = gfMul(p[i * m + j], s); }
}

// dst ^= src, eight bytes at a time: a byte loop here was most of the seal's own time for 2-of-3,
// whose one parity row is all ones. memcpy keeps unaligned words defined; it compiles to moves.
void xorInto(uint8_t* dst, const uint8_t* src, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t a, b;
    memcpy(&a, dst + i, 8);
    memcpy(&b, src + i, 8);
    a ^= b;
    memcpy(dst + i, &a, 8);
  }
  for (; i < len; i++) dst[i] ^= src[i];
}

void mulAdd(uint8_t* dst, const uint8_t* src, size_t len, uint8_t c) {
  if (c == 0) return;
  if (c == 1) { xorInto(dst, src, len); return; }
  uint8_t t[256];
  for (int v = 0; v < 256; v++) t[v] = gfMul((uint8_t)v, c);
  for (size_t i = 0; i < len; i++) dst[i] ^= t[src[i]];
}

inline void be(uint8_t* p, uint64_t v, int bytes) { for (int i = bytes - 1; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; } }
inline uint64_t rdBe(const uint8_t* p, int bytes) { uint64_t v = 0; for (int i = 0; i < bytes; i++) v = (v << 8) | p[i]; return v; }

void makeNonce(uint8_t* n, uint64_t address, uint64_t generation, uint8_t strip) {
  be(n, address, 5); be(n + 5, generation, 6); n[11] = strip;
}
void makeAad(uint8_t* a, const uint8_t* vol, uint8_t strip, uint8_t m, uint8_t n, uint8_t kind, uint32_t blockBytes,
             uint64_t address, uint64_t generation, uint32_t epoch, uint32_t keySlot) {
  memcpy(a, "SVSHARE1", 8); memcpy(a + 8, vol, kVolId);
  a[24] = strip; a[25] = m; a[26] = n; a[27] = kind;
  be(a + 28, blockBytes, 4); be(a + 32, address, 8); be(a + 40, generation, 8); be(a + 48, epoch, 4); be(a + 52, keySlot, 4);
}

// One thread's reusable contexts: thread_local, since split-pool workers load the addon too.
struct Ctxs {
  bool ready = false;
  EVP_CIPHER_CTX* ctr = nullptr;
  EVP_CIPHER_CTX* gcm[kSharesMax] = {};
  uint8_t gcmKey[kSharesMax][32] = {};  // key currently scheduled in gcm[i], so an unchanged key is not re-expanded
  int gcmEnc[kSharesMax] = {};
  bool gcmHas[kSharesMax] = {};
  bool init() {
    if (ready) return true;
    // A half-made set is freed and retried next call, never used with some contexts missing.
    release();
    ctr = EVP_CIPHER_CTX_new();
    bool ok = ctr && EVP_EncryptInit_ex(ctr, EVP_aes_256_ctr(), nullptr, nullptr, nullptr);
    for (int i = 0; ok && i < kSharesMax; i++) {
      gcm[i] = EVP_CIPHER_CTX_new();
      ok = gcm[i] && EVP_CipherInit_ex(gcm[i], EVP_aes_256_gcm(), nullptr, nullptr, nullptr, 1);
    }
    if (!ok) release();
    ready = ok;
    return ok;
  }
  // Overwrites every key this thread holds: the cached session key copies and, by re-keying with
  // zeros, the expanded schedules inside the contexts (a retired session key must not outlive its
  // call here, and neither may the last AONT key).
  void scrub() {
    static const uint8_t zeroKey[32] = {0}, zeroIv[16] = {0};
    OPENSSL_cleanse(gcmKey, sizeof gcmKey);
    for (int i = 0; i < kSharesMax; i++) {
      if (gcmHas[i] && gcm[i]) EVP_CipherInit_ex(gcm[i], nullptr, nullptr, zeroKey, nullptr, gcmEnc[i]);
      gcmHas[i] = false;
    }
    if (ready) {
      uint8_t junk[16]; int ol;
      // The last keystream block is buffered in the context too: replace it with one of the zero key.
      if (EVP_EncryptInit_ex(ctr, nullptr, nullptr, zeroKey, zeroIv)) EVP_EncryptUpdate(ctr, junk, &ol, zeroIv, sizeof junk);
      OPENSSL_cleanse(junk, sizeof junk);
    }
  }
  void release() {
    ready = false;
    OPENSSL_cleanse(gcmKey, sizeof gcmKey);
    EVP_CIPHER_CTX_free(ctr); ctr = nullptr;  // free cleanses the key schedule
    for (int i = 0; i < kSharesMax; i++) { EVP_CIPHER_CTX_free(gcm[i]); gcm[i] = nullptr; gcmHas[i] = false; }
  }
  // At thread exit only the cached key copies are wiped (every call already re-keyed the contexts
  // with zeros). The contexts are not freed: a worker can exit while the process is exiting, after
  // OpenSSL's own atexit cleanup, where freeing them would touch freed library state. A thread's
  // contexts are a few kilobytes, and split workers live as long as the process.
  ~Ctxs() { OPENSSL_cleanse(gcmKey, sizeof gcmKey); }
};
thread_local Ctxs ctxs;

// Sets key (if it changed) and IV on gcm context `slot`, direction enc.
bool gcmStart(int slot, const uint8_t* key, const uint8_t* nonce, int enc) {
  EVP_CIPHER_CTX* c = ctxs.gcm[slot];
  if (!ctxs.gcmHas[slot] || ctxs.gcmEnc[slot] != enc || CRYPTO_memcmp(ctxs.gcmKey[slot], key, 32) != 0) {
    // Forget the cached key first: after a failed re-key the context's schedule is unknown.
    ctxs.gcmHas[slot] = false;
    if (!EVP_CipherInit_ex(c, nullptr, nullptr, key, nonce, enc)) return false;
    memcpy(ctxs.gcmKey[slot], key, 32);
    ctxs.gcmEnc[slot] = enc;
    ctxs.gcmHas[slot] = true;
    return true;
  }
  return EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce, enc) == 1;
}

// OpenSSL's one-shot SHA256 (not deprecated in 3.0): EVP_DigestInit_ex with EVP_sha256() looks the
// implementation up in the provider on every call, which cost as much as hashing a share's block.
bool sha256(const uint8_t* d, size_t len, uint8_t* out) {
  return SHA256(d, len, out) != nullptr;
}

// ---- N-API helpers ----
#define NAPI(call) do { if ((call) != napi_ok) { napi_throw_error(env, nullptr, "napi: " #call); return nullptr; } } while (0)
#define CHECK(cond, msg) do { if (!(cond)) { napi_throw_error(env, nullptr, msg); return nullptr; } } while (0)

bool bytesOf(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is = false;
  if (v == nullptr || napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t; size_t n; void* d; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &d, &ab, &off) != napi_ok) return false;
  if (n > 0 && d == nullptr) return false;
  size_t el = (t == napi_uint8_array || t == napi_int8_array || t == napi_uint8_clamped_array) ? 1
            : (t == napi_uint16_array || t == napi_int16_array) ? 2 : (t == napi_int32_array || t == napi_uint32_array) ? 4 : 0;
  if (!el) return false;
  *data = (uint8_t*)d; *len = n * el; return true;
}
// An Int16Array only: any other view could start at an odd address, and the table is read as int16.
bool i16Of(napi_env env, napi_value v, const int16_t** data, size_t* count) {
  bool is = false;
  if (v == nullptr || napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t; size_t n; void* d; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &d, &ab, &off) != napi_ok || t != napi_int16_array) return false;
  if (n > 0 && d == nullptr) return false;
  *data = (const int16_t*)d; *count = n; return true;
}
bool f64Of(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is = false;
  if (v == nullptr || napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t; size_t n; void* d; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &d, &ab, &off) != napi_ok || t != napi_float64_array) return false;
  if (n > 0 && d == nullptr) return false;
  *data = (uint8_t*)d; *len = n * 8; return true;
}
inline bool isIntIn(double x, int64_t lo, int64_t hi) { return x >= (double)lo && x <= (double)hi && x == (double)(int64_t)x; }
// A JS number that is an integer in [lo, hi]; anything else (missing, fractional, NaN, huge) is refused.
bool intOf(napi_env env, napi_value v, int64_t lo, int64_t hi, int64_t* out) {
  double d;
  if (v == nullptr || napi_get_value_double(env, v, &d) != napi_ok || !isIntIn(d, lo, hi)) return false;
  *out = (int64_t)d; return true;
}
// The elements of a JS array of at most `max` entries (reading them may run getters).
bool elementsUpTo(napi_env env, napi_value arr, uint32_t max, std::vector<napi_value>* out) {
  bool isArray = false;
  uint32_t len = 0;
  if (arr == nullptr || napi_is_array(env, arr, &isArray) != napi_ok || !isArray) return false;
  if (napi_get_array_length(env, arr, &len) != napi_ok || len > max) return false;
  out->resize(len);
  for (uint32_t k = 0; k < len; k++) if (napi_get_element(env, arr, k, &(*out)[k]) != napi_ok) return false;
  return true;
}
// The elements of a JS array of at most kSharesMax entries (one per strip).
bool elementsOf(napi_env env, napi_value arr, std::vector<napi_value>* out) { return elementsUpTo(env, arr, (uint32_t)kSharesMax, out); }
// Reads the named properties of o into v, all of them before anything else is looked at.
template <size_t N>
void readProps(napi_env env, napi_value o, const char* const (&names)[N], napi_value (&v)[N]) {
  for (size_t k = 0; k < N; k++) { v[k] = nullptr; napi_get_named_property(env, o, names[k], &v[k]); }
}
// Scrubs the thread's cached keys on every return path of a call, and empties OpenSSL's per-thread
// error queue: a share that fails its tag leaves an entry there, which node:crypto on this thread
// could later report as its own error.
struct ScrubOnExit { ~ScrubOnExit() { ctxs.scrub(); ERR_clear_error(); } };

// layout.ts sectionOfSlot, in the same double arithmetic so both sides agree on every boundary.
inline int64_t sectionOf(uint64_t address, int64_t slotBytes, int64_t sectionBytes) {
  return (int64_t)std::floor(((double)address * (double)slotBytes) / (double)sectionBytes);
}

/*
 * seal(o) seals `count` blocks in one call. o:
 *  blocks (count*blockBytes, or an Array of buffers of whole blocks that together hold the count
 *  blocks in order: writes received into buffers of their own are sealed in one call),
 *  aontKeys (count*32, fresh random per block), zero (Uint8Array count | null),
 *  volumeId (16), count, blockBytes, m, n, slotBytes, epoch,
 *  addresses, generations (Float64Array count: each block's own, so many small writes share one call),
 *  parity ((n-m)*m, from reed-solomon.ts parityMatrix), targets (Uint8Array of strips),
 *  outs (Array<Uint8Array>, one per target), outOffsets (Float64Array count*T: where block i's slot for
 *  target t starts in outs[t]), keys (distinct session keys, k*32), keyIdx (Int16Array T*sections:
 *  index into keys or -1), keySlot (Uint8Array T*sections), sections, sectionFirst, sectionBytes.
 * Every size and range is checked here as well as in TypeScript: a bad call throws, it never reads or
 * writes outside the buffers it was given.
 */
napi_value Seal(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value o;
  NAPI(napi_get_cb_info(env, info, &argc, &o, nullptr, nullptr));
  CHECK(argc >= 1, "seal: no argument");
  CHECK(ctxs.init(), "EVP init failed");
  ScrubOnExit scrub;
  // Phase 1, the only one that can run JavaScript (getters): every property, every outs element and,
  // when blocks is an array, every blocks element.
  static const char* const names[] = {"blocks", "aontKeys", "volumeId", "parity", "targets", "keys", "keyIdx", "keySlot",
                                      "addresses", "generations", "outOffsets", "zero", "count", "blockBytes", "m", "n",
                                      "slotBytes", "epoch", "sections", "sectionFirst", "sectionBytes", "outs"};
  enum { pBlocks, pAontKeys, pVolumeId, pParity, pTargets, pKeys, pKeyIdx, pKeySlot, pAddresses, pGenerations, pOutOffsets,
         pZero, pCount, pBlockBytes, pM, pN, pSlotBytes, pEpoch, pSections, pSectionFirst, pSectionBytes, pOuts };
  napi_value v[sizeof names / sizeof names[0]];
  readProps(env, o, names, v);
  std::vector<napi_value> outsV;
  CHECK(elementsOf(env, v[pOuts], &outsV), "outs");
  bool blocksIsArray = false;
  std::vector<napi_value> blocksV;
  if (v[pBlocks] != nullptr) NAPI(napi_is_array(env, v[pBlocks], &blocksIsArray));
  if (blocksIsArray) CHECK(elementsUpTo(env, v[pBlocks], (uint32_t)kCountMax, &blocksV), "blocks");
  // Phase 2: pointers and numbers, with no JavaScript in between.
  uint8_t *blocks = nullptr, *aontKeys, *vol, *parity, *targets, *keys, *keySlot, *addrB, *genB, *offB, *zero = nullptr;
  size_t blocksLen = 0, aontLen, volLen, parityLen, targetsLen, keysLen, keyIdxLen, keySlotLen, addrLen, genLen, offLen, zeroLen = 0;
  const int16_t* keyIdx;
  if (!blocksIsArray) CHECK(bytesOf(env, v[pBlocks], &blocks, &blocksLen), "blocks");
  CHECK(bytesOf(env, v[pAontKeys], &aontKeys, &aontLen), "aontKeys");
  CHECK(bytesOf(env, v[pVolumeId], &vol, &volLen) && volLen == kVolId, "volumeId");
  CHECK(bytesOf(env, v[pParity], &parity, &parityLen), "parity");
  CHECK(bytesOf(env, v[pTargets], &targets, &targetsLen), "targets");
  CHECK(bytesOf(env, v[pKeys], &keys, &keysLen) && keysLen % 32 == 0, "keys");
  CHECK(i16Of(env, v[pKeyIdx], &keyIdx, &keyIdxLen), "keyIdx");
  CHECK(bytesOf(env, v[pKeySlot], &keySlot, &keySlotLen), "keySlot");
  CHECK(f64Of(env, v[pAddresses], &addrB, &addrLen), "addresses");
  CHECK(f64Of(env, v[pGenerations], &genB, &genLen), "generations");
  CHECK(f64Of(env, v[pOutOffsets], &offB, &offLen), "outOffsets");
  napi_valuetype zt = napi_undefined;
  if (v[pZero] != nullptr) napi_typeof(env, v[pZero], &zt);
  if (zt != napi_null && zt != napi_undefined) CHECK(bytesOf(env, v[pZero], &zero, &zeroLen), "zero");
  int64_t count, blockBytes, m, n, slotBytes, epoch, sections, sectionFirst, sectionBytes;
  CHECK(intOf(env, v[pCount], 0, kCountMax, &count) && intOf(env, v[pBlockBytes], kBlockBytesMin, kBlockBytesMax, &blockBytes) &&
        intOf(env, v[pM], 1, kSharesMax, &m) && intOf(env, v[pN], m, kSharesMax, &n) &&
        intOf(env, v[pSlotBytes], 1, kSlotBytesMax, &slotBytes) && intOf(env, v[pEpoch], 0, kEpochMax, &epoch) &&
        intOf(env, v[pSections], 1, kSectionsMax, &sections) && intOf(env, v[pSectionFirst], 0, kSectionFirstMax, &sectionFirst) &&
        intOf(env, v[pSectionBytes], 1, kSectionBytesMax, &sectionBytes), "seal: a number is missing or out of range");
  const size_t T = targetsLen;
  CHECK(T >= 1 && T <= (size_t)n, "targets");
  // Block i's bytes: one buffer of count blocks, or buffers of whole blocks that add up to count.
  std::vector<const uint8_t*> blockAt((size_t)count);
  if (blocksIsArray) {
    size_t i = 0;
    for (napi_value b : blocksV) {
      uint8_t* d; size_t len;
      CHECK(bytesOf(env, b, &d, &len) && len % (size_t)blockBytes == 0, "blocks element");
      for (size_t at = 0; at < len; at += (size_t)blockBytes) {
        CHECK(i < (size_t)count, "sizes");
        blockAt[i++] = d + at;
      }
    }
    CHECK(i == (size_t)count, "sizes");
  } else {
    CHECK(blocksLen == (size_t)(count * blockBytes), "sizes");
    for (int64_t i = 0; i < count; i++) blockAt[(size_t)i] = blocks + i * blockBytes;
  }
  CHECK(aontLen >= (size_t)count * kAontKey, "sizes");
  CHECK(addrLen == (size_t)count * 8 && genLen == (size_t)count * 8 && offLen == (size_t)count * T * 8, "per-block array sizes");
  CHECK(parityLen == (size_t)((n - m) * m), "parity size");
  {
    uint8_t expected[kSharesMax * kSharesMax];
    parityMatrix((int)m, (int)n, expected);
    CHECK(parityLen == 0 || memcmp(parity, expected, parityLen) == 0, "parity is not reed-solomon.ts parityMatrix");
  }
  CHECK(!zero || zeroLen >= (size_t)count, "zero size");
  CHECK(keyIdxLen == T * sections && keySlotLen == T * sections, "key table size");
  const size_t fragLen = (blockBytes + kAontKey + m - 1) / m;
  CHECK(kMeta + fragLen + kTag <= (size_t)slotBytes, "slot too small");
  const double* addresses = (const double*)addrB;
  const double* generations = (const double*)genB;
  const double* outOffsets = (const double*)offB;
  CHECK(outsV.size() == T, "outs count");
  std::vector<uint8_t*> outs(T);
  std::vector<size_t> outLens(T);
  bool seenTarget[kSharesMax] = {};
  for (size_t t = 0; t < T; t++) {
    CHECK(bytesOf(env, outsV[t], &outs[t], &outLens[t]), "outs element");
    CHECK(targets[t] < n && !seenTarget[targets[t]], "target");
    seenTarget[targets[t]] = true;
  }
  // Validate every per-block value before producing anything, so a bad call leaves no half-sealed output.
  for (int64_t i = 0; i < count; i++) {
    CHECK(isIntIn(addresses[i], 0, kAddressMax) && isIntIn(generations[i], 1, kGenerationMax), "address or generation out of range");
    const int64_t section = sectionOf((uint64_t)addresses[i], slotBytes, sectionBytes) - sectionFirst;
    CHECK(section >= 0 && section < sections, "section outside key table");
    for (size_t t = 0; t < T; t++) {
      const double off = outOffsets[i * T + t];
      CHECK(isIntIn(off, 0, kOffsetMax) && (size_t)off + (size_t)slotBytes <= outLens[t], "out offset");
      const int16_t ki = keyIdx[t * sections + section];
      CHECK(ki >= 0 && (size_t)(ki + 1) * 32 <= keysLen, "a target strip has no active session key");
    }
  }
  std::vector<uint8_t> pkg(fragLen * n);  // data fragments then parity, contiguous
  uint8_t digest[32], nonce[kNonce], aad[kAad];
  static const uint8_t zeroIv[16] = {0};
  const char* failure = nullptr;
  for (int64_t i = 0; i < count && !failure; i++) {
    const uint64_t address = (uint64_t)addresses[i], gen = (uint64_t)generations[i];
    const bool isZero = zero && zero[i];
    const uint8_t kind = isZero ? kZero : kData;
    if (!isZero) {
      const uint8_t* blk = blockAt[(size_t)i];
      const uint8_t* K = aontKeys + i * kAontKey;
      int ol;
      if (!EVP_EncryptInit_ex(ctxs.ctr, nullptr, nullptr, K, zeroIv) || !EVP_EncryptUpdate(ctxs.ctr, pkg.data(), &ol, blk, (int)blockBytes)) { failure = "ctr"; break; }
      if (!sha256(pkg.data(), blockBytes, digest)) { failure = "sha"; break; }
      for (size_t k = 0; k < kAontKey; k++) pkg[blockBytes + k] = K[k] ^ digest[k];
      memset(pkg.data() + blockBytes + kAontKey, 0, fragLen * m - blockBytes - kAontKey);
      for (int64_t r = 0; r < n - m; r++) {
        uint8_t* p = pkg.data() + (m + r) * fragLen;
        memset(p, 0, fragLen);
        for (int64_t j = 0; j < m; j++) mulAdd(p, pkg.data() + j * fragLen, fragLen, parity[r * m + j]);
      }
    }
    const int64_t section = sectionOf(address, slotBytes, sectionBytes) - sectionFirst;  // checked above
    for (size_t t = 0; t < T; t++) {
      const uint8_t strip = targets[t];
      const int16_t ki = keyIdx[t * sections + section];
      const uint8_t ks = keySlot[t * sections + section];
      uint8_t* slot = outs[t] + (size_t)outOffsets[i * T + t];
      const size_t bodyLen = (isZero ? 0 : fragLen) + kTag;
      memset(slot, 0, slotBytes);
      be(slot, gen, 8); be(slot + 8, (uint64_t)epoch, 4); slot[12] = ks; slot[13] = kind; be(slot + 16, bodyLen, 4);
      makeNonce(nonce, address, gen, strip);
      makeAad(aad, vol, strip, (uint8_t)m, (uint8_t)n, kind, (uint32_t)blockBytes, address, gen, (uint32_t)epoch, ks);
      int ol;
      EVP_CIPHER_CTX* c = ctxs.gcm[t];
      uint8_t* body = slot + kMeta;
      if (!gcmStart((int)t, keys + ki * 32, nonce, 1) || !EVP_EncryptUpdate(c, nullptr, &ol, aad, kAad) ||
          (!isZero && !EVP_EncryptUpdate(c, body, &ol, pkg.data() + strip * fragLen, (int)fragLen)) ||
          !EVP_EncryptFinal_ex(c, body + bodyLen - kTag, &ol) ||
          !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTag, body + bodyLen - kTag)) { failure = "gcm"; break; }
    }
  }
  OPENSSL_cleanse(pkg.data(), pkg.size());
  OPENSSL_cleanse(digest, sizeof digest);
  CHECK(!failure, failure);
  return nullptr;
}

/*
 * open(o) — fast path only. o: slots (Array<Buffer> per strip read), strips (Uint8Array), volumeId, count, blockBytes,
 * m, n, slotBytes, first, addresses (optional Float64Array count: block i's address instead of first + i, for runs
 * gathered into one call), keys (k*32), keyIdx (Int16Array per read strip × sections × 256 key slots, -1 = none),
 * sections, sectionFirst, sectionBytes, verifyAll (bool), out (count*blockBytes, zero-filled by caller),
 * status (Uint8Array count): 0 opened, 1 caller must take the full JS path for this block.
 * Fast path = every read slot holds the same generation (>0), clean metadata, same kind, and the shares it needs
 * authenticate: exactly what openBlock returns with no rejections.
 */
napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value o;
  NAPI(napi_get_cb_info(env, info, &argc, &o, nullptr, nullptr));
  CHECK(argc >= 1, "open: no argument");
  CHECK(ctxs.init(), "EVP init failed");
  ScrubOnExit scrub;
  // Phase 1, the only one that can run JavaScript (getters): every property and every slots element.
  static const char* const names[] = {"strips", "volumeId", "keys", "keyIdx", "out", "status", "count", "blockBytes", "m", "n",
                                      "slotBytes", "first", "sections", "sectionFirst", "sectionBytes", "verifyAll", "slots", "addresses"};
  enum { pStrips, pVolumeId, pKeys, pKeyIdx, pOut, pStatus, pCount, pBlockBytes, pM, pN, pSlotBytes, pFirst, pSections,
         pSectionFirst, pSectionBytes, pVerifyAll, pSlots, pAddresses };
  napi_value v[sizeof names / sizeof names[0]];
  readProps(env, o, names, v);
  std::vector<napi_value> slotsV;
  CHECK(elementsOf(env, v[pSlots], &slotsV), "slots");
  // Phase 2: pointers and numbers, with no JavaScript in between.
  uint8_t *strips, *vol, *keys, *out, *status;
  const int16_t* keyIdx;
  size_t S, volLen, keysLen, keyIdxLen, outLen, statusLen;
  CHECK(bytesOf(env, v[pStrips], &strips, &S), "strips");
  CHECK(bytesOf(env, v[pVolumeId], &vol, &volLen) && volLen == kVolId, "volumeId");
  CHECK(bytesOf(env, v[pKeys], &keys, &keysLen), "keys");
  CHECK(i16Of(env, v[pKeyIdx], &keyIdx, &keyIdxLen), "keyIdx");
  CHECK(bytesOf(env, v[pOut], &out, &outLen), "out");
  CHECK(bytesOf(env, v[pStatus], &status, &statusLen), "status");
  int64_t count, blockBytes, m, n, slotBytes, first, sections, sectionFirst, sectionBytes;
  CHECK(intOf(env, v[pCount], 0, kCountMax, &count) && intOf(env, v[pBlockBytes], kBlockBytesMin, kBlockBytesMax, &blockBytes) &&
        intOf(env, v[pM], 1, kSharesMax, &m) && intOf(env, v[pN], m, kSharesMax, &n) &&
        intOf(env, v[pSlotBytes], 1, kSlotBytesMax, &slotBytes) && intOf(env, v[pFirst], 0, kAddressMax, &first) &&
        count <= kAddressMax - first + 1 &&
        intOf(env, v[pSections], 1, kSectionsMax, &sections) && intOf(env, v[pSectionFirst], 0, kSectionFirstMax, &sectionFirst) &&
        intOf(env, v[pSectionBytes], 1, kSectionBytesMax, &sectionBytes), "open: a number is missing or out of range");
  // Absent means false; anything else must be a boolean (a truthy non-boolean must not quietly skip the scrub's checks).
  bool verifyAll = false;
  napi_valuetype vt = napi_undefined;
  if (v[pVerifyAll] != nullptr) napi_typeof(env, v[pVerifyAll], &vt);
  CHECK(vt == napi_undefined || (vt == napi_boolean && napi_get_value_bool(env, v[pVerifyAll], &verifyAll) == napi_ok), "verifyAll");
  CHECK(S <= (size_t)n, "strips");
  CHECK(keysLen % 32 == 0, "keys");
  CHECK(outLen >= (size_t)(count * blockBytes) && statusLen >= (size_t)count, "sizes");
  const double* addresses = nullptr;
  napi_valuetype at = napi_undefined;
  if (v[pAddresses] != nullptr) napi_typeof(env, v[pAddresses], &at);
  if (at != napi_undefined && at != napi_null) {
    uint8_t* addrB; size_t addrLen;
    CHECK(f64Of(env, v[pAddresses], &addrB, &addrLen) && addrLen == (size_t)count * 8, "addresses");
    addresses = (const double*)addrB;
    for (int64_t i = 0; i < count; i++) CHECK(isIntIn(addresses[i], 0, kAddressMax), "address out of range");
  }
  CHECK(keyIdxLen == S * sections * 256, "key table size");
  const size_t fragLen = (blockBytes + kAontKey + m - 1) / m;
  CHECK(kMeta + fragLen + kTag <= (size_t)slotBytes, "slot too small");
  CHECK(slotsV.size() == S, "slots count");
  std::vector<uint8_t*> slots(S);
  for (size_t s = 0; s < S; s++) {
    size_t l; CHECK(bytesOf(env, slotsV[s], &slots[s], &l) && l >= (size_t)(count * slotBytes), "slot size");
    CHECK(strips[s] < n && (s == 0 || strips[s] > strips[s - 1]), "strips must ascend");
  }
  // Every block is the caller's to decide until it is opened here, even if a hard failure ends the loop early.
  if (count > 0) memset(status, 1, (size_t)count);
  std::vector<uint8_t> frags(fragLen * n);
  uint8_t digest[32], nonce[kNonce], aad[kAad], K[32], tagBuf[kTag];
  static const uint8_t zeroIv[16] = {0};
  const char* failure = nullptr;
  for (int64_t i = 0; i < count; i++) {
    status[i] = 1;
    const uint64_t address = addresses ? (uint64_t)addresses[i] : first + i;
    const int64_t section = sectionOf(address, slotBytes, sectionBytes) - sectionFirst;
    if (section < 0 || section >= sections || S < (size_t)m) continue;
    // All slots: same generation/epoch-independent kind; clean metadata.
    const uint8_t* s0 = slots[0] + i * slotBytes;
    const uint64_t gen = rdBe(s0, 8);
    const uint8_t kind = s0[13];
    if (gen == 0 || gen > (1ull << 48) - 1 || (kind != kData && kind != kZero)) continue;
    const size_t bodyLen = (kind == kData ? fragLen : 0) + kTag;
    bool ok = true;
    for (size_t s = 0; s < S && ok; s++) {
      const uint8_t* sl = slots[s] + i * slotBytes;
      if (rdBe(sl, 8) != gen || sl[13] != kind || rdBe(sl + 16, 4) != bodyLen || sl[14] || sl[15]) { ok = false; break; }
      for (size_t b = 20; b < kMeta; b++) if (sl[b]) { ok = false; break; }
      for (size_t b = kMeta + bodyLen; b < (size_t)slotBytes && ok; b++) if (sl[b]) ok = false;
    }
    if (!ok) continue;
    // Authenticate the first m (in strip order) or all.
    const size_t need = verifyAll ? S : (size_t)m;
    bool have[kSharesMax] = {};
    for (size_t s = 0; s < need && ok; s++) {
      const uint8_t* sl = slots[s] + i * slotBytes;
      const uint8_t strip = strips[s], ks = sl[12];
      const uint32_t epoch = (uint32_t)rdBe(sl + 8, 4);
      const int16_t ki = keyIdx[(s * sections + section) * 256 + ks];
      if (ki < 0 || (size_t)(ki + 1) * 32 > keysLen) { ok = false; break; }
      makeNonce(nonce, address, gen, strip);
      makeAad(aad, vol, strip, (uint8_t)m, (uint8_t)n, kind, (uint32_t)blockBytes, address, gen, epoch, ks);
      EVP_CIPHER_CTX* c = ctxs.gcm[s];
      int ol;
      if (!gcmStart((int)s, keys + ki * 32, nonce, 0) || !EVP_DecryptUpdate(c, nullptr, &ol, aad, kAad)) { ok = false; break; }
      const uint8_t* body = sl + kMeta;
      if (kind == kData && !EVP_DecryptUpdate(c, frags.data() + strip * fragLen, &ol, body, (int)fragLen)) { ok = false; break; }
      memcpy(tagBuf, body + bodyLen - kTag, kTag);
      if (!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTag, tagBuf) || EVP_DecryptFinal_ex(c, tagBuf, &ol) != 1) { ok = false; break; }
      if (s < (size_t)m) have[strip] = true;
    }
    if (!ok) continue;
    uint8_t* dst = out + i * blockBytes;
    if (kind == kZero) { memset(dst, 0, blockBytes); status[i] = 0; continue; }
    // Rebuild at most one missing data fragment from XOR parity (strip m); anything else goes to JS.
    int missing = -1, nMissing = 0;
    for (int j = 0; j < m; j++) if (!have[j]) { missing = j; nMissing++; }
    if (nMissing > 1 || (nMissing == 1 && (m >= n || !have[m]))) continue;
    if (nMissing == 1) {
      uint8_t* d = frags.data() + missing * fragLen;
      memcpy(d, frags.data() + m * fragLen, fragLen);
      for (int j = 0; j < m; j++) if (j != missing) xorInto(d, frags.data() + j * fragLen, fragLen);
    }
    if (!sha256(frags.data(), blockBytes, digest)) { failure = "sha"; break; }
    for (size_t k = 0; k < kAontKey; k++) K[k] = frags[blockBytes + k] ^ digest[k];
    int ol;
    if (!EVP_EncryptInit_ex(ctxs.ctr, nullptr, nullptr, K, zeroIv) || !EVP_EncryptUpdate(ctxs.ctr, dst, &ol, frags.data(), (int)blockBytes)) {
      failure = "ctr";
      break;
    }
    status[i] = 0;
  }
  OPENSSL_cleanse(frags.data(), frags.size());
  OPENSSL_cleanse(K, sizeof K);
  OPENSSL_cleanse(digest, sizeof digest);
  CHECK(!failure, failure);
  return nullptr;
}

/*
 * copy(dst, dstAt, src, srcAt, length) — memmove. V8 copies into or out of shared memory with a
 * relaxed-atomic word loop (it must allow racing threads); for the NBD payloads and cached blocks
 * the main thread moves, that was several percent of a sequential write's CPU.
 */
napi_value Copy(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value v[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  CHECK(napi_get_cb_info(env, info, &argc, v, nullptr, nullptr) == napi_ok && argc == 5, "copy: five arguments");
  uint8_t *dst = nullptr, *src = nullptr;
  size_t dstLen = 0, srcLen = 0;
  int64_t dstAt = 0, srcAt = 0, len = 0;
  CHECK(bytesOf(env, v[0], &dst, &dstLen) && bytesOf(env, v[2], &src, &srcLen), "copy: dst and src must be typed arrays");
  CHECK(intOf(env, v[1], 0, (int64_t)dstLen, &dstAt) && intOf(env, v[3], 0, (int64_t)srcLen, &srcAt) && intOf(env, v[4], 0, (int64_t)srcLen, &len),
        "copy: offsets and length must be integers within the arrays");
  CHECK((size_t)len <= srcLen - (size_t)srcAt && (size_t)len <= dstLen - (size_t)dstAt, "copy: range outside an array");
  if (len > 0) memmove(dst + dstAt, src + srcAt, (size_t)len);
  return nullptr;
}

// SHA-256 of src[srcAt, srcAt + len) into dst[dstAt, dstAt + 32): the journal's record header
// checksum, once per 4 KiB random write, where node:crypto's one-shot hash costs over a microsecond.
napi_value Sha256Into(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value v[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
  CHECK(napi_get_cb_info(env, info, &argc, v, nullptr, nullptr) == napi_ok && argc == 5, "sha256Into: five arguments");
  uint8_t *src = nullptr, *dst = nullptr;
  size_t srcLen = 0, dstLen = 0;
  int64_t srcAt = 0, len = 0, dstAt = 0;
  CHECK(bytesOf(env, v[0], &src, &srcLen) && bytesOf(env, v[3], &dst, &dstLen), "sha256Into: src and dst must be typed arrays");
  CHECK(intOf(env, v[1], 0, (int64_t)srcLen, &srcAt) && intOf(env, v[2], 0, (int64_t)srcLen, &len) && intOf(env, v[4], 0, (int64_t)dstLen, &dstAt),
        "sha256Into: offsets and length must be integers within the arrays");
  CHECK((size_t)len <= srcLen - (size_t)srcAt && SHA256_DIGEST_LENGTH <= dstLen - (size_t)dstAt, "sha256Into: range outside an array");
  uint8_t digest[SHA256_DIGEST_LENGTH];
  CHECK(sha256(src + srcAt, (size_t)len, digest), "sha256Into: digest failed");
  // Through a local copy: src and dst may overlap.
  memcpy(dst + dstAt, digest, SHA256_DIGEST_LENGTH);
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "sha256Into", NAPI_AUTO_LENGTH, Sha256Into, nullptr, &f);
  napi_set_named_property(env, exports, "sha256Into", f);
  napi_create_function(env, "copy", NAPI_AUTO_LENGTH, Copy, nullptr, &f);
  napi_set_named_property(env, exports, "copy", f);
  napi_create_function(env, "seal", NAPI_AUTO_LENGTH, Seal, nullptr, &f);
  napi_set_named_property(env, exports, "seal", f);
  napi_create_function(env, "open", NAPI_AUTO_LENGTH, Open, nullptr, &f);
  napi_set_named_property(env, exports, "open", f);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
