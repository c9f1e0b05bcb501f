// AVX2/FMA primitives. Only this file is compiled with -mavx2 -mfma; it is called only
// after resolve_isa() saw both features at run time.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "avx2_math.h"
#include "kernel.h"

namespace smp {
namespace {

// X [32 tokens][cols] -> xt [cols][32], 8x8 blocks; ragged tiles and column tails scalar.
void pack_tile_avx2(const float* x, int64_t ld, int64_t mt, int64_t cols, float* xt) {
  int64_t k = 0;
  if (mt == kTile) {
    for (; k + 8 <= cols; k += 8) {
      for (int64_t g = 0; g < kTile; g += 8) {
        const float* s = x + g * ld + k;
        __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ld), r2 = _mm256_loadu_ps(s + 2 * ld),
               r3 = _mm256_loadu_ps(s + 3 * ld), r4 = _mm256_loadu_ps(s + 4 * ld),
               r5 = _mm256_loadu_ps(s + 5 * ld), r6 = _mm256_loadu_ps(s + 6 * ld),
               r7 = _mm256_loadu_ps(s + 7 * ld);
        transpose8(r0, r1, r2, r3, r4, r5, r6, r7);
        float* d = xt + k * kTile + g;
        _mm256_store_ps(d, r0);
        _mm256_store_ps(d + kTile, r1);
        _mm256_store_ps(d + 2 * kTile, r2);
        _mm256_store_ps(d + 3 * kTile, r3);
        _mm256_store_ps(d + 4 * kTile, r4);
        _mm256_store_ps(d + 5 * kTile, r5);
        _mm256_store_ps(d + 6 * kTile, r6);
        _mm256_store_ps(d + 7 * kTile, r7);
      }
    }
  }
  for (; k < cols; ++k) {
    float* dst = xt + k * kTile;
    for (int64_t t = 0; t < mt; ++t) dst[t] = x[t * ld + k];
    for (int64_t t = mt; t < kTile; ++t) dst[t] = 0.0f;
  }
}

struct Acc {
  __m256 a0, a1, a2, a3;
};

inline void fma4(Acc& acc, __m256 w, const float* p) {
  acc.a0 = _mm256_fmadd_ps(w, _mm256_load_ps(p), acc.a0);
  acc.a1 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8), acc.a1);
  acc.a2 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 16), acc.a2);
  acc.a3 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 24), acc.a3);
}

inline Acc load4(const float* p) {
  return {_mm256_load_ps(p), _mm256_load_ps(p + 8), _mm256_load_ps(p + 16), _mm256_load_ps(p + 24)};
}

inline void store4(float* p, const Acc& a, const Acc& b) {
  _mm256_store_ps(p, _mm256_add_ps(a.a0, b.a0));
  _mm256_store_ps(p + 8, _mm256_add_ps(a.a1, b.a1));
  _mm256_store_ps(p + 16, _mm256_add_ps(a.a2, b.a2));
  _mm256_store_ps(p + 24, _mm256_add_ps(a.a3, b.a3));
}

// One output row, blocks of width 1: value of block e for this row at v[e * stride].
// Two accumulator sets so consecutive FMAs do not wait on each other.
inline Acc splat4(float value) {
  const __m256 b = _mm256_set1_ps(value);
  return {b, b, b, b};
}

