// Prototype: seal/open whole batches of stripvault blocks in one N-API call, reusing EVP contexts.
// Byte layout mirrors appliance/split/{aont,split,share-binding,reed-solomon}.ts and strip/slot.ts.
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <cstring>
#include <cstdint>
#include <vector>

namespace {

constexpr size_t kAontKey = 32, kTag = 16, kNonce = 12, kAad = 56, kMeta = 32, kVolId = 16;
constexpr int kSharesMax = 16;
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

void mulAdd(uint8_t* dst, const uint8_t* src, size_t len, uint8_t c) {
  if (c == 0) return;
  if (c == 1) { for (size_t i = 0; i < len; i++) dst[i] ^= src[i]; return; }
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
  EVP_CIPHER_CTX* ctr = nullptr;
  EVP_MD_CTX* md = nullptr;
  EVP_CIPHER_CTX* gcm[kSharesMax] = {};
  uint8_t gcmKey[kSharesMax][32] = {};  // key currently scheduled in gcm[i], so an unchanged key is not re-expanded
  int gcmEnc[kSharesMax] = {};
  bool gcmHas[kSharesMax] = {};
  bool init() {
    if (ctr) return true;
    ctr = EVP_CIPHER_CTX_new(); md = EVP_MD_CTX_new();
    if (!ctr || !md || !EVP_EncryptInit_ex(ctr, EVP_aes_256_ctr(), nullptr, nullptr, nullptr)) return false;
    for (int i = 0; i < kSharesMax; i++) {
      gcm[i] = EVP_CIPHER_CTX_new();
      if (!gcm[i] || !EVP_CipherInit_ex(gcm[i], EVP_aes_256_gcm(), nullptr, nullptr, nullptr, 1)) return false;
    }
    return true;
  }
  ~Ctxs() {
    OPENSSL_cleanse(gcmKey, sizeof gcmKey);
    EVP_CIPHER_CTX_free(ctr);
    EVP_MD_CTX_free(md);
    for (auto* c : gcm) EVP_CIPHER_CTX_free(c);
  }
};
thread_local Ctxs ctxs;

// Sets key (if it changed) and IV on gcm context `slot`, direction enc.
bool gcmStart(int slot, const uint8_t* key, const uint8_t* nonce, int enc) {
  EVP_CIPHER_CTX* c = ctxs.gcm[slot];
  if (!ctxs.gcmHas[slot] || ctxs.gcmEnc[slot] != enc || CRYPTO_memcmp(ctxs.gcmKey[slot], key, 32) != 0) {
    if (!EVP_CipherInit_ex(c, nullptr, nullptr, key, nonce, enc)) return false;
    memcpy(ctxs.gcmKey[slot], key, 32);
    ctxs.gcmEnc[slot] = enc;
    ctxs.gcmHas[slot] = true;
    return true;
  }
  return EVP_CipherInit_ex(c, nullptr, nullptr, nullptr, nonce, enc) == 1;
}

bool sha256(const uint8_t* d, size_t len, uint8_t* out) {
  unsigned int ol = 0;
  return EVP_DigestInit_ex(ctxs.md, EVP_sha256(), nullptr) && EVP_DigestUpdate(ctxs.md, d, len) && EVP_DigestFinal_ex(ctxs.md, out, &ol);
}

// ---- N-API helpers ----
#define NAPI(call) do { if ((call) != napi_ok) { napi_throw_error(env, nullptr, "napi: " #call); return nullptr; } } while (0)
#define CHECK(cond, msg) do { if (!(cond)) { napi_throw_error(env, nullptr, msg); return nullptr; } } while (0)

bool bytesOf(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type t; size_t n; void* d; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &n, &d, &ab, &off) != napi_ok) return false;
  size_t el = (t == napi_uint8_array || t == napi_int8_array || t == napi_uint8_clamped_array) ? 1
            : (t == napi_uint16_array || t == napi_int16_array) ? 2 : (t == napi_int32_array || t == napi_uint32_array) ? 4 : 0;
  if (!el) return false;
  *data = (uint8_t*)d; *len = n * el; return true;
}
int64_t i64(napi_env env, napi_value v) { int64_t r = -1; napi_get_value_int64(env, v, &r); return r; }

