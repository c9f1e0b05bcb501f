// x86 paths of the int8 attention (attention_int8.cc has the arithmetic): one (batch, head)
// with head_dim % 32 == 0. Per head, Q and K are quantized per row and V per column into the
// thread's scratch, K as [head_dim / 4][keys][4 bytes] and V as [head_dim / 32][keys / 4][32
// columns][4 keys], so that one 32-byte load feeds 8 keys (scores) or 8 columns (mixing) with
// four products each: vpdpbusd (VNNI) or vpmaddubsw + vpmaddwd (AVX2). Four query rows share
// each K load; two share each V load. Softmax stays float (exp as in the fp32 kernel); its
// weights become 7-bit integers. This file is built with -mavx2 -mfma; the VNNI kernels come
// from attention_int8_x86.inc compiled under their own target pragmas.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "attention.h"
#include "avx2_math.h"
#include "scratch.h"

namespace smp {
namespace int8_attention {

#define SMP_I8_CAT2(a, b) a##b
#define SMP_I8_CAT(a, b) SMP_I8_CAT2(a, b)

// Query rows scored together (the head's rows are padded to a multiple of it with zeros).
constexpr int64_t kQueryRows = 4;

// One head, quantized (pointers into buf, sized by prepare_head).
struct HeadScratch {
  Buffer buf[11];
  int64_t rows = 0;                  // seq rounded up to kQueryRows
  int8_t* qs8 = nullptr;             // [rows][d] Q as s8 (AVX2) ...
  uint8_t* qu8 = nullptr;            // ... and as u8 = s8 + 128 (VNNI)
  float* qscale = nullptr;           // [rows]
  int32_t* kq = nullptr;             // [d / 4][padded] words of 4 s8 of K
  float* kscale = nullptr;           // [padded] ks_j * attention scale
  int32_t* kcomp = nullptr;          // [padded] 128 * sum_c kq_jc (the u8 offset's compensation)
  int8_t* vq = nullptr;              // [d / 32][padded / 4][128 bytes]
  float* vscale = nullptr;           // [d]
  float* vinv = nullptr;             // [d] 127 / max |v| (0 for a zero column)
  float* sc = nullptr;               // [kQueryRows][padded] scores
  uint8_t* pq = nullptr;             // [kQueryRows][padded] 7-bit weights
};

namespace {


inline int32_t hsum8(__m256i v) {
  __m128i m = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0xB1));
  return _mm_cvtsi128_si32(m);
}

// 32 floats times per-lane inverse scales -> 32 s8 in order (rint, clamped to [-127, 127]).
inline __m256i quantize32(const float* x, const __m256* inv) {
  const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv[0]));
  const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8), inv[1]));
  const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 16), inv[2]));
  const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 24), inv[3]));
  const __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  return _mm256_permutevar8x32_epi32(_mm256_max_epi8(q, _mm256_set1_epi8(-127)),
                                     _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// One row of d values -> s8 (and u8 = s8 + 128 when u8 is set); returns the row's scale.
float quantize_row(const float* x, int64_t d, int8_t* s8, uint8_t* u8) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; c += 8) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + c)));
  const float m = hmax(amax);
  const __m256 inv = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
  const __m256 invs[4] = {inv, inv, inv, inv};
  for (int64_t c = 0; c < d; c += 32) {
    const __m256i q = quantize32(x + c, invs);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(s8 + c), q);
    if (u8 != nullptr)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(u8 + c), _mm256_xor_si256(q, _mm256_set1_epi8(-128)));
  }
  return m / 127.0f;
}

int32_t byte_sum(const int8_t* q, int64_t d) {
  __m256i acc = _mm256_setzero_si256();
  for (int64_t c = 0; c < d; c += 32) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + c)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  return hsum8(acc);
}

