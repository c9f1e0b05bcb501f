// Microbenchmark: one sparse linear (rows x cols) on a 32-token tile held transposed (X^T[k][32]).
// fp32 CSR (broadcast + 4 FMA per nonzero) against u8 x s8 1x4 blocks on AVX2
// (vpmaddubsw + vpmaddwd(ones) + vpaddd per 8 tokens) with 7-bit activations, and the same
// blocks through AVX-VNNI's vpdpbusd (one instruction per 8 tokens) where the CPU has it; and
// the fp32 CSR loop on AVX-512 (2 zmm per 32 tokens instead of 4 ymm) where the CPU has it.
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>
#include <algorithm>

constexpr int T = 32;
struct Csr { std::vector<int64_t> rp; std::vector<int32_t> off; std::vector<float> v; };
struct B4 { std::vector<int64_t> rp; std::vector<int32_t> off; std::vector<int32_t> w; };  // 4 s8 packed in int32

__attribute__((target("avx2,fma"))) void run_fp32(const Csr& m, int rows, const float* xt, float* y) {
  for (int r = 0; r < rows; ++r) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    for (; e + 2 <= end; e += 2) {
      const float* p = xt + m.off[e]; const float* q = xt + m.off[e + 1];
      __m256 w = _mm256_broadcast_ss(&m.v[e]), u = _mm256_broadcast_ss(&m.v[e + 1]);
      a0 = _mm256_fmadd_ps(w, _mm256_load_ps(p), a0); a1 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 16), a2); a3 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 24), a3);
      b0 = _mm256_fmadd_ps(u, _mm256_load_ps(q), b0); b1 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 8), b1);
      b2 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 16), b2); b3 = _mm256_fmadd_ps(u, _mm256_load_ps(q + 24), b3);
    }
    if (e < end) { const float* p = xt + m.off[e]; __m256 w = _mm256_broadcast_ss(&m.v[e]);
      a0 = _mm256_fmadd_ps(w, _mm256_load_ps(p), a0); a1 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 16), a2); a3 = _mm256_fmadd_ps(w, _mm256_load_ps(p + 24), a3); }
    _mm256_store_ps(y + r * T, _mm256_add_ps(a0, b0)); _mm256_store_ps(y + r * T + 8, _mm256_add_ps(a1, b1));
    _mm256_store_ps(y + r * T + 16, _mm256_add_ps(a2, b2)); _mm256_store_ps(y + r * T + 24, _mm256_add_ps(a3, b3));
  }
}

__attribute__((target("avx512f"))) void run_fp32_avx512(const Csr& m, int rows, const float* xt, float* y) {
  for (int r = 0; r < rows; ++r) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    int64_t e = m.rp[r], end = m.rp[r + 1];
    for (; e + 4 <= end; e += 4) {
      const float* p = xt + m.off[e]; const float* q = xt + m.off[e + 1];
      const float* s = xt + m.off[e + 2]; const float* t = xt + m.off[e + 3];
      __m512 w = _mm512_set1_ps(m.v[e]), u = _mm512_set1_ps(m.v[e + 1]), x = _mm512_set1_ps(m.v[e+2]), z = _mm512_set1_ps(m.v[e+3]);
      a0 = _mm512_fmadd_ps(w, _mm512_load_ps(p), a0); a1 = _mm512_fmadd_ps(w, _mm512_load_ps(p + 16), a1);
      b0 = _mm512_fmadd_ps(u, _mm512_load_ps(q), b0); b1 = _mm512_fmadd_ps(u, _mm512_load_ps(q + 16), b1);
      c0 = _mm512_fmadd_ps(x, _mm512_load_ps(s), c0); c1 = _mm512_fmadd_ps(x, _mm512_load_ps(s + 16), c1);
      d0 = _mm512_fmadd_ps(z, _mm512_load_ps(t), d0); d1 = _mm512_fmadd_ps(z, _mm512_load_ps(t + 16), d1);
    }
    for (; e < end; ++e) { const float* p = xt + m.off[e]; __m512 w = _mm512_set1_ps(m.v[e]);
      a0 = _mm512_fmadd_ps(w, _mm512_load_ps(p), a0); a1 = _mm512_fmadd_ps(w, _mm512_load_ps(p + 16), a1); }
    _mm512_store_ps(y + r * T, _mm512_add_ps(_mm512_add_ps(a0, b0), _mm512_add_ps(c0, d0)));
    _mm512_store_ps(y + r * T + 16, _mm512_add_ps(_mm512_add_ps(a1, b1), _mm512_add_ps(c1, d1)));
  }
}
// X4[k/4][32 tokens][4 bytes]: a 1x4 block's 32 tokens are 128 contiguous bytes.
__attribute__((target("avx2,fma"))) void run_i8(const B4& m, int rows, const uint8_t* x4, int32_t* y) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t e = m.rp[r]; e < m.rp[r + 1]; ++e) {
      const __m256i w = _mm256_set1_epi32(m.w[e]);
      const uint8_t* p = x4 + m.off[e];
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)p), w), ones));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(p + 32)), w), ones));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(p + 64)), w), ones));
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(p + 96)), w), ones));
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}

