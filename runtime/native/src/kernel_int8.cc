#include "kernel_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "scratch.h"
#include "tiling.h"

namespace smp {
namespace {

// Token t's value i at x[t * token_stride + i * value_stride] (i < n) -> q[i * kTile + t]: the
// per-token quantization of kernel_int8.h for token-major rows and for a transposed tile alike.
void quantize_strided(const float* x, int64_t token_stride, int64_t value_stride, int64_t mt, int64_t n, uint8_t* q,
                      float* st) {
  for (int64_t t = 0; t < kTile; ++t) {
    const float* xt = x + t * token_stride;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; t < mt && i < n; ++i) {
      const float v = xt[i * value_stride];
      finite = finite && std::isfinite(v);
      amax = std::max(amax, std::fabs(v));
    }
    const float inv = (t < mt && finite && amax > 0.0f) ? 127.0f / amax : 0.0f;
    st[t] = t >= mt ? 0.0f : (finite ? amax / 127.0f : NAN);
    for (int64_t i = 0; i < n; ++i) {
      const float v = t < mt ? std::nearbyint(xt[i * value_stride] * inv) : 0.0f;
      q[i * kTile + t] = static_cast<uint8_t>(static_cast<int>(std::min(127.0f, std::max(-127.0f, v))) + 128);
    }
  }
}

void quantize_tile_portable(const float* x, int64_t ld, int64_t mt, int64_t cols, uint8_t* xq, float* st) {
  quantize_strided(x, ld, 1, mt, cols, xq, st);
}

void quantize_transposed_portable(const float* ht, int64_t rows, int64_t mt, uint8_t* hq, float* st) {
  quantize_strided(ht, 1, kTile, mt, rows, hq, st);
}

void accumulate_portable(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, int64_t r1, float* yt) {
  for (int64_t r = r0; r < r1; ++r) {
    int32_t acc[kTile] = {0};
    for (int64_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
      const int32_t q = w.values[e];
      const uint8_t* xp = xq + w.col_off[e];
      for (int64_t t = 0; t < kTile; ++t) acc[t] += q * (static_cast<int32_t>(xp[t]) - 128);
    }
    for (int64_t t = 0; t < kTile; ++t) {
      const float s = w.scale[r] * st[t];
      yt[(r - r0) * kTile + t] = w.bias[r] + s * static_cast<float>(acc[t]);
    }
  }
}

thread_local Int8Scratch tls;

struct Job {
  const Int8Csr* w;
  const float* x;
  float* y;
  int64_t m, splits, rows_per_split;
  Int8Kernels k;
  bool stream;
  Epilogue epilogue;
  uint64_t id;
  std::atomic<bool> failed{false};
};

void run_task(void* data, size_t index) {
  Job& job = *static_cast<Job*>(data);
  const Int8Csr& w = *job.w;
  const int64_t tile = static_cast<int64_t>(index) / job.splits, split = static_cast<int64_t>(index) % job.splits;
  const int64_t m0 = tile * kTile, mt = std::min<int64_t>(kTile, job.m - m0);
  const int64_t r0 = split * job.rows_per_split, r1 = std::min(w.rows, r0 + job.rows_per_split);
  if (mt <= 0 || r0 >= r1) return;
  Int8Scratch& s = int8_scratch();
  float* yt = s.yt.get(static_cast<size_t>(kInt8RowBlock * kTile));
  if (yt == nullptr || !quantized_tile(s, job.id, tile, job.x + m0 * w.cols, w.cols, mt, *job.k.ops)) {
    job.failed.store(true);
    return;
  }
  const auto* xq = reinterpret_cast<const uint8_t*>(s.xq.data);
  store_rows_int8(w, xq, s.st.data, r0, r1, yt, job.k, job.epilogue,
                  OutputTile{job.y, m0, mt, w.rows, job.stream});
  // This task wrote whole output rows of its tokens, still in cache: normalise them here.
  if (job.epilogue.ln_gamma != nullptr && job.splits == 1)
    layer_norm_rows(job.y + m0 * w.rows, mt, w.rows, w.rows, job.epilogue, job.k.norm_isa);
}

bool cpu_has(const char* feature) {
#if defined(__x86_64__) && defined(SMP_HAVE_AVX2)
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "avxvnni") == 0) return __builtin_cpu_supports("avxvnni");
  if (std::strcmp(feature, "avx512vnni") == 0)
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
#endif
  (void)feature;
  return false;
}

}  // namespace

const Int8Ops& int8_portable_ops() {
  static const Int8Ops ops{quantize_tile_portable, accumulate_portable, quantize_transposed_portable};
  return ops;
}

Int8Scratch& int8_scratch() { return tls; }

