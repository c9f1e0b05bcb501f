// AVX2/FMA path of ai.smp.Attention: one (batch, head) with head_dim % 8 == 0, head_dim <= 64.
// K^T (pre-scaled, 8x8 transposes) and V are packed once per head into contiguous scratch:
// read in place, a head's rows sit ld floats apart and fall into few L1 sets, and re-reading
// them for every query pass thrashes L1. Six queries go through together: each K^T vector
// (scores) and each V vector (mixing) feeds six rows, and 12 accumulators keep both FMA
// pipes busy instead of waiting on FMA latency with 8.
#include <immintrin.h>

#include <cstdint>
#include <limits>

#include "attention.h"
#include "avx2_math.h"

namespace smp {
namespace {

// kt[c * padded + j] = scale * k[j * ld + c] for j < seq, 0 for seq <= j < padded (8x8 blocks).
void pack_kt(const float* k, int64_t ld, int64_t seq, int64_t d, int64_t padded, float scale, float* kt) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t j = 0; j < padded; j += 8) {
    for (int64_t c = 0; c < d; c += 8) {
      __m256 r[8];
      for (int64_t t = 0; t < 8; ++t)
        r[t] = j + t < seq ? _mm256_mul_ps(_mm256_loadu_ps(k + (j + t) * ld + c), sc) : _mm256_setzero_ps();
      transpose8(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
      for (int64_t t = 0; t < 8; ++t) _mm256_store_ps(kt + (c + t) * padded + j, r[t]);
    }
  }
}

// s_r[j] = q_r . kt[:, j] + bias[j] for R query rows (R <= 6), j < padded (a multiple of 16):
// 2 K^T vectors x R rows = up to 12 independent accumulators, 8 loads per 12 FMAs.
template <int R>
void scores_rows(const float* q, int64_t ld, const float* kt, const float* bias, int64_t d, int64_t padded,
                 float* s) {
  for (int64_t j = 0; j < padded; j += 16) {
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m256 k0 = _mm256_load_ps(kt + c * padded + j), k1 = _mm256_load_ps(kt + c * padded + j + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 x = _mm256_broadcast_ss(q + r * ld + c);
        acc[r][0] = _mm256_fmadd_ps(x, k0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x, k1, acc[r][1]);
      }
    }
    const __m256 m0 = _mm256_load_ps(bias + j), m1 = _mm256_load_ps(bias + j + 8);
    for (int r = 0; r < R; ++r) {
      _mm256_store_ps(s + r * padded + j, _mm256_add_ps(acc[r][0], m0));
      _mm256_store_ps(s + r * padded + j + 8, _mm256_add_ps(acc[r][1], m1));
    }
  }
}

inline float hsum(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Row of scores -> unnormalised probabilities in place; returns 1 / their sum. Padded lanes
// hold -inf and come out as ~1e-38 (exp is clamped at -87): they never reach the output.
float softmax_row(float* sc, int64_t padded) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < padded; j += 8) m = _mm256_max_ps(m, _mm256_load_ps(sc + j));
  const __m256 best = _mm256_set1_ps(hmax(m));
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < padded; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_load_ps(sc + j), best));
    _mm256_store_ps(sc + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  return 1.0f / hsum(sum);
}

// out_r[c0 .. c0 + 8 NV) = inv_r * sum_j p_r[j] v_j[c0 ..] for R rows (R * NV <= 12 accumulators).
template <int R, int NV>
void mix_columns(const float* p, int64_t padded, const float* inv, const float* v, int64_t d, int64_t seq,
                 int64_t c0, float* out, int64_t ld) {
  __m256 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < seq; ++j) {
    __m256 row[NV];
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) row[c] = _mm256_load_ps(v + j * d + c0 + 8 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 w = _mm256_broadcast_ss(p + r * padded + j);
#pragma GCC unroll 2
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_fmadd_ps(w, row[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m256 s = _mm256_set1_ps(inv[r]);
#pragma GCC unroll 2
    for (int c = 0; c < NV; ++c) _mm256_storeu_ps(out + r * ld + c0 + 8 * c, _mm256_mul_ps(acc[r][c], s));
  }
}

// R query rows starting at q (row stride ld_in): scores, softmax, then the mix into out (row
// stride ld_out).
template <int R>
void rows_pass(const float* q, int64_t ld_in, const float* kt, const float* vp, const float* bias, int64_t d,
               int64_t seq, int64_t padded, float* scores, float* out, int64_t ld_out) {
  scores_rows<R>(q, ld_in, kt, bias, d, padded, scores);
  float inv[R];
  for (int r = 0; r < R; ++r) inv[r] = softmax_row(scores + r * padded, padded);
  int64_t c0 = 0;
  for (; c0 + 16 <= d; c0 += 16) mix_columns<R, 2>(scores, padded, inv, vp, d, seq, c0, out, ld_out);
  if (c0 < d) mix_columns<R, 1>(scores, padded, inv, vp, d, seq, c0, out, ld_out);
}

using RowsPass = void (*)(const float*, int64_t, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                          float*, float*, int64_t);
constexpr RowsPass kRowsPass[kAttentionRows + 1] = {nullptr,      rows_pass<1>, rows_pass<2>, rows_pass<3>,
                                                    rows_pass<4>, rows_pass<5>, rows_pass<6>};

}  // namespace

void attention_head_avx2(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* mask_bias, int64_t padded, float* kt, float* scores, float* out) {
  const int64_t ld = s.ld_in, d = s.head_dim, seq = s.seq;
  pack_kt(k, ld, seq, d, padded, s.scale, kt);
  float* vp = kt + d * padded;   // V rows, contiguous [seq][d]
  for (int64_t j = 0; j < seq; ++j)
    for (int64_t c = 0; c < d; c += 8) _mm256_store_ps(vp + j * d + c, _mm256_loadu_ps(v + j * ld + c));
  for (int64_t i = 0; i < seq; i += kAttentionRows) {
    const int64_t rows = seq - i < kAttentionRows ? seq - i : kAttentionRows;
    // The next pass's query and output rows sit ld floats apart: fetch them while this one runs.
    for (int64_t r = i + kAttentionRows; r < i + 2 * kAttentionRows && r < seq; ++r)
      for (int64_t c = 0; c < d; c += 16) {
        _mm_prefetch(reinterpret_cast<const char*>(q + r * ld + c), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(out + r * s.ld_out + c), _MM_HINT_T0);
      }
    kRowsPass[rows](q + i * ld, ld, kt, vp, mask_bias, d, seq, padded, scores, out + i * s.ld_out, s.ld_out);
  }
}

}  // namespace smp