/*
 * seal(o) with o:
 *  blocks, aontKeys (count*32), zero (Uint8Array|null), volumeId, count, blockBytes, m, n, slotBytes, first,
 *  generation, epoch, parity ((n-m)*m), targets (Uint8Array of strips), outs (Array<Buffer>, per target count*slotBytes),
 *  keys (distinct session keys, k*32), keyIdx (Int16Array, per target per section: index into keys or -1),
 *  keySlot (Uint8Array, same shape), sections (number of sections in the table), sectionFirst, sectionBytes
 */
napi_value Seal(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value o;
  NAPI(napi_get_cb_info(env, info, &argc, &o, nullptr, nullptr));
  CHECK(ctxs.init(), "EVP init failed");
  auto prop = [&](const char* k) { napi_value v; napi_get_named_property(env, o, k, &v); return v; };
  uint8_t *blocks, *aontKeys, *vol, *parity, *targets, *keys, *keyIdxB, *keySlot, *zero = nullptr;
  size_t blocksLen, aontLen, volLen, parityLen, targetsLen, keysLen, keyIdxLen, keySlotLen, zeroLen = 0;
  CHECK(bytesOf(env, prop("blocks"), &blocks, &blocksLen), "blocks");
  CHECK(bytesOf(env, prop("aontKeys"), &aontKeys, &aontLen), "aontKeys");
  CHECK(bytesOf(env, prop("volumeId"), &vol, &volLen) && volLen == kVolId, "volumeId");
  CHECK(bytesOf(env, prop("parity"), &parity, &parityLen), "parity");
  CHECK(bytesOf(env, prop("targets"), &targets, &targetsLen), "targets");
  CHECK(bytesOf(env, prop("keys"), &keys, &keysLen), "keys");
  CHECK(bytesOf(env, prop("keyIdx"), &keyIdxB, &keyIdxLen), "keyIdx");
  CHECK(bytesOf(env, prop("keySlot"), &keySlot, &keySlotLen), "keySlot");
  napi_value zv = prop("zero"); napi_valuetype zt; napi_typeof(env, zv, &zt);
  if (zt != napi_null && zt != napi_undefined) CHECK(bytesOf(env, zv, &zero, &zeroLen), "zero");
  const int64_t count = i64(env, prop("count")), blockBytes = i64(env, prop("blockBytes")), m = i64(env, prop("m")),
                n = i64(env, prop("n")), slotBytes = i64(env, prop("slotBytes")), first = i64(env, prop("first")),
                generation = i64(env, prop("generation")), epoch = i64(env, prop("epoch")), sections = i64(env, prop("sections")),
                sectionFirst = i64(env, prop("sectionFirst")), sectionBytes = i64(env, prop("sectionBytes"));
  const size_t T = targetsLen;
  CHECK(m >= 1 && n >= m && n <= kSharesMax && T >= 1 && T <= (size_t)n, "geometry");
  CHECK(blocksLen == (size_t)(count * blockBytes) && aontLen >= (size_t)count * kAontKey, "sizes");
  CHECK(parityLen == (size_t)((n - m) * m), "parity size");
  CHECK(!zero || zeroLen >= (size_t)count, "zero size");
  const int16_t* keyIdx = (const int16_t*)keyIdxB;
  CHECK(keyIdxLen == T * sections * 2 && keySlotLen == T * sections, "key table size");
  const size_t fragLen = (blockBytes + kAontKey + m - 1) / m;
  CHECK(kMeta + fragLen + kTag <= (size_t)slotBytes, "slot too small");
  napi_value outsArr = prop("outs");
  std::vector<uint8_t*> outs(T);
  for (size_t t = 0; t < T; t++) {
    napi_value e; NAPI(napi_get_element(env, outsArr, (uint32_t)t, &e));
    size_t l; CHECK(bytesOf(env, e, &outs[t], &l) && l >= (size_t)(count * slotBytes), "out size");
    CHECK(targets[t] < n, "target");
  }
  std::vector<uint8_t> pkg(fragLen * n);  // data fragments then parity, contiguous
  uint8_t digest[32], nonce[kNonce], aad[kAad];
  static const uint8_t zeroIv[16] = {0};
  for (int64_t i = 0; i < count; i++) {
    const uint64_t address = first + i, gen = generation + i;
    const bool isZero = zero && zero[i];
    const uint8_t kind = isZero ? kZero : kData;
    if (!isZero) {
      const uint8_t* blk = blocks + i * blockBytes;
      const uint8_t* K = aontKeys + i * kAontKey;
      int ol;
      if (!EVP_EncryptInit_ex(ctxs.ctr, nullptr, nullptr, K, zeroIv) || !EVP_EncryptUpdate(ctxs.ctr, pkg.data(), &ol, blk, (int)blockBytes))
        CHECK(false, "ctr");
      CHECK(sha256(pkg.data(), blockBytes, digest), "sha");
      for (size_t k = 0; k < kAontKey; k++) pkg[blockBytes + k] = K[k] ^ digest[k];
      memset(pkg.data() + blockBytes + kAontKey, 0, fragLen * m - blockBytes - kAontKey);
      for (int64_t r = 0; r < n - m; r++) {
        uint8_t* p = pkg.data() + (m + r) * fragLen;
        memset(p, 0, fragLen);
        for (int64_t j = 0; j < m; j++) mulAdd(p, pkg.data() + j * fragLen, fragLen, parity[r * m + j]);
      }
    }
    const int64_t section = (int64_t)(((double)address * (double)slotBytes) / (double)sectionBytes) - sectionFirst;
    CHECK(section >= 0 && section < sections, "section outside key table");
    for (size_t t = 0; t < T; t++) {
      const uint8_t strip = targets[t];
      const int16_t ki = keyIdx[t * sections + section];
      CHECK(ki >= 0 && (size_t)(ki + 1) * 32 <= keysLen, "a target strip has no active session key");
      const uint8_t ks = keySlot[t * sections + section];
      uint8_t* slot = outs[t] + i * slotBytes;
      const size_t bodyLen = (isZero ? 0 : fragLen) + kTag;
      memset(slot, 0, slotBytes);
      be(slot, gen, 8); be(slot + 8, (uint64_t)epoch, 4); slot[12] = ks; slot[13] = kind; be(slot + 16, bodyLen, 4);
      makeNonce(nonce, address, gen, strip);
      makeAad(aad, vol, strip, (uint8_t)m, (uint8_t)n, kind, (uint32_t)blockBytes, address, gen, (uint32_t)epoch, ks);
      int ol;
      EVP_CIPHER_CTX* c = ctxs.gcm[t];
      CHECK(gcmStart((int)t, keys + ki * 32, nonce, 1), "gcm init");
      CHECK(EVP_EncryptUpdate(c, nullptr, &ol, aad, kAad), "gcm aad");
      uint8_t* body = slot + kMeta;
      if (!isZero) CHECK(EVP_EncryptUpdate(c, body, &ol, pkg.data() + strip * fragLen, (int)fragLen), "gcm enc");
      CHECK(EVP_EncryptFinal_ex(c, body + bodyLen - kTag, &ol), "gcm final");
      CHECK(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTag, body + bodyLen - kTag), "gcm tag");
    }
  }
  OPENSSL_cleanse(pkg.data(), pkg.size());
  OPENSSL_cleanse(digest, sizeof digest);
  return nullptr;
}

