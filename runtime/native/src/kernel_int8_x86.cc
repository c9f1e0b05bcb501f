// x86 paths of the int8 sparse linear (kernel_int8.h): the AVX2 activation quantization and
// three accumulations, each in a function with its own target attribute (this file is compiled
// with -mavx2 only, so nothing here uses FMA or AVX-512 unless the function says so).
//
// A row's entries are taken four at a time (any four columns): their four X^T rows (32 tokens,
// u8) are interleaved into [token][4 bytes] and multiplied with the four weights:
//   a: t0 .. t31, b, c, d  --unpack epi8/epi16-->  q0 = [a0 b0 c0 d0 | a1 b1 c1 d1 | ...]
// then one vpdpbusd (VNNI) or vpmaddubsw + vpmaddwd (AVX2) per 8 tokens. On Zen 5 the inner loop
// alone ran MiniLM's shapes 2.3-2.8x (AVX-VNNI, two accumulator sets), 2.0x (AVX2, |w| <= 64) and
// 1.45x (AVX2 sign trick) faster than the fp32 AVX2 CSR loop (benchmarks/int8_csr_probe.sh); whole
// calls with quantization and the fp32 store, 1.1-1.7x (benchmarks/int8_linear_ab.py).
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "avx2_math.h"
#include "kernel_int8.h"

namespace smp {
namespace {

// Per-token scales of a full tile, then 8x8 transposes: quantized X^T rows of 8 tokens.
void quantize_tile_avx2(const float* x, int64_t ld, int64_t mt, int64_t cols, uint8_t* xq, float* st) {
  if (mt != kTile || cols % 8 != 0 || cols == 0) {
    int8_portable_ops().quantize_tile(x, ld, mt, cols, xq, st);
    return;
  }
  alignas(32) float inv[kTile];
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  for (int64_t t = 0; t < kTile; ++t) {
    __m256 amax = zero, chk = zero;
    for (int64_t k = 0; k < cols; k += 8) {
      const __m256 v = _mm256_loadu_ps(x + t * ld + k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
      chk = _mm256_add_ps(chk, _mm256_mul_ps(v, zero));  // NaN once any value is NaN or inf
    }
    alignas(32) float a[8], c[8];
    _mm256_store_ps(a, amax);
    _mm256_store_ps(c, chk);
    float m = 0.0f, bad = 0.0f;
    for (int j = 0; j < 8; ++j) m = m > a[j] ? m : a[j], bad += c[j];
    const bool finite = bad == 0.0f;
    inv[t] = finite && m > 0.0f ? 127.0f / m : 0.0f;
    st[t] = finite ? m / 127.0f : NAN;
  }
  // Four columns of 8 tokens at a time: int32 -> packs (saturating) -> 32 bytes, -128 raised
  // to -127, +128 as a flip of the sign bit, then one 8-byte row of X^T per column.
  const __m256i floor = _mm256_set1_epi8(-127), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t g = 0; g < kTile; g += 8) {
    const __m256 scale = _mm256_load_ps(inv + g);
    for (int64_t k = 0; k < cols; k += 8) {
      const float* s = x + g * ld + k;
      __m256 r[8];
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(s + j * ld);
      transpose8(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
      for (int j = 0; j < 8; j += 4) {
        const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(r[j], scale));
        const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(r[j + 1], scale));
        const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(r[j + 2], scale));
        const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(r[j + 3], scale));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        q = _mm256_xor_si256(_mm256_max_epi8(q, floor), flip);
        q = _mm256_permutevar8x32_epi32(q, order);  // columns j .. j + 3, 8 tokens each
        uint8_t* dst = xq + (k + j) * kTile + g;
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), lo);
        _mm_storeh_pd(reinterpret_cast<double*>(dst + kTile), _mm_castsi128_pd(lo));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 2 * kTile), hi);
        _mm_storeh_pd(reinterpret_cast<double*>(dst + 3 * kTile), _mm_castsi128_pd(hi));
      }
    }
  }
}