// `start`: the accumulator's current value (the bias, or the sum over earlier chunks).
inline void row_bw1(float* acc_row, Acc start, const float* xc, const int32_t* off, const float* v,
                    int64_t stride, int64_t begin, int64_t end) {
  Acc a = start;
  Acc b{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t e = begin;
  for (; e + 2 <= end; e += 2) {
    fma4(a, _mm256_broadcast_ss(v + e * stride), xc + off[e]);
    fma4(b, _mm256_broadcast_ss(v + (e + 1) * stride), xc + off[e + 1]);
  }
  if (e < end) fma4(a, _mm256_broadcast_ss(v + e * stride), xc + off[e]);
  store4(acc_row, a, b);
}

// One CSR row (blocks 1 x 1, values contiguous). The loop is bound by loads, not FMAs: one
// 16-byte load now feeds four weights through in-lane splats (vpermilps), where four broadcast
// loads did before. On Zen 3 (best of 200 passes of a standalone copy of the loop) this took
// a nonzero and 32-token tile from 1.36-1.45 to 1.25-1.30 ns with X^T in L2, and from 1.16 to
// 0.98 ns in L1. As in row_bw1, even positions of the row go to one accumulator set and odd
// positions to the other.
inline void row_csr(float* acc_row, Acc start, const float* xc, const int32_t* off, const float* v, int64_t begin,
                    int64_t end) {
  Acc a = start;
  Acc b = splat4(0.0f);
  int64_t e = begin;
  for (; e + 4 <= end; e += 4) {
    const __m256 w4 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(v + e));
    fma4(a, _mm256_permute_ps(w4, 0x00), xc + off[e]);
    fma4(b, _mm256_permute_ps(w4, 0x55), xc + off[e + 1]);
    fma4(a, _mm256_permute_ps(w4, 0xAA), xc + off[e + 2]);
    fma4(b, _mm256_permute_ps(w4, 0xFF), xc + off[e + 3]);
  }
  if (e + 2 <= end) {
    fma4(a, _mm256_broadcast_ss(v + e), xc + off[e]);
    fma4(b, _mm256_broadcast_ss(v + e + 1), xc + off[e + 1]);
    e += 2;
  }
  if (e < end) fma4(a, _mm256_broadcast_ss(v + e), xc + off[e]);
  store4(acc_row, a, b);
}

// One output row of a block row with blocks of width bw >= 2 (row-major bh x bw values).
inline void row_blocks(float* acc_row, const float* xc, const int32_t* off, const float* v, int64_t bsize,
                       int64_t bw, int64_t begin, int64_t end) {
  Acc a = load4(acc_row);
  Acc b{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t e = begin; e < end; ++e) {
    const float* vb = v + e * bsize;
    const float* xb = xc + off[e];
    int64_t j = 0;
    for (; j + 2 <= bw; j += 2) {
      fma4(a, _mm256_broadcast_ss(vb + j), xb + j * kTile);
      fma4(b, _mm256_broadcast_ss(vb + j + 1), xb + (j + 1) * kTile);
    }
    if (j < bw) fma4(a, _mm256_broadcast_ss(vb + j), xb + j * kTile);
  }
  store4(acc_row, a, b);
}

// Two rows of a block row (row i and i + 1) at once: each X^T row is loaded once and feeds
// both rows' accumulators.
inline void row_pair(float* acc0, float* acc1, const float* xc, const int32_t* off, const float* v, int64_t bsize,
                     int64_t bw, int64_t begin, int64_t end) {
  Acc a = load4(acc0), b = load4(acc1);
  for (int64_t e = begin; e < end; ++e) {
    const float* va = v + e * bsize;
    const float* xb = xc + off[e];
    for (int64_t j = 0; j < bw; ++j) {
      const float* p = xb + j * kTile;
      const __m256 x0 = _mm256_load_ps(p), x1 = _mm256_load_ps(p + 8), x2 = _mm256_load_ps(p + 16),
                   x3 = _mm256_load_ps(p + 24);
      const __m256 wa = _mm256_broadcast_ss(va + j), wb = _mm256_broadcast_ss(va + bw + j);
      a.a0 = _mm256_fmadd_ps(wa, x0, a.a0);
      a.a1 = _mm256_fmadd_ps(wa, x1, a.a1);
      a.a2 = _mm256_fmadd_ps(wa, x2, a.a2);
      a.a3 = _mm256_fmadd_ps(wa, x3, a.a3);
      b.a0 = _mm256_fmadd_ps(wb, x0, b.a0);
      b.a1 = _mm256_fmadd_ps(wb, x1, b.a1);
      b.a2 = _mm256_fmadd_ps(wb, x2, b.a2);
      b.a3 = _mm256_fmadd_ps(wb, x3, b.a3);
    }
  }
  const Acc zero = splat4(0.0f);
  store4(acc0, a, zero);
  store4(acc1, b, zero);
}

