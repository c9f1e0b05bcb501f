// AVX-512 (F) accumulation of CSR weights; every other primitive is the AVX2 one. Only this
// file is compiled with -mavx512f; it is called only after resolve_isa() saw AVX-512 at run
// time. Loads and stores are unaligned ones: the tiles are 32-byte aligned.
//
// A 32-token tile row is two zmm registers instead of four ymm: per nonzero one broadcast, two
// loads and two FMAs. On Zen 5 (benchmarks/int8_block_probe.sh, one tile, best of 300) the loop
// ran 1.25-1.43x faster than the AVX2 one on MiniLM's shapes. Four accumulator pairs take
// consecutive nonzeros, so FMAs do not wait on each other. Blocks (BSR) keep the AVX2 loops.
#include <immintrin.h>

#include <cstdint>

#include "kernel.h"

namespace smp {
namespace {

struct Row512 {
  __m512 lo, hi;  // tokens 0-15, 16-31
};

inline void fma2(__m512& lo, __m512& hi, float w, const float* p) {
  const __m512 wv = _mm512_set1_ps(w);
  lo = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p), lo);
  hi = _mm512_fmadd_ps(wv, _mm512_loadu_ps(p + 16), hi);
}

// acc += sum over entries [begin, end) of v[e] * X^T[col of e]; xc is the chunk's X^T slice.
inline Row512 row_csr(Row512 acc, const float* xc, const int32_t* off, const float* v, int64_t begin,
                      int64_t end) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 b0 = zero, b1 = zero, c0 = zero, c1 = zero, d0 = zero, d1 = zero;
  int64_t e = begin;
  for (; e + 4 <= end; e += 4) {
    fma2(acc.lo, acc.hi, v[e], xc + off[e]);
    fma2(b0, b1, v[e + 1], xc + off[e + 1]);
    fma2(c0, c1, v[e + 2], xc + off[e + 2]);
    fma2(d0, d1, v[e + 3], xc + off[e + 3]);
  }
  for (; e < end; ++e) fma2(acc.lo, acc.hi, v[e], xc + off[e]);
  acc.lo = _mm512_add_ps(_mm512_add_ps(acc.lo, b0), _mm512_add_ps(c0, d0));
  acc.hi = _mm512_add_ps(_mm512_add_ps(acc.hi, b1), _mm512_add_ps(c1, d1));
  return acc;
}

void accumulate_avx512(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt) {
  if (w.bh != 1 || w.bw != 1) {
    avx2_ops().accumulate(w, xt, r0, r1, yt);
    return;
  }
  const int32_t* off = w.col_off.data();
  const float* v = w.values.data();
  for (int64_t r = r0; r < r1; ++r) {  // chunk 0 starts from the bias, in registers
    const __m512 b = _mm512_set1_ps(w.bias[r]);
    const int64_t* rp = w.chunk_row_ptr(0);
    const Row512 acc = w.num_chunks > 0 ? row_csr({b, b}, xt, off, v, rp[r], rp[r + 1]) : Row512{b, b};
    float* p = yt + (r - r0) * kTile;
    _mm512_storeu_ps(p, acc.lo);
    _mm512_storeu_ps(p + 16, acc.hi);
  }
  for (int64_t c = 1; c < w.num_chunks; ++c) {  // chunk-major: one X^T slice stays in cache
    const float* xc = xt + c * w.chunk_cols * kTile;
    const int64_t* rp = w.chunk_row_ptr(c);
    for (int64_t r = r0; r < r1; ++r) {
      if (rp[r] == rp[r + 1]) continue;
      float* p = yt + (r - r0) * kTile;
      const Row512 acc = row_csr({_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16)}, xc, off, v, rp[r], rp[r + 1]);
      _mm512_storeu_ps(p, acc.lo);
      _mm512_storeu_ps(p + 16, acc.hi);
    }
  }
}

}  // namespace

const KernelOps& avx512_ops() {
  static const KernelOps ops = [] {
    KernelOps o = avx2_ops();
    o.accumulate = accumulate_avx512;
    return o;
  }();
  return ops;
}

}  // namespace smp
