// The int8 form of ai.smp.Attention (attribute quantize = 1): the portable path and the choice
// of path. What every path computes, per (batch, head) (attention.h):
//
//   Q rows i, K rows j: symmetric per row, qs_i = max_c |q_ic| / 127, qq = rint(q * 127 / max) in
//   [-127, 127] (likewise ks_j, kq); V per column c over the keys: vs_c, vq.
//   s_ij = (qs_i * (ks_j * scale)) * float(sum_c qq_ic kq_jc) + mask_j         (int32 sum)
//   e_ij = exp(s_ij - max_j s_ij);  pq_ij = rint(127 e_ij) in [0, 127]          (7-bit weights)
//   out_ic = (vs_c * (1 / float(sum_j pq_ij))) * float(sum_j pq_ij vq_jc)        (int32 sums)
//
// Normalising by the sum of the quantized weights keeps them summing to exactly one. 7-bit
// weights keep every u8 x s8 pair sum of vpmaddubsw within int16 (2 x 127 x 127), so AVX2
// without VNNI computes the same integers. The vector paths differ from this one only in exp
// (a polynomial, ~1e-7 relative), which can move a weight by one step. A NaN or inf in Q, K or V
// makes the rows it reaches NaN or meaningless, on every path alike in kind but not bit for bit. The int8 kernel export
// writes it; measured against the fp32 attention in runtime/native/README.md ("int8 attention").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "attention.h"
#include "kernel_int8.h"

namespace smp {
namespace {

// Symmetric int8 of n values (stride 1) -> q, returns the scale (0 for a row of zeros).
float quantize_values(const float* x, int64_t n, int64_t stride, int32_t* q) {
  float amax = 0.0f;
  for (int64_t c = 0; c < n; ++c) amax = std::max(amax, std::fabs(x[c * stride]));
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int64_t c = 0; c < n; ++c)
    q[c] = static_cast<int32_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(x[c * stride] * inv))));
  return amax / 127.0f;
}

void head_portable(const AttentionShape& s, const float* q, const float* k, const float* v, const float* mask_bias,
                   float* out) {
  const int64_t ld = s.ld_in, d = s.head_dim, seq = s.seq;
  std::vector<int32_t> kq(static_cast<size_t>(seq * d)), vq(static_cast<size_t>(seq * d)), qq(static_cast<size_t>(d));
  std::vector<int32_t> pq(static_cast<size_t>(seq));
  std::vector<float> kss(static_cast<size_t>(seq)), vs(static_cast<size_t>(d)), sc(static_cast<size_t>(seq));
  for (int64_t j = 0; j < seq; ++j) kss[j] = quantize_values(k + j * ld, d, 1, &kq[j * d]) * s.scale;
  for (int64_t c = 0; c < d; ++c) {
    std::vector<int32_t> col(static_cast<size_t>(seq));
    vs[c] = quantize_values(v + c, seq, ld, col.data());
    for (int64_t j = 0; j < seq; ++j) vq[j * d + c] = col[j];
  }
  for (int64_t i = 0; i < seq; ++i) {
    const float qs = quantize_values(q + i * ld, d, 1, qq.data());
    float best = -INFINITY;
    for (int64_t j = 0; j < seq; ++j) {
      int32_t acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += qq[c] * kq[j * d + c];
      sc[j] = (qs * kss[j]) * static_cast<float>(acc) + mask_bias[j];
      best = std::max(best, sc[j]);
    }
    int32_t total = 0;
    for (int64_t j = 0; j < seq; ++j) {
      pq[j] = static_cast<int32_t>(std::nearbyint(127.0f * std::exp(sc[j] - best)));
      total += pq[j];
    }
    const float inv = 1.0f / static_cast<float>(total);
    for (int64_t c = 0; c < d; ++c) {
      int32_t acc = 0;
      for (int64_t j = 0; j < seq; ++j) acc += pq[j] * vq[j * d + c];
      out[i * s.ld_out + c] = (vs[c] * inv) * static_cast<float>(acc);
    }
  }
}

}  // namespace

bool attention_head_int8_portable(const AttentionShape& s, const float* q, const float* k, const float* v,
                                  const float* mask_bias, int64_t, float* out) {
  try {
    head_portable(s, q, k, v, mask_bias, out);
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}
Int8HeadFn attention_int8_head(const AttentionShape& s) {
  const Int8Path path = resolve_int8_path(Int8Path::kAuto);
  // The vector heads are built with -mfma (exp's polynomial): AVX2 alone is not enough.
  const bool fma = resolve_isa(Isa::kAvx2) == Isa::kAvx2;
  if (path == Int8Path::kPortable || !fma || s.head_dim % 32 != 0 || s.head_dim > 128)
    return attention_head_int8_portable;
  return attention_head_int8_x86(static_cast<int>(path));
}

#if !defined(SMP_HAVE_AVX2)
Int8HeadFn attention_head_int8_x86(int) { return attention_head_int8_portable; }
#endif

}  // namespace smp