void accumulate_avx2(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt) {
  const int64_t bh = w.bh, bw = w.bw, bsize = bh * bw;
  if (w.num_chunks == 1 && bw == 1 && bh == 1) {
    // One chunk: accumulators start from the bias in registers and are stored once.
    const int64_t* rp = w.chunk_row_ptr(0);
    for (int64_t r = r0; r < r1; ++r)
      row_csr(yt + (r - r0) * kTile, splat4(w.bias[r]), xt, w.col_off.data(), w.values.data(), rp[r], rp[r + 1]);
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const __m256 b = _mm256_set1_ps(w.bias[r]);
    float* p = yt + (r - r0) * kTile;
    _mm256_store_ps(p, b);
    _mm256_store_ps(p + 8, b);
    _mm256_store_ps(p + 16, b);
    _mm256_store_ps(p + 24, b);
  }
  for (int64_t c = 0; c < w.num_chunks; ++c) {
    const float* xc = xt + c * w.chunk_cols * kTile;
    const int64_t* rp = w.chunk_row_ptr(c);
    for (int64_t br = r0 / bh; br < r1 / bh; ++br) {
      if (rp[br] == rp[br + 1]) continue;
      int64_t i = 0;
      for (; i + 2 <= bh; i += 2) {
        float* acc_row = yt + (br * bh + i - r0) * kTile;
        row_pair(acc_row, acc_row + kTile, xc, w.col_off.data(), w.values.data() + i * bw, bsize, bw, rp[br],
                 rp[br + 1]);
      }
      for (; i < bh; ++i) {
        float* acc_row = yt + (br * bh + i - r0) * kTile;
        const float* v = w.values.data() + i * bw;
        if (bsize == 1) {
          row_csr(acc_row, load4(acc_row), xc, w.col_off.data(), v, rp[br], rp[br + 1]);
        } else if (bw == 1) {
          row_bw1(acc_row, load4(acc_row), xc, w.col_off.data(), v, bsize, rp[br], rp[br + 1]);
        } else {
          row_blocks(acc_row, xc, w.col_off.data(), v, bsize, bw, rp[br], rp[br + 1]);
        }
      }
    }
  }
}

inline void put(float* dst, __m256 v, bool stream) {
  if (stream && (reinterpret_cast<uintptr_t>(dst) & 31) == 0) {
    _mm256_stream_ps(dst, v);
  } else {
    _mm256_storeu_ps(dst, v);
  }
}

// Eight rows r.. of yt, tokens t..t+8, transposed: out[j] holds token t + j.
inline void gather8(const float* yt, int64_t r, int64_t t, __m256 out[8]) {
  const float* s = yt + r * kTile + t;
  __m256 v0 = _mm256_load_ps(s), v1 = _mm256_load_ps(s + kTile), v2 = _mm256_load_ps(s + 2 * kTile),
         v3 = _mm256_load_ps(s + 3 * kTile), v4 = _mm256_load_ps(s + 4 * kTile), v5 = _mm256_load_ps(s + 5 * kTile),
         v6 = _mm256_load_ps(s + 6 * kTile), v7 = _mm256_load_ps(s + 7 * kTile);
  transpose8(v0, v1, v2, v3, v4, v5, v6, v7);
  out[0] = v0, out[1] = v1, out[2] = v2, out[3] = v3, out[4] = v4, out[5] = v5, out[6] = v6, out[7] = v7;
}

// 0.5 v (1 + erf(v / sqrt 2)); erf(x) as the rational x P(x^2) / Q(x^2) on x clamped to [-4, 4]
// (Eigen's float erf; erf(4) = 1 - 1.5e-8): |GELU error| <= 1e-6 over [-10, 10], against 4.6e-7
// for Abramowitz & Stegun 7.1.26 + exp, and 1.65x as fast (no exp; GELU was ~10% of an int8
// MiniLM run at batch 32). A NaN stays NaN (min/max return the second operand, x, for a NaN).
inline __m256 gelu8(__m256 v) {
  __m256 x = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
  x = _mm256_min_ps(_mm256_set1_ps(4.0f), _mm256_max_ps(_mm256_set1_ps(-4.0f), x));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_fmadd_ps(x2, _mm256_set1_ps(-2.72614225801306e-10f), _mm256_set1_ps(2.77068142495902e-08f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.10102402082508e-06f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-5.69250639462346e-05f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-7.34990630326855e-04f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.95459980854025e-03f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-1.60960333262415e-02f));
  p = _mm256_mul_ps(x, p);
  __m256 q = _mm256_fmadd_ps(x2, _mm256_set1_ps(-1.45660718464996e-05f), _mm256_set1_ps(-2.13374055278905e-04f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.68282697438203e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-7.37332916720468e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.42647390514189e-02f));
  const __m256 erf = _mm256_div_ps(p, q);
  return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), _mm256_add_ps(erf, _mm256_set1_ps(1.0f)));
}