void prepare_qk(const AttentionShape& s, const float* q, const float* k, int64_t padded, HeadScratch& t) {
  const int64_t ld = s.ld_in, d = s.head_dim, seq = s.seq, words = d / 4;
  for (int64_t i = 0; i < t.rows; ++i) {
    if (i < seq) {
      t.qscale[i] = quantize_row(q + i * ld, d, t.qs8 + i * d, t.qu8 + i * d);
    } else {
      t.qscale[i] = 0.0f;
      std::memset(t.qs8 + i * d, 0, static_cast<size_t>(d));
      std::memset(t.qu8 + i * d, 128, static_cast<size_t>(d));
    }
  }
  alignas(32) int8_t row[128];
  for (int64_t j = 0; j < padded; ++j) {
    if (j < seq) {
      t.kscale[j] = quantize_row(k + j * ld, d, row, nullptr) * s.scale;
      t.kcomp[j] = 128 * byte_sum(row, d);
    } else {
      std::memset(row, 0, static_cast<size_t>(d));
      t.kscale[j] = 0.0f;
      t.kcomp[j] = 0;
    }
    int32_t w[32];
    std::memcpy(w, row, static_cast<size_t>(d));
    for (int64_t g = 0; g < words; ++g) t.kq[g * padded + j] = w[g];
  }
}

// V per column over the keys, then 4 keys x 32 columns interleaved per 128 bytes (lanes in the
// order SMP_I8_INTERLEAVE gives: columns {0-3, 16-19}, {4-7, 20-23}, {8-11, 24-27}, {12-15, 28-31}).
void prepare_v(const AttentionShape& s, const float* v, int64_t padded, HeadScratch& t) {
  const int64_t ld = s.ld_in, d = s.head_dim, seq = s.seq, groups = padded / 4;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t c = 0; c < d; c += 8) {
    __m256 amax = _mm256_setzero_ps();
    for (int64_t j = 0; j < seq; ++j) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + j * ld + c)));
    const __m256 m = amax;
    _mm256_store_ps(t.vscale + c, _mm256_div_ps(m, _mm256_set1_ps(127.0f)));
    const __m256 ok = _mm256_cmp_ps(m, _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_store_ps(t.vinv + c, _mm256_and_ps(ok, _mm256_div_ps(_mm256_set1_ps(127.0f), m)));
  }
  for (int64_t h = 0; h < d; h += 32) {
    __m256 inv[4];
    for (int x = 0; x < 4; ++x) inv[x] = _mm256_load_ps(t.vinv + h + 8 * x);
    for (int64_t jg = 0; jg < groups; ++jg) {
      __m256i r[4];
      for (int x = 0; x < 4; ++x) {
        const int64_t j = 4 * jg + x;
        r[x] = j < seq ? quantize32(v + j * ld + h, inv) : _mm256_setzero_si256();
      }
      const __m256i ablo = _mm256_unpacklo_epi8(r[0], r[1]), abhi = _mm256_unpackhi_epi8(r[0], r[1]);
      const __m256i cdlo = _mm256_unpacklo_epi8(r[2], r[3]), cdhi = _mm256_unpackhi_epi8(r[2], r[3]);
      __m256i* dst = reinterpret_cast<__m256i*>(t.vq + ((h / 32) * groups + jg) * 128);
      _mm256_store_si256(dst, _mm256_unpacklo_epi16(ablo, cdlo));
      _mm256_store_si256(dst + 1, _mm256_unpackhi_epi16(ablo, cdlo));
      _mm256_store_si256(dst + 2, _mm256_unpacklo_epi16(abhi, cdhi));
      _mm256_store_si256(dst + 3, _mm256_unpackhi_epi16(abhi, cdhi));
    }
  }
}

}  // namespace