bool quantized_tile(Int8Scratch& s, uint64_t job, int64_t tile, const float* x, int64_t cols, int64_t mt,
                    const Int8Ops& ops) {
  auto* xq = reinterpret_cast<uint8_t*>(s.xq.get(static_cast<size_t>(std::max<int64_t>(cols, 1) * kTile / 4)));
  float* st = s.st.get(kTile);
  if (xq == nullptr || st == nullptr) return false;
  if (s.job != job || s.tile != tile) {
    ops.quantize_tile(x, cols, mt, cols, xq, st);
    s.job = job;
    s.tile = tile;
  }
  return true;
}

void store_rows_int8(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, int64_t r1, float* yt,
                     const Int8Kernels& k, const Epilogue& epilogue, const OutputTile& out) {
  // The activation runs on the whole block (KernelOps::activate) rather than in the store, whose
  // tail rows use a scalar erf: SparseFFNInt8 activates its hidden tile the same way, and a token's
  // int8 scale in the next product depends on every bit of it.
  Epilogue plain = epilogue;
  plain.activation = kActivationNone;
  for (int64_t b0 = r0; b0 < r1; b0 += kInt8RowBlock) {
    const int64_t b1 = std::min(r1, b0 + kInt8RowBlock);
    k.ops->accumulate(w, xq, st, b0, b1, yt);
    k.store->activate(yt, (b1 - b0) * kTile, epilogue.activation);
    const int64_t at = out.m0 * out.ldy + b0;
    k.store->store(yt, b1 - b0, out.mt, out.y + at, out.ldy, out.stream, plain,
                   epilogue.residual != nullptr ? epilogue.residual + at : nullptr);
  }
}

Int8Kernels int8_kernels(Int8Path resolved) {
  if (resolved == Int8Path::kPortable) return Int8Kernels{&int8_portable_ops(), &portable_ops(), Isa::kPortable};
  return Int8Kernels{&int8_x86_ops(resolved), &ops_for(resolve_isa(Isa::kAvx2)), Isa::kAvx2};
}

const char* int8_path_name(Int8Path path) {
  switch (path) {
    case Int8Path::kAvx2: return "avx2";
    case Int8Path::kAvxVnni: return "avx-vnni";
    case Int8Path::kAvx512Vnni: return "avx512-vnni";
    default: return "portable";
  }
}

Int8Path resolve_int8_path(Int8Path requested) {
  if (requested == Int8Path::kAuto) {
    requested = Int8Path::kAvx512Vnni;
    const char* env = std::getenv("SMP_SPARSE_INT8");
    for (int p = 0; env != nullptr && p <= 3; ++p)
      if (std::strcmp(env, int8_path_name(static_cast<Int8Path>(p))) == 0) requested = static_cast<Int8Path>(p);
  }
  const bool avx2 = cpu_has("avx2");
  if (requested == Int8Path::kAvx512Vnni && avx2 && cpu_has("avx512vnni")) return Int8Path::kAvx512Vnni;
  if (requested >= Int8Path::kAvxVnni && avx2 && cpu_has("avxvnni")) return Int8Path::kAvxVnni;
  if (requested >= Int8Path::kAvx2 && avx2) return Int8Path::kAvx2;
  return Int8Path::kPortable;
}

std::string int8_linear(const Int8Csr& w, const float* x, int64_t m, float* y, Int8Path path, Runner& runner,
                        const Epilogue& epilogue) {
  if (m <= 0 || w.rows == 0) return "";
  const int64_t tiles = (m + kTile - 1) / kTile;
  const Int8Path resolved = resolve_int8_path(path);
  Job job;
  plan_splits(tiles, w.rows, 1, &job.splits, &job.rows_per_split);
  job.w = &w;
  job.x = x;
  job.y = y;
  job.m = m;
  job.k = int8_kernels(resolved);
  // A fused LayerNorm reads the rows right back: keep them in cache.
  job.stream = epilogue.ln_gamma == nullptr && streaming_wanted(m, w.rows);
  job.epilogue = epilogue;
  job.id = new_job_id();
  std::string err = runner.parallel_for(static_cast<size_t>(tiles * job.splits), run_task, &job);
  if (err.empty() && job.failed.load()) err = "out of memory for the int8 kernel's scratch buffers";
  if (err.empty() && epilogue.ln_gamma != nullptr && job.splits > 1) {
    // Rows were split between tasks: normalise once every row is complete.
    NormJob norm{y, m, w.rows, &job.epilogue, job.k.norm_isa};
    err = runner.parallel_for(static_cast<size_t>(tiles), norm_task, &norm);
  }
  return err;
}

}  // namespace smp

#if !defined(SMP_HAVE_AVX2)
namespace smp {
const Int8Ops& int8_x86_ops(Int8Path) { return int8_portable_ops(); }
}  // namespace smp
#endif