// yt [rows][32] -> y [tokens][ldy]: 8x8 transposes into an L1 staging block of 64 rows per
// token, then each token's 64 outputs (256 contiguous bytes) leave in one burst, so that
// streaming stores fill whole cache lines back to back.
void store_avx2(const float* yt, int64_t nrows, int64_t mt, float* y, int64_t ldy, bool stream, const Epilogue& ep,
                const float* residual) {
  const bool gelu = ep.activation == kActivationGelu;
  constexpr int64_t kStageRows = 64;
  alignas(64) float stage[kTile * kStageRows];
  for (int64_t r0 = 0; r0 < nrows; r0 += kStageRows) {
    const int64_t rows = nrows - r0 < kStageRows ? nrows - r0 : kStageRows;
    const int64_t full = rows / 8 * 8;
    for (int64_t r = 0; r < full; r += 8) {
      for (int64_t t = 0; t < kTile; t += 8) {
        __m256 v[8];
        gather8(yt, r0 + r, t, v);
        for (int64_t j = 0; j < 8; ++j) _mm256_store_ps(stage + (t + j) * kStageRows + r, gelu ? gelu8(v[j]) : v[j]);
      }
    }
    for (int64_t t = 0; t < mt; ++t) {
      float* dst = y + t * ldy + r0;
      const float* src = stage + t * kStageRows;
      const float* res = residual != nullptr ? residual + t * ldy + r0 : nullptr;
      for (int64_t r = 0; r < full; r += 8) {
        __m256 v = _mm256_load_ps(src + r);
        if (res != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(res + r));
        put(dst + r, v, stream);
      }
      for (int64_t r = full; r < rows; ++r) {
        float v = yt[(r0 + r) * kTile + t];
        if (gelu) v = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        dst[r] = res != nullptr ? v + res[r] : v;
      }
    }
  }
  if (stream) _mm_sfence();
}

void activate_avx2(float* v, int64_t n, int activation) {
  if (activation != kActivationGelu) return;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, gelu8(_mm256_loadu_ps(v + i)));
  for (; i < n; ++i) v[i] = 0.5f * v[i] * (1.0f + std::erf(v[i] * 0.70710678118654752f));
}

}  // namespace

// Two passes over each (cache-resident) row: mean, then the centred variance; then the affine map.
void layer_norm_rows_avx2(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& e) {
  const int64_t full = cols / 8 * 8;
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = y + t * ldy;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t c = 0; c < full; c += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(row + c));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    double sum = 0.0;
    for (float v : lanes) sum += v;
    for (int64_t c = full; c < cols; ++c) sum += row[c];
    const float mean = static_cast<float>(sum / static_cast<double>(cols));
    const __m256 mu = _mm256_set1_ps(mean);
    __m256 sq = _mm256_setzero_ps();
    for (int64_t c = 0; c < full; c += 8) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(row + c), mu);
      sq = _mm256_fmadd_ps(d, d, sq);
    }
    _mm256_store_ps(lanes, sq);
    double var = 0.0;
    for (float v : lanes) var += v;
    for (int64_t c = full; c < cols; ++c) var += (row[c] - mean) * (row[c] - mean);
    const float inv = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(cols) + e.ln_epsilon));
    const __m256 vinv = _mm256_set1_ps(inv);
    for (int64_t c = 0; c < full; c += 8) {
      const __m256 n = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(row + c), mu), vinv);
      _mm256_storeu_ps(row + c, _mm256_fmadd_ps(n, _mm256_loadu_ps(e.ln_gamma + c), _mm256_loadu_ps(e.ln_beta + c)));
    }
    for (int64_t c = full; c < cols; ++c) row[c] = (row[c] - mean) * inv * e.ln_gamma[c] + e.ln_beta[c];
  }
}

const KernelOps& avx2_ops() {
  static const KernelOps ops{pack_tile_avx2, accumulate_avx2, store_avx2, activate_avx2};
  return ops;
}

}  // namespace smp