// Scores row -> 7-bit weights (bytes, `padded` of them); returns 1 / their sum.
float weights_row(const float* sc, int64_t padded, uint8_t* pq) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  for (int64_t j = 0; j < padded; j += 8) m = _mm256_max_ps(m, _mm256_load_ps(sc + j));
  const __m256 best = _mm256_set1_ps(hmax(m)), scale = _mm256_set1_ps(127.0f);
  __m256i total = _mm256_setzero_si256();
  for (int64_t j = 0; j < padded; j += 32) {
    __m256i w[4];
    for (int x = 0; x < 4; ++x) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(sc + j + 8 * x), best));
      w[x] = _mm256_cvtps_epi32(_mm256_mul_ps(e, scale));
      total = _mm256_add_epi32(total, w[x]);
    }
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(w[0], w[1]), _mm256_packs_epi32(w[2], w[3]));
    _mm256_store_si256(reinterpret_cast<__m256i*>(pq + j),
                       _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  return 1.0f / static_cast<float>(hsum8(total));
}

bool prepare_head(const AttentionShape& s, const float* q, const float* k, const float* v, int64_t padded,
                  HeadScratch& t) {
  t.rows = (s.seq + kQueryRows - 1) / kQueryRows * kQueryRows;
  const size_t d = static_cast<size_t>(s.head_dim), rows = static_cast<size_t>(t.rows), keys = static_cast<size_t>(padded);
  t.qs8 = reinterpret_cast<int8_t*>(t.buf[0].get(rows * d / 4 + 8));
  t.qu8 = reinterpret_cast<uint8_t*>(t.buf[1].get(rows * d / 4 + 8));
  t.qscale = t.buf[2].get(rows);
  t.kq = reinterpret_cast<int32_t*>(t.buf[3].get(keys * d / 4));
  t.kscale = t.buf[4].get(keys);
  t.kcomp = reinterpret_cast<int32_t*>(t.buf[5].get(keys));
  t.vq = reinterpret_cast<int8_t*>(t.buf[6].get(keys * d / 4));
  t.vscale = t.buf[7].get(d);
  t.vinv = t.buf[8].get(d);
  t.sc = t.buf[9].get(kQueryRows * keys);
  t.pq = reinterpret_cast<uint8_t*>(t.buf[10].get(kQueryRows * keys / 4));
  // Buffer::get returns null (and keeps its old block) when growing fails: check what it returned.
  const void* got[] = {t.qs8, t.qu8, t.qscale, t.kq, t.kscale, t.kcomp, t.vq, t.vscale, t.vinv, t.sc, t.pq};
  for (const void* p : got)
    if (p == nullptr) return false;
  prepare_qk(s, q, k, padded, t);
  prepare_v(s, v, padded, t);
  return true;
}

thread_local HeadScratch tls_head;


// The three accumulation flavours: SMP_I8_QK adds the four-byte products of the query words and
// K, SMP_I8_PV those of the weights and V.
#define SMP_I8_NAME head_avx2
#define SMP_I8_QBYTES qs8
#define SMP_I8_COMP 0
#define SMP_I8_QK(acc, b, k) \
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(b), _mm256_sign_epi8(k, b)), ones));
#define SMP_I8_PV(acc, b, v) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(b, v), ones));
#include "attention_int8_x86.inc"

#pragma GCC push_options
#pragma GCC target("avxvnni")
#define SMP_I8_NAME head_avxvnni
#define SMP_I8_QBYTES qu8
#define SMP_I8_COMP 1
#define SMP_I8_QK(acc, b, k) acc = _mm256_dpbusd_avx_epi32(acc, b, k);
#define SMP_I8_PV(acc, b, v) acc = _mm256_dpbusd_avx_epi32(acc, b, v);
#include "attention_int8_x86.inc"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512vnni")
#define SMP_I8_NAME head_avx512vnni
#define SMP_I8_QBYTES qu8
#define SMP_I8_COMP 1
#define SMP_I8_QK(acc, b, k) acc = _mm256_dpbusd_epi32(acc, b, k);
#define SMP_I8_PV(acc, b, v) acc = _mm256_dpbusd_epi32(acc, b, v);
#include "attention_int8_x86.inc"
#pragma GCC pop_options

}  // namespace int8_attention

Int8HeadFn attention_head_int8_x86(int path) {
  if (path >= 3) return int8_attention::head_avx512vnni;
  if (path == 2) return int8_attention::head_avxvnni;
  return int8_attention::head_avx2;
}

}  // namespace smp
