// Microbenchmark "int8-csr": int8 CSR with any four columns per group (the layout of
// runtime/native/src/kernel_int8_x86.cc) against the fp32 CSR inner loop, one 32-token tile held
// transposed in cache, best of 300 passes. Variants: AVX-VNNI (one and two accumulator sets),
// AVX2 with the sign trick (full-range s8 weights), AVX2 with 7-bit weights (no sign trick), and
// AVX2 on int16 pairs. Quantizing X and dequantizing Y are not timed. Run: bash benchmarks/int8_csr_probe.sh
#include <cmath>
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>
#include <algorithm>
constexpr int T = 32;
struct Csr { std::vector<int64_t> rp; std::vector<int32_t> off; std::vector<float> v; std::vector<int8_t> q; std::vector<int32_t> qoff; };
__attribute__((target("avx2,fma"))) void run_fp32(const Csr& m, int rows, const float* xt, float* y) {
  for (int r = 0; r < rows; ++r) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    for (; e + 4 <= end; e += 4) {
      const __m256 w4 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(&m.v[e]));
      for (int j = 0; j < 4; j += 2) {
      const float* p = xt + m.off[e+j]; const float* q = xt + m.off[e + j+1];
      __m256 w = j==0?_mm256_permute_ps(w4, 0x00):_mm256_permute_ps(w4, 0xAA), u = j==0?_mm256_permute_ps(w4, 0x55):_mm256_permute_ps(w4, 0xFF);
      a0 = _mm256_fmadd_ps(w, _mm256_load_ps(p), a0); a1 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 16), a2); a3 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 24), a3);
      b0 = _mm256_fmadd_ps(u, _mm256_load_ps(q), b0); b1 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 8), b1);
      b2 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 16), b2); b3 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 24), b3);
      }
    }
    for (; e < end; ++e) { const float* p = xt + m.off[e]; __m256 w = _mm256_broadcast_ss(&m.v[e]);
      a0 = _mm256_fmadd_ps(w, _mm256_load_ps(p), a0); a1 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 16), a2); a3 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 24), a3); }
    _mm256_store_ps(y + r * T, _mm256_add_ps(a0, b0)); _mm256_store_ps(y + r * T + 8, _mm256_add_ps(a1, b1));
    _mm256_store_ps(y + r * T + 16, _mm256_add_ps(a2, b2)); _mm256_store_ps(y + r * T + 24, _mm256_add_ps(a3, b3));
  }
}
// int8 CSR, groups of 4 nonzeros (any columns), X^T u8 [k][32] (x+128). interleave 4 rows -> dpbusd.
#define INTERLEAVE(pa,pb,pc,pd, q0,q1,q2,q3) { \
  __m256i a = _mm256_load_si256((const __m256i*)(pa)), b = _mm256_load_si256((const __m256i*)(pb)); \
  __m256i c = _mm256_load_si256((const __m256i*)(pc)), d = _mm256_load_si256((const __m256i*)(pd)); \
  __m256i ablo = _mm256_unpacklo_epi8(a,b), abhi = _mm256_unpackhi_epi8(a,b); \
  __m256i cdlo = _mm256_unpacklo_epi8(c,d), cdhi = _mm256_unpackhi_epi8(c,d); \
  q0 = _mm256_unpacklo_epi16(ablo, cdlo); q1 = _mm256_unpackhi_epi16(ablo, cdlo); \
  q2 = _mm256_unpacklo_epi16(abhi, cdhi); q3 = _mm256_unpackhi_epi16(abhi, cdhi); }
