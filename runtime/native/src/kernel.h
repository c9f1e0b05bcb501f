// Y = X W^T + b with W packed sparse: the per-ISA primitives and the tiled driver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "sparse_matrix.h"

namespace smp {

enum class Isa : int { kAuto = -1, kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The ISA used for `requested`: kAuto picks AVX-512 (F) on Intel CPUs that have it, else AVX2/FMA
// where the CPU and OS support it, else portable; SMP_SPARSE_ISA=avx512|avx2|portable overrides it.
// An unsupported request falls back to the best supported ISA below it.
Isa resolve_isa(Isa requested);
const char* isa_name(Isa isa);
// AVX2 or AVX-512: the AVX2 primitives run (AVX-512 replaces only the CSR accumulation).
inline bool vector_isa(Isa resolved) { return resolved == Isa::kAvx2 || resolved == Isa::kAvx512; }

// What happens to X W^T + b before it is stored: an activation, then a residual input.
enum Activation : int { kActivationNone = 0, kActivationGelu = 1 };  // gelu: exact (erf) form

struct Epilogue {
  int activation = kActivationNone;
  const float* residual = nullptr;  // same shape as y, or null
  // Then, when ln_gamma is set, LayerNormalization over each output row (token):
  // (y - mean) / sqrt(var + ln_epsilon) * ln_gamma + ln_beta, gamma/beta of length rows.
  const float* ln_gamma = nullptr;
  const float* ln_beta = nullptr;
  float ln_epsilon = 1e-12f;
};

// In-place LayerNormalization of `tokens` rows of y (row stride ldy, `cols` values each).
void layer_norm_rows(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& epilogue, Isa isa);

// Primitives one ISA provides. X^T tiles are [cols][kTile] floats, 32-byte aligned.
struct KernelOps {
  // X rows [0, mt) (row stride ld) -> xt[k * kTile + t]; lanes t >= mt are zeroed.
  void (*pack_tile)(const float* x, int64_t ld, int64_t mt, int64_t cols, float* xt);
  // yt[(r - r0) * kTile + t] = bias[r] + sum_k W[r, k] xt[k, t] for rows [r0, r1) (block aligned).
  void (*accumulate)(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt);
  // y[t * ldy + r] = act(yt[r * kTile + t]) (+ residual[t * ldy + r]) for t < mt, r < nrows;
  // `stream`: non-temporal stores.
  void (*store)(const float* yt, int64_t nrows, int64_t mt, float* y, int64_t ldy, bool stream,
                const struct Epilogue& epilogue, const float* residual);
  // v[i] = act(v[i]) for i < n, in place.
  void (*activate)(float* v, int64_t n, int activation);
};

const KernelOps& portable_ops();
const KernelOps& avx2_ops();    // only call when resolve_isa(kAuto) may return kAvx2
const KernelOps& avx512_ops();  // only call when resolve_isa(kAuto) may return kAvx512
void layer_norm_rows_portable(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& epilogue);
void layer_norm_rows_avx2(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& epilogue);

// Runs fn(data, i) for i in [0, n), possibly in parallel; returns "" or an error.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual std::string parallel_for(size_t n, void (*fn)(void*, size_t), void* data) = 0;
};

// Runs on the calling thread only.
class SerialRunner : public Runner {
 public:
  std::string parallel_for(size_t n, void (*fn)(void*, size_t), void* data) override;
};

// Spawns `threads` short-lived std::threads per call and joins them: nothing spins afterwards.
class ThreadRunner : public Runner {
 public:
  explicit ThreadRunner(int threads) : threads_(threads < 1 ? 1 : threads) {}
  std::string parallel_for(size_t n, void (*fn)(void*, size_t), void* data) override;

 private:
  int threads_;
};

// y[m, rows] = act(x[m, cols] W^T + bias) (+ residual). Returns "" or an error message.
std::string sparse_linear(const PackedMatrix& w, const float* x, int64_t m, float* y, Isa isa, Runner& runner,
                          const Epilogue& epilogue = Epilogue());

// The two linears of a transformer feed-forward block in one call:
//   y[m, w2.rows] = LN(act(x W1^T + b1) W2^T + b2 (+ residual [m, w2.rows]))
// with w1 [inner, hidden], w2 [out, inner]; LayerNorm as in Epilogue when ffn.ln_gamma is set.
// The [m, inner] hidden activations are never written out: each 32-token tile of them lives in
// the thread's cache between the two products.
struct FfnOptions {
  int activation = kActivationNone;
  const float* residual = nullptr;
  const float* ln_gamma = nullptr;
  const float* ln_beta = nullptr;
  float ln_epsilon = 1e-12f;
  // The second product's epilogue: the residual, then the LayerNorm.
  Epilogue output() const {
    Epilogue e;
    e.residual = residual;
    e.ln_gamma = ln_gamma;
    e.ln_beta = ln_beta;
    e.ln_epsilon = ln_epsilon;
    return e;
  }
};
std::string sparse_ffn(const PackedMatrix& w1, const PackedMatrix& w2, const float* x, int64_t m, float* y, Isa isa,
                       Runner& runner, const FfnOptions& ffn);

}  // namespace smp