/*
 * open(o) — fast path only. o: slots (Array<Buffer> per strip read), strips (Uint8Array), volumeId, count, blockBytes,
 * m, n, slotBytes, first, keys (k*32), keyIdx (Int16Array per read strip × sections × 256 key slots, -1 = none),
 * sections, sectionFirst, sectionBytes, verifyAll (bool), out (count*blockBytes, zero-filled by caller),
 * status (Uint8Array count): 0 opened, 1 caller must take the full JS path for this block.
 * Fast path = every read slot holds the same generation (>0), clean metadata, same kind, and the shares it needs
 * authenticate: exactly what openBlock returns with no rejections.
 */
napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value o;
  NAPI(napi_get_cb_info(env, info, &argc, &o, nullptr, nullptr));
  CHECK(ctxs.init(), "EVP init failed");
  auto prop = [&](const char* k) { napi_value v; napi_get_named_property(env, o, k, &v); return v; };
  uint8_t *strips, *vol, *keys, *keyIdxB, *out, *status;
  size_t S, volLen, keysLen, keyIdxLen, outLen, statusLen;
  CHECK(bytesOf(env, prop("strips"), &strips, &S), "strips");
  CHECK(bytesOf(env, prop("volumeId"), &vol, &volLen) && volLen == kVolId, "volumeId");
  CHECK(bytesOf(env, prop("keys"), &keys, &keysLen), "keys");
  CHECK(bytesOf(env, prop("keyIdx"), &keyIdxB, &keyIdxLen), "keyIdx");
  CHECK(bytesOf(env, prop("out"), &out, &outLen), "out");
  CHECK(bytesOf(env, prop("status"), &status, &statusLen), "status");
  const int64_t count = i64(env, prop("count")), blockBytes = i64(env, prop("blockBytes")), m = i64(env, prop("m")),
                n = i64(env, prop("n")), slotBytes = i64(env, prop("slotBytes")), first = i64(env, prop("first")),
                sections = i64(env, prop("sections")), sectionFirst = i64(env, prop("sectionFirst")),
                sectionBytes = i64(env, prop("sectionBytes"));
  bool verifyAll = false; napi_get_value_bool(env, prop("verifyAll"), &verifyAll);
  CHECK(m >= 1 && n >= m && n <= kSharesMax && S <= (size_t)n, "geometry");
  CHECK(outLen >= (size_t)(count * blockBytes) && statusLen >= (size_t)count, "sizes");
  CHECK(keyIdxLen == S * sections * 256 * 2, "key table size");
  const int16_t* keyIdx = (const int16_t*)keyIdxB;
  const size_t fragLen = (blockBytes + kAontKey + m - 1) / m;
  napi_value slotsArr = prop("slots");
  std::vector<uint8_t*> slots(S);
  for (size_t s = 0; s < S; s++) {
    napi_value e; NAPI(napi_get_element(env, slotsArr, (uint32_t)s, &e));
    size_t l; CHECK(bytesOf(env, e, &slots[s], &l) && l >= (size_t)(count * slotBytes), "slot size");
    CHECK(strips[s] < n && (s == 0 || strips[s] > strips[s - 1]), "strips must ascend");
  }
  std::vector<uint8_t> frags(fragLen * n);
  uint8_t digest[32], nonce[kNonce], aad[kAad], K[32], tagBuf[kTag];
  static const uint8_t zeroIv[16] = {0};
  for (int64_t i = 0; i < count; i++) {
    status[i] = 1;
    const uint64_t address = first + i;
    const int64_t section = (int64_t)(((double)address * (double)slotBytes) / (double)sectionBytes) - sectionFirst;
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
    if (nMissing > 1 || (nMissing == 1 && !have[m])) continue;
    if (nMissing == 1) {
      uint8_t* d = frags.data() + missing * fragLen;
      memcpy(d, frags.data() + m * fragLen, fragLen);
      for (int j = 0; j < m; j++) if (j != missing) for (size_t b = 0; b < fragLen; b++) d[b] ^= frags[j * fragLen + b];
    }
    CHECK(sha256(frags.data(), blockBytes, digest), "sha");
    for (size_t k = 0; k < kAontKey; k++) K[k] = frags[blockBytes + k] ^ digest[k];
    int ol;
    if (!EVP_EncryptInit_ex(ctxs.ctr, nullptr, nullptr, K, zeroIv) || !EVP_EncryptUpdate(ctxs.ctr, dst, &ol, frags.data(), (int)blockBytes))
      CHECK(false, "ctr");
    status[i] = 0;
  }
  OPENSSL_cleanse(frags.data(), frags.size());
  OPENSSL_cleanse(K, sizeof K);
  return nullptr;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "seal", NAPI_AUTO_LENGTH, Seal, nullptr, &f);
  napi_set_named_property(env, exports, "seal", f);
  napi_create_function(env, "open", NAPI_AUTO_LENGTH, Open, nullptr, &f);
  napi_set_named_property(env, exports, "open", f);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