__attribute__((target("avx2,avxvnni"))) void run_vnni(const Csr& m, int rows, const uint8_t* x, int32_t* y) {
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    const int32_t* o = m.qoff.data();
    for (; e + 4 <= end; e += 4) {
      __m256i q0,q1,q2,q3; INTERLEAVE(x+o[e], x+o[e+1], x+o[e+2], x+o[e+3], q0,q1,q2,q3);
      const __m256i w = _mm256_set1_epi32(*(const int32_t*)&m.q[e]);
      a0 = _mm256_dpbusd_avx_epi32(a0, q0, w); a1 = _mm256_dpbusd_avx_epi32(a1, q1, w);
      a2 = _mm256_dpbusd_avx_epi32(a2, q2, w); a3 = _mm256_dpbusd_avx_epi32(a3, q3, w);
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}
__attribute__((target("avx2,avxvnni"))) void run_vnni2(const Csr& m, int rows, const uint8_t* x, int32_t* y) {
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    const int32_t* o = m.qoff.data();
    for (; e + 8 <= end; e += 8) {
      __m256i q0,q1,q2,q3; INTERLEAVE(x+o[e], x+o[e+1], x+o[e+2], x+o[e+3], q0,q1,q2,q3);
      const __m256i w = _mm256_set1_epi32(*(const int32_t*)&m.q[e]);
      a0 = _mm256_dpbusd_avx_epi32(a0, q0, w); a1 = _mm256_dpbusd_avx_epi32(a1, q1, w);
      a2 = _mm256_dpbusd_avx_epi32(a2, q2, w); a3 = _mm256_dpbusd_avx_epi32(a3, q3, w);
      __m256i p0,p1,p2,p3; INTERLEAVE(x+o[e+4], x+o[e+5], x+o[e+6], x+o[e+7], p0,p1,p2,p3);
      const __m256i u = _mm256_set1_epi32(*(const int32_t*)&m.q[e+4]);
      b0 = _mm256_dpbusd_avx_epi32(b0, p0, u); b1 = _mm256_dpbusd_avx_epi32(b1, p1, u);
      b2 = _mm256_dpbusd_avx_epi32(b2, p2, u); b3 = _mm256_dpbusd_avx_epi32(b3, p3, u);
    }
    for (; e + 4 <= end; e += 4) {
      __m256i q0,q1,q2,q3; INTERLEAVE(x+o[e], x+o[e+1], x+o[e+2], x+o[e+3], q0,q1,q2,q3);
      const __m256i w = _mm256_set1_epi32(*(const int32_t*)&m.q[e]);
      a0 = _mm256_dpbusd_avx_epi32(a0, q0, w); a1 = _mm256_dpbusd_avx_epi32(a1, q1, w);
      a2 = _mm256_dpbusd_avx_epi32(a2, q2, w); a3 = _mm256_dpbusd_avx_epi32(a3, q3, w);
    }
    _mm256_store_si256((__m256i*)(y + r * T), _mm256_add_epi32(a0,b0)); _mm256_store_si256((__m256i*)(y + r * T + 8), _mm256_add_epi32(a1,b1));
    _mm256_store_si256((__m256i*)(y + r * T + 16), _mm256_add_epi32(a2,b2)); _mm256_store_si256((__m256i*)(y + r * T + 24), _mm256_add_epi32(a3,b3));
  }
}
// AVX2: x s8 stored; maddubs(abs(q), sign(w,q)) exact.
__attribute__((target("avx2"))) void run_avx2(const Csr& m, int rows, const uint8_t* x, int32_t* y) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    const int32_t* o = m.qoff.data();
    for (; e + 4 <= end; e += 4) {
      __m256i q0,q1,q2,q3; INTERLEAVE(x+o[e], x+o[e+1], x+o[e+2], x+o[e+3], q0,q1,q2,q3);
      const __m256i w = _mm256_set1_epi32(*(const int32_t*)&m.q[e]);
#define ST(acc,q) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(w,q)), ones));
      ST(a0,q0) ST(a1,q1) ST(a2,q2) ST(a3,q3)
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}
// AVX2 7-bit weights: u8 x (x+128) * s8 w in [-64,63]; maddubs pair no saturation.
__attribute__((target("avx2"))) void run_avx2_7(const Csr& m, int rows, const uint8_t* x, int32_t* y) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    const int32_t* o = m.qoff.data();
    for (; e + 4 <= end; e += 4) {
      __m256i q0,q1,q2,q3; INTERLEAVE(x+o[e], x+o[e+1], x+o[e+2], x+o[e+3], q0,q1,q2,q3);
      const __m256i w = _mm256_set1_epi32(*(const int32_t*)&m.q[e]);
#define S7(acc,q) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, w), ones));
      S7(a0,q0) S7(a1,q1) S7(a2,q2) S7(a3,q3)
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}
// AVX2 with 16-bit pairs: x stored as s16 [k][32]; pairs of nonzeros interleaved epi16, madd_epi16 exact.
__attribute__((target("avx2"))) void run_avx2_16(const Csr& m, int rows, const int16_t* x, int32_t* y) {
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    const int32_t* o = m.qoff.data();
    for (; e + 2 <= end; e += 2) {
      const int16_t* p = x + o[e]; const int16_t* q = x + o[e+1];
      const __m256i w = _mm256_set1_epi32((uint16_t)m.q[e] | ((int32_t)(uint16_t)(int16_t)m.q[e+1] << 16));
      __m256i p0 = _mm256_load_si256((const __m256i*)p), p1 = _mm256_load_si256((const __m256i*)(p+16));
      __m256i r0 = _mm256_load_si256((const __m256i*)q), r1 = _mm256_load_si256((const __m256i*)(q+16));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(p0,r0), w));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi16(p0,r0), w));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_unpacklo_epi16(p1,r1), w));
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_unpackhi_epi16(p1,r1), w));
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}
template <class F> double best_ns(F f, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) { auto t0 = std::chrono::steady_clock::now(); f();
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count()); }
  return best;
}
int main(int argc, char** argv) {
  const int rows = atoi(argv[1]), cols = atoi(argv[2]); const double density = atof(argv[3]);
  std::mt19937 g(1); std::uniform_real_distribution<float> u(0, 1);
  Csr a; a.rp.push_back(0);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) if (u(g) < density) { a.off.push_back(c * T); a.qoff.push_back(c*T); a.v.push_back(u(g) - 0.5f); a.q.push_back((int8_t)((g()%127)-63)); }
    while ((a.v.size() - a.rp.back()) % 4) { a.off.push_back(0); a.qoff.push_back(0); a.v.push_back(0); a.q.push_back(0);}  // pad to 4
    a.rp.push_back(a.off.size());
  }
  float* xt = (float*)aligned_alloc(64, size_t(cols) * T * 4); for (size_t i = 0; i < size_t(cols) * T; ++i) xt[i] = u(g);
  uint8_t* x8 = (uint8_t*)aligned_alloc(64, size_t(cols) * T); for (size_t i = 0; i < size_t(cols) * T; ++i) x8[i] = g() & 255;
  int16_t* x16 = (int16_t*)aligned_alloc(64, size_t(cols) * T*2); for (size_t i = 0; i < size_t(cols) * T; ++i) x16[i] = (g() & 255)-128;
  float* y = (float*)aligned_alloc(64, size_t(rows) * T * 4); int32_t* yi = (int32_t*)aligned_alloc(64, size_t(rows) * T * 4);
  double tf = best_ns([&] { run_fp32(a, rows, xt, y); }, 300);
  // AVX-VNNI only where the CPU has it (nan otherwise: Zen 4 has AVX512-VNNI but not AVX-VNNI).
  const bool vnni = __builtin_cpu_supports("avxvnni");
  double tv = vnni ? best_ns([&] { run_vnni(a, rows, x8, yi); }, 300) : NAN;
  double tv2 = vnni ? best_ns([&] { run_vnni2(a, rows, x8, yi); }, 300) : NAN;
  double t2 = best_ns([&] { run_avx2(a, rows, x8, yi); }, 300);
  double t7 = best_ns([&] { run_avx2_7(a, rows, x8, yi); }, 300);
  for (auto& o : a.qoff) o *= 1; // same offsets in elements
  double t16 = best_ns([&] { run_avx2_16(a, rows, x16, yi); }, 300);
  printf("%5dx%-5d d %.2f nnz %zu fp32 %6.1f us | vnni %6.1f (%.2fx) vnni-2acc %6.1f (%.2fx) avx2-sign %6.1f (%.2fx) avx2-7bit %6.1f (%.2fx) avx2-s16 %6.1f (%.2fx)\n",
    rows, cols, density, a.v.size(), tf/1e3, tv/1e3, tf/tv, tv2/1e3, tf/tv2, t2/1e3, tf/t2, t7/1e3, tf/t7, t16/1e3, tf/t16);
}