__attribute__((target("avx2,avxvnni"))) void run_vnni(const B4& m, int rows, const uint8_t* x4, int32_t* y) {
  for (int r = 0; r < rows; ++r) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t e = m.rp[r]; e < m.rp[r + 1]; ++e) {
      const __m256i w = _mm256_set1_epi32(m.w[e]);
      const uint8_t* p = x4 + m.off[e];
      a0 = _mm256_dpbusd_avx_epi32(a0, _mm256_load_si256((const __m256i*)p), w);
      a1 = _mm256_dpbusd_avx_epi32(a1, _mm256_load_si256((const __m256i*)(p + 32)), w);
      a2 = _mm256_dpbusd_avx_epi32(a2, _mm256_load_si256((const __m256i*)(p + 64)), w);
      a3 = _mm256_dpbusd_avx_epi32(a3, _mm256_load_si256((const __m256i*)(p + 96)), w);
    }
    _mm256_store_si256((__m256i*)(y + r * T), a0); _mm256_store_si256((__m256i*)(y + r * T + 8), a1);
    _mm256_store_si256((__m256i*)(y + r * T + 16), a2); _mm256_store_si256((__m256i*)(y + r * T + 24), a3);
  }
}

template <class F> double best_ns(F f, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now(); f();
    best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  const int rows = atoi(argv[1]), cols = atoi(argv[2]);
  const double density = atof(argv[3]);
  const bool blocky = argc > 4 && argv[4][0] == 'b';   // mask made of whole 1x4 blocks
  std::mt19937 g(1); std::uniform_real_distribution<float> u(0, 1);
  std::vector<uint8_t> mask(size_t(rows) * cols);
  for (int r = 0; r < rows; ++r) for (int c = 0; c < cols; c += 4) {
    if (blocky) { bool on = u(g) < density; for (int j = 0; j < 4; ++j) mask[size_t(r) * cols + c + j] = on; }
    else for (int j = 0; j < 4; ++j) mask[size_t(r) * cols + c + j] = u(g) < density;
  }
  Csr a; B4 b; a.rp.push_back(0); b.rp.push_back(0);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) if (mask[size_t(r) * cols + c]) { a.off.push_back(c * T); a.v.push_back(u(g) - 0.5f); }
    for (int c = 0; c < cols; c += 4) {
      bool any = false; for (int j = 0; j < 4; ++j) any |= mask[size_t(r) * cols + c + j];
      if (any) { b.off.push_back((c / 4) * T * 4); b.w.push_back(0x01fe03fd); }
    }
    a.rp.push_back(a.off.size()); b.rp.push_back(b.off.size());
  }
  float* xt = (float*)aligned_alloc(64, size_t(cols) * T * 4); for (size_t i = 0; i < size_t(cols) * T; ++i) xt[i] = u(g);
  uint8_t* x4 = (uint8_t*)aligned_alloc(64, size_t(cols) * T); for (size_t i = 0; i < size_t(cols) * T; ++i) x4[i] = g() & 127;
  float* y = (float*)aligned_alloc(64, size_t(rows) * T * 4); int32_t* yi = (int32_t*)aligned_alloc(64, size_t(rows) * T * 4);
  double tf = best_ns([&] { run_fp32(a, rows, xt, y); }, 300), ti = best_ns([&] { run_i8(b, rows, x4, yi); }, 300);
  const bool vnni = __builtin_cpu_supports("avxvnni");
  double tv = vnni ? best_ns([&] { run_vnni(b, rows, x4, yi); }, 300) : 0.0;
  printf("%5dx%-5d density %.2f %s: nnz %6zu blocks %6zu (fill %.2f)  fp32 %5.1f us  int8 avx2 %5.1f us (%.2fx)",
         rows, cols, density, blocky ? "1x4-structured" : "unstructured  ", a.v.size(), b.w.size(),
         a.v.size() / (4.0 * b.w.size()), tf / 1e3, ti / 1e3, tf / ti);
  if (vnni) printf("  int8 avx-vnni %5.1f us (%.2fx)", tv / 1e3, tf / tv);
  if (__builtin_cpu_supports("avx512f")) {
    const double t5 = best_ns([&] { run_fp32_avx512(a, rows, xt, y); }, 300);
    printf("  fp32 avx512 %5.1f us (%.2fx)", t5 / 1e3, tf / t5);
  }
  printf("\n");
}