// The hidden tile of SparseFFNInt8, already [rows][32 tokens]: per-lane scales over the rows,
// then one 32-byte row of quantized values per row (lanes >= mt: 128, scale 0).
void quantize_transposed_avx2(const float* ht, int64_t rows, int64_t mt, uint8_t* hq, float* st) {
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  __m256 live[4], amax[4], chk[4], inv[4];
  for (int j = 0; j < 4; ++j) {
    alignas(32) int32_t lanes[8];
    for (int i = 0; i < 8; ++i) lanes[i] = 8 * j + i < mt ? -1 : 0;
    live[j] = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(lanes)));
    amax[j] = chk[j] = zero;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_and_ps(live[j], _mm256_load_ps(ht + r * kTile + 8 * j));
      amax[j] = _mm256_max_ps(amax[j], _mm256_andnot_ps(sign, v));
      chk[j] = _mm256_add_ps(chk[j], _mm256_mul_ps(v, zero));  // NaN once any value is NaN or inf
    }
  for (int j = 0; j < 4; ++j) {
    const __m256 finite = _mm256_cmp_ps(chk[j], zero, _CMP_EQ_OQ);
    const __m256 ok = _mm256_and_ps(finite, _mm256_cmp_ps(amax[j], zero, _CMP_GT_OQ));
    inv[j] = _mm256_and_ps(ok, _mm256_div_ps(_mm256_set1_ps(127.0f), amax[j]));
    const __m256 s = _mm256_blendv_ps(_mm256_set1_ps(NAN), _mm256_div_ps(amax[j], _mm256_set1_ps(127.0f)), finite);
    _mm256_storeu_ps(st + 8 * j, _mm256_and_ps(live[j], s));
  }
  const __m256i floor = _mm256_set1_epi8(-127), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t r = 0; r < rows; ++r) {
    __m256i q32[4];
    for (int j = 0; j < 4; ++j)
      q32[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_and_ps(live[j], _mm256_load_ps(ht + r * kTile + 8 * j)), inv[j]));
    __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(q32[0], q32[1]), _mm256_packs_epi32(q32[2], q32[3]));
    q = _mm256_xor_si256(_mm256_max_epi8(q, floor), flip);
    _mm256_store_si256(reinterpret_cast<__m256i*>(hq + r * kTile), _mm256_permutevar8x32_epi32(q, order));
  }
}

#define SMP_INTERLEAVE(x, o, q0, q1, q2, q3)                                                             \
  {                                                                                                      \
    const __m256i a_ = _mm256_load_si256(reinterpret_cast<const __m256i*>((x) + (o)[0]));               \
    const __m256i b_ = _mm256_load_si256(reinterpret_cast<const __m256i*>((x) + (o)[1]));               \
    const __m256i c_ = _mm256_load_si256(reinterpret_cast<const __m256i*>((x) + (o)[2]));               \
    const __m256i d_ = _mm256_load_si256(reinterpret_cast<const __m256i*>((x) + (o)[3]));               \
    const __m256i ablo_ = _mm256_unpacklo_epi8(a_, b_), abhi_ = _mm256_unpackhi_epi8(a_, b_);            \
    const __m256i cdlo_ = _mm256_unpacklo_epi8(c_, d_), cdhi_ = _mm256_unpackhi_epi8(c_, d_);            \
    q0 = _mm256_unpacklo_epi16(ablo_, cdlo_);                                                            \
    q1 = _mm256_unpackhi_epi16(ablo_, cdlo_);                                                            \
    q2 = _mm256_unpacklo_epi16(abhi_, cdhi_);                                                            \
    q3 = _mm256_unpackhi_epi16(abhi_, cdhi_);                                                            \
  }

// acc lanes hold tokens {0-3, 16-19}, {4-7, 20-23}, {8-11, 24-27}, {12-15, 28-31}: back to
// token order, minus the u8 offset's compensation, scaled, plus the bias (mul and add, no FMA).
__attribute__((target("avx2"))) inline void finish_row(const Int8Csr& w, int64_t r, const float* st, __m256i a0,
                                                       __m256i a1, __m256i a2, __m256i a3, int32_t compensation,
                                                       float* out) {
  const __m256i c = _mm256_set1_epi32(compensation);
  const __m256i v[4] = {_mm256_permute2x128_si256(a0, a1, 0x20), _mm256_permute2x128_si256(a2, a3, 0x20),
                        _mm256_permute2x128_si256(a0, a1, 0x31), _mm256_permute2x128_si256(a2, a3, 0x31)};
  const __m256 ws = _mm256_set1_ps(w.scale[r]), b = _mm256_set1_ps(w.bias[r]);
  for (int j = 0; j < 4; ++j) {
    const __m256 s = _mm256_mul_ps(ws, _mm256_loadu_ps(st + 8 * j));
    const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(v[j], c));
    _mm256_storeu_ps(out + 8 * j, _mm256_add_ps(b, _mm256_mul_ps(s, f)));
  }
}

