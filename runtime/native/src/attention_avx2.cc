// AVX2/FMA path of ai.smp.Attention: one (batch, head) with head_dim % 8 == 0, head_dim <= 64.
// K^T (pre-scaled, 8x8 transposes) and V are packed once per head into contiguous scratch:
// read in place, a head's rows sit ld floats apart and fall into few L1 sets, and re-reading
// them for every query pair thrashes L1. Two queries share every K^T load when scoring and,
// for head_dim <= 32, every V row when mixing.
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

// sa[j] = qa . kt[:, j] + bias[j] (and sb for qb) for j < padded (a multiple of 32).
void scores2(const float* qa, const float* qb, const float* kt, const float* bias, int64_t d, int64_t padded,
             float* sa, float* sb) {
  for (int64_t j = 0; j < padded; j += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t c = 0; c < d; ++c) {
      const float* kp = kt + c * padded + j;
      const __m256 k0 = _mm256_load_ps(kp), k1 = _mm256_load_ps(kp + 8), k2 = _mm256_load_ps(kp + 16),
                   k3 = _mm256_load_ps(kp + 24);
      const __m256 x = _mm256_broadcast_ss(qa + c), y = _mm256_broadcast_ss(qb + c);
      a0 = _mm256_fmadd_ps(x, k0, a0);
      a1 = _mm256_fmadd_ps(x, k1, a1);
      a2 = _mm256_fmadd_ps(x, k2, a2);
      a3 = _mm256_fmadd_ps(x, k3, a3);
      b0 = _mm256_fmadd_ps(y, k0, b0);
      b1 = _mm256_fmadd_ps(y, k1, b1);
      b2 = _mm256_fmadd_ps(y, k2, b2);
      b3 = _mm256_fmadd_ps(y, k3, b3);
    }
    const float* bp = bias + j;
    const __m256 m0 = _mm256_load_ps(bp), m1 = _mm256_load_ps(bp + 8), m2 = _mm256_load_ps(bp + 16),
                 m3 = _mm256_load_ps(bp + 24);
    _mm256_store_ps(sa + j, _mm256_add_ps(a0, m0));
    _mm256_store_ps(sa + j + 8, _mm256_add_ps(a1, m1));
    _mm256_store_ps(sa + j + 16, _mm256_add_ps(a2, m2));
    _mm256_store_ps(sa + j + 24, _mm256_add_ps(a3, m3));
    _mm256_store_ps(sb + j, _mm256_add_ps(b0, m0));
    _mm256_store_ps(sb + j + 8, _mm256_add_ps(b1, m1));
    _mm256_store_ps(sb + j + 16, _mm256_add_ps(b2, m2));
    _mm256_store_ps(sb + j + 24, _mm256_add_ps(b3, m3));
  }
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
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

// out_r = inv_r * sum_j p_r[j] v_j for R rows (R * NV accumulators).
template <int NV, int R>
void mix(const float* const* p, const float* inv, const float* v, int64_t ld, int64_t seq, float* const* out) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t j = 0; j < seq; ++j) {
    const float* vj = v + j * ld;
    __m256 row[NV];
    for (int c = 0; c < NV; ++c) row[c] = _mm256_loadu_ps(vj + 8 * c);
    for (int r = 0; r < R; ++r) {
      const __m256 w = _mm256_broadcast_ss(p[r] + j);
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm256_fmadd_ps(w, row[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const __m256 s = _mm256_set1_ps(inv[r]);
    for (int c = 0; c < NV; ++c) _mm256_storeu_ps(out[r] + 8 * c, _mm256_mul_ps(acc[r][c], s));
  }
}

template <int NV>
void mix_rows(const float* const* p, const float* inv, int rows, const float* v, int64_t ld, int64_t seq,
              float* const* out) {
  if (rows == 2 && NV <= 4) {
    mix<NV, 2>(p, inv, v, ld, seq, out);
    return;
  }
  for (int r = 0; r < rows; ++r) mix<NV, 1>(p + r, inv + r, v, ld, seq, out + r);
}

void mix_dispatch(int64_t nv, const float* const* p, const float* inv, int rows, const float* v, int64_t ld,
                  int64_t seq, float* const* out) {
  switch (nv) {
    case 1: mix_rows<1>(p, inv, rows, v, ld, seq, out); break;
    case 2: mix_rows<2>(p, inv, rows, v, ld, seq, out); break;
    case 3: mix_rows<3>(p, inv, rows, v, ld, seq, out); break;
    case 4: mix_rows<4>(p, inv, rows, v, ld, seq, out); break;
    case 5: mix_rows<5>(p, inv, rows, v, ld, seq, out); break;
    case 6: mix_rows<6>(p, inv, rows, v, ld, seq, out); break;
    case 7: mix_rows<7>(p, inv, rows, v, ld, seq, out); break;
    default: mix_rows<8>(p, inv, rows, v, ld, seq, out); break;
  }
}

}  // namespace

void attention_head_avx2(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* mask_bias, int64_t padded, float* kt, float* scores, float* out) {
  const int64_t ld = s.heads * s.head_dim, d = s.head_dim, seq = s.seq;
  pack_kt(k, ld, seq, d, padded, s.scale, kt);
  float* vp = kt + d * padded;   // V rows, contiguous [seq][d]
  for (int64_t j = 0; j < seq; ++j)
    for (int64_t c = 0; c < d; c += 8) _mm256_store_ps(vp + j * d + c, _mm256_loadu_ps(v + j * ld + c));
  float* sa = scores;
  float* sb = scores + padded;
  for (int64_t i = 0; i < seq; i += 2) {
    const int rows = i + 1 < seq ? 2 : 1;
    const float* qa = q + i * ld;
    scores2(qa, rows == 2 ? qa + ld : qa, kt, mask_bias, d, padded, sa, sb);
    const float inv[2] = {softmax_row(sa, padded), rows == 2 ? softmax_row(sb, padded) : 0.0f};
    const float* p[2] = {sa, sb};
    float* o[2] = {out + i * ld, out + (i + 1) * ld};
    mix_dispatch(d / 8, p, inv, rows, vp, d, seq, o);
  }
}

}  // namespace smp