// One accumulation per dot-product flavour; DOT(acc, q, w) adds the four-byte products.
// Two accumulator sets (a, b) take alternate groups of four so the chains overlap.
#define SMP_ACCUMULATE(NAME, TARGET, DOT, PREP, COMP)                                                     \
  __attribute__((target(TARGET))) void NAME(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, \
                                            int64_t r1, float* yt) {                                     \
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));        \
    (void)ones;                                                                                          \
    (void)flip;                                                                                          \
    const int32_t* off = w.col_off.data();                                                               \
    const int32_t* qv = reinterpret_cast<const int32_t*>(w.values.data());                               \
    for (int64_t r = r0; r < r1; ++r) {                                                                  \
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0; \
      int64_t e = w.row_ptr[r];                                                                          \
      const int64_t end = w.row_ptr[r + 1];                                                              \
      for (; e + 8 <= end; e += 8) {                                                                     \
        __m256i q0, q1, q2, q3, p0, p1, p2, p3;                                                          \
        SMP_INTERLEAVE(xq, off + e, q0, q1, q2, q3);                                                     \
        SMP_INTERLEAVE(xq, off + e + 4, p0, p1, p2, p3);                                                 \
        const __m256i wa = _mm256_set1_epi32(qv[e / 4]), wb = _mm256_set1_epi32(qv[e / 4 + 1]);         \
        PREP(q0) PREP(q1) PREP(q2) PREP(q3) PREP(p0) PREP(p1) PREP(p2) PREP(p3)                          \
        DOT(a0, q0, wa) DOT(a1, q1, wa) DOT(a2, q2, wa) DOT(a3, q3, wa)                                  \
        DOT(b0, p0, wb) DOT(b1, p1, wb) DOT(b2, p2, wb) DOT(b3, p3, wb)                                  \
      }                                                                                                  \
      if (e < end) {                                                                                     \
        __m256i q0, q1, q2, q3;                                                                          \
        SMP_INTERLEAVE(xq, off + e, q0, q1, q2, q3);                                                     \
        const __m256i wa = _mm256_set1_epi32(qv[e / 4]);                                                 \
        PREP(q0) PREP(q1) PREP(q2) PREP(q3)                                                              \
        DOT(a0, q0, wa) DOT(a1, q1, wa) DOT(a2, q2, wa) DOT(a3, q3, wa)                                  \
      }                                                                                                  \
      finish_row(w, r, st, _mm256_add_epi32(a0, b0), _mm256_add_epi32(a1, b1), _mm256_add_epi32(a2, b2), \
                 _mm256_add_epi32(a3, b3), (COMP) ? 128 * w.row_sum[r] : 0, yt + (r - r0) * kTile);     \
    }                                                                                                    \
  }

#define SMP_NO_PREP(q)
// u8 (x + 128) x s8 weights in one instruction, then the offset's compensation.
#define SMP_DOT_AVXVNNI(acc, q, wv) acc = _mm256_dpbusd_avx_epi32(acc, q, wv);
#define SMP_DOT_AVX512VNNI(acc, q, wv) acc = _mm256_dpbusd_epi32(acc, q, wv);
// |w| <= 64: u8 x s8 pair sums stay within int16 (255 * 64 * 2 < 32767), no saturation.
#define SMP_DOT_AVX2_NARROW(acc, q, wv) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, wv), ones));
// Full-range weights: back to s8 activations, and |x| x sign(w, x): pair sums <= 2 * 127 * 127.
#define SMP_PREP_SIGNED(q) q = _mm256_xor_si256(q, flip);
#define SMP_DOT_AVX2_SIGN(acc, q, wv) \
  acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(wv, q)), ones));

SMP_ACCUMULATE(accumulate_avxvnni, "avx2,avxvnni", SMP_DOT_AVXVNNI, SMP_NO_PREP, true)
SMP_ACCUMULATE(accumulate_avx512vnni, "avx2,avx512f,avx512vl,avx512vnni", SMP_DOT_AVX512VNNI, SMP_NO_PREP, true)
SMP_ACCUMULATE(accumulate_avx2_narrow, "avx2", SMP_DOT_AVX2_NARROW, SMP_NO_PREP, true)
SMP_ACCUMULATE(accumulate_avx2_sign, "avx2", SMP_DOT_AVX2_SIGN, SMP_PREP_SIGNED, false)

void accumulate_avx2(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, int64_t r1, float* yt) {
  if (w.max_abs <= 64) {
    accumulate_avx2_narrow(w, xq, st, r0, r1, yt);
  } else {
    accumulate_avx2_sign(w, xq, st, r0, r1, yt);
  }
}

}  // namespace

const Int8Ops& int8_x86_ops(Int8Path path) {
  static const Int8Ops avx2{quantize_tile_avx2, accumulate_avx2, quantize_transposed_avx2};
  static const Int8Ops avxvnni{quantize_tile_avx2, accumulate_avxvnni, quantize_transposed_avx2};
  static const Int8Ops avx512vnni{quantize_tile_avx2, accumulate_avx512vnni, quantize_transposed_avx2};
  if (path == Int8Path::kAvx512Vnni) return avx512vnni;
  return path == Int8Path::kAvxVnni ? avxvnni : avx2;
}

}  // namespace smp
