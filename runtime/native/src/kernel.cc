#include "kernel.h"
#include "scratch.h"
#include "tiling.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

namespace smp {
namespace {

// ---------------------------------------------------------------- portable primitives

void pack_tile_portable(const float* x, int64_t ld, int64_t mt, int64_t cols, float* xt) {
  for (int64_t k = 0; k < cols; ++k) {
    float* dst = xt + k * kTile;
    for (int64_t t = 0; t < mt; ++t) dst[t] = x[t * ld + k];
    for (int64_t t = mt; t < kTile; ++t) dst[t] = 0.0f;
  }
}

void accumulate_portable(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt) {
  const int64_t bh = w.bh, bw = w.bw, bsize = bh * bw;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < kTile; ++t) yt[(r - r0) * kTile + t] = w.bias[r];
  for (int64_t c = 0; c < w.num_chunks; ++c) {
    const float* xc = xt + c * w.chunk_cols * kTile;
    const int64_t* rp = w.chunk_row_ptr(c);
    for (int64_t br = r0 / bh; br < r1 / bh; ++br) {
      for (int64_t e = rp[br]; e < rp[br + 1]; ++e) {
        const float* v = w.values.data() + e * bsize;
        const float* xb = xc + w.col_off[e];
        for (int64_t i = 0; i < bh; ++i) {
          float* acc = yt + (br * bh + i - r0) * kTile;
          for (int64_t j = 0; j < bw; ++j) {
            const float wv = v[i * bw + j];
            const float* xp = xb + j * kTile;
            for (int64_t t = 0; t < kTile; ++t) acc[t] += wv * xp[t];
          }
        }
      }
    }
  }
}

float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f)); }

void activate_portable(float* v, int64_t n, int activation) {
  if (activation != kActivationGelu) return;
  for (int64_t i = 0; i < n; ++i) v[i] = gelu(v[i]);
}

void store_portable(const float* yt, int64_t nrows, int64_t mt, float* y, int64_t ldy, bool, const Epilogue& ep,
                    const float* residual) {
  for (int64_t t = 0; t < mt; ++t) {
    for (int64_t r = 0; r < nrows; ++r) {
      float v = yt[r * kTile + t];
      if (ep.activation == kActivationGelu) v = gelu(v);
      if (residual != nullptr) v += residual[t * ldy + r];
      y[t * ldy + r] = v;
    }
  }
}

// ---------------------------------------------------------------- scratch memory

thread_local Scratch tls_scratch;
std::atomic<uint64_t> next_job{1};

// ---------------------------------------------------------------- the tiled driver

struct Job {
  const PackedMatrix* w;
  const float* x;
  float* y;
  int64_t m, splits, rows_per_split;
  bool stream;
  const KernelOps* ops;
  Isa isa;
  Epilogue epilogue;
  uint64_t id;
  std::atomic<bool> failed{false};
};

void run_task(void* data, size_t index) {
  Job& job = *static_cast<Job*>(data);
  const PackedMatrix& w = *job.w;
  const int64_t tile = static_cast<int64_t>(index) / job.splits;
  const int64_t split = static_cast<int64_t>(index) % job.splits;
  const int64_t m0 = tile * kTile, mt = std::min<int64_t>(kTile, job.m - m0);
  const int64_t r0 = split * job.rows_per_split, r1 = std::min(w.rows, r0 + job.rows_per_split);
  if (mt <= 0 || r0 >= r1) return;
  Scratch& s = thread_scratch();
  const float* xt = packed_tile(s, job.id, tile, job.x + m0 * w.cols, w.cols, mt, *job.ops);
  float* yt = s.yt.get(static_cast<size_t>(block_step(w) * kTile));
  if (xt == nullptr || yt == nullptr) {
    job.failed.store(true);
    return;
  }
  store_rows(w, xt, r0, r1, yt, *job.ops, job.epilogue, OutputTile{job.y, m0, mt, w.rows, job.stream});
  // This task wrote whole output rows of its tokens, still in cache: normalise them here.
  if (job.epilogue.ln_gamma != nullptr && job.splits == 1)
    layer_norm_rows(job.y + m0 * w.rows, mt, w.rows, w.rows, job.epilogue, job.isa);
}

}  // namespace

// ---------------------------------------------------------------- shared by the drivers (tiling.h)

Scratch& thread_scratch() { return tls_scratch; }
uint64_t new_job_id() { return next_job.fetch_add(1); }

// Output rows accumulated (and stored) together: 64 rows x 32 tokens = 8 KiB by default.
int64_t row_block() {
  static const int64_t rows = [] {
    const char* env = std::getenv("SMP_SPARSE_ROWBLOCK");
    const int64_t v = env ? std::atoll(env) : 0;
    return v > 0 ? v : int64_t(64);
  }();
  return rows;
}

int64_t block_step(const PackedMatrix& w) {
  const int64_t rb = row_block(), unit = 16 * w.bh;
  return rb / unit > 0 ? rb / unit * unit : unit;
}

const float* packed_tile(Scratch& s, uint64_t job, int64_t tile, const float* x, int64_t cols, int64_t mt,
                         const KernelOps& ops) {
  float* xt = s.xt.get(static_cast<size_t>(std::max<int64_t>(cols, 1) * kTile));
  if (xt == nullptr) return nullptr;
  if (s.job != job || s.tile != tile) {
    ops.pack_tile(x, cols, mt, cols, xt);
    s.job = job;
    s.tile = tile;
  }
  return xt;
}

void store_rows(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt, const KernelOps& ops,
                const Epilogue& epilogue, const OutputTile& out) {
  // Row blocks small enough that their accumulators stay in L1 until they are stored.
  const int64_t step = block_step(w);
  for (int64_t b0 = r0; b0 < r1; b0 += step) {
    const int64_t b1 = std::min(r1, b0 + step);
    ops.accumulate(w, xt, b0, b1, yt);
    const int64_t at = out.m0 * out.ldy + b0;
    ops.store(yt, b1 - b0, out.mt, out.y + at, out.ldy, out.stream, epilogue,
              epilogue.residual != nullptr ? epilogue.residual + at : nullptr);
  }
}

void plan_splits(int64_t tiles, int64_t rows, int64_t bh, int64_t* splits, int64_t* per_split) {
  // Few tiles: split the output rows as well so every thread has work.
  const int64_t align = 8 * bh;
  int64_t n = tiles >= 16 ? 1 : (16 + tiles - 1) / tiles;
  n = std::max<int64_t>(1, std::min(n, rows / std::max<int64_t>(align, 64)));
  int64_t per = (rows + n - 1) / n;
  per = std::max<int64_t>(align, (per + align - 1) / align * align);   // rows may be 0
  *per_split = per;
  *splits = (rows + per - 1) / per;
}

void norm_task(void* data, size_t index) {
  const NormJob& job = *static_cast<const NormJob*>(data);
  const int64_t t0 = static_cast<int64_t>(index) * kTile, mt = std::min<int64_t>(kTile, job.m - t0);
  if (mt > 0) layer_norm_rows(job.y + t0 * job.rows, mt, job.rows, job.rows, *job.epilogue, job.isa);
}

// Non-temporal stores for outputs of 4 MiB and more: measured 2-3x faster than plain stores
// for the transposed write pattern (plain stores pay a read-for-ownership per line);
// small outputs stay in cache for the next operator. SMP_SPARSE_STREAM=0/1 forces off/on.
bool streaming_wanted(int64_t m, int64_t rows) {
  static const int forced = [] {
    const char* env = std::getenv("SMP_SPARSE_STREAM");
    return env == nullptr ? -1 : std::atoi(env) != 0;
  }();
  if (forced >= 0) return forced == 1;
  return m * rows * static_cast<int64_t>(sizeof(float)) >= (int64_t(4) << 20);
}

void layer_norm_rows_portable(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& e) {
  for (int64_t t = 0; t < tokens; ++t) {
    float* row = y + t * ldy;
    double sum = 0.0, sq = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += row[c];
    const double mean = sum / static_cast<double>(cols);
    for (int64_t c = 0; c < cols; ++c) sq += (row[c] - mean) * (row[c] - mean);
    const float inv = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(cols) + e.ln_epsilon));
    const float mu = static_cast<float>(mean);
    for (int64_t c = 0; c < cols; ++c) row[c] = (row[c] - mu) * inv * e.ln_gamma[c] + e.ln_beta[c];
  }
}

void layer_norm_rows(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& epilogue, Isa isa) {
  if (vector_isa(resolve_isa(isa))) {
    layer_norm_rows_avx2(y, tokens, cols, ldy, epilogue);
  } else {
    layer_norm_rows_portable(y, tokens, cols, ldy, epilogue);
  }
}

const KernelOps& portable_ops() {
  static const KernelOps ops{pack_tile_portable, accumulate_portable, store_portable, activate_portable};
  return ops;
}

const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : (isa == Isa::kAvx2 ? "avx2" : "portable");
}

// AVX-512 is the default on Intel only, by measurement (benchmarks/isa_ab.py, 2 cores): on a
// Xeon with AMX (family 6 model 167) it was 1.01-1.19x AVX2 per linear and, for MiniLM, 1.01x at
// batch 32 and 1.16x at batch 1; on Zen 5 it was 3-4% slower than AVX2 for MiniLM at batch 32.
static bool intel_cpu() {
#if defined(__x86_64__)
  return __builtin_cpu_is("intel");
#else
  return false;
#endif
}

Isa resolve_isa(Isa requested) {
#if defined(__x86_64__) && defined(SMP_HAVE_AVX2)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  const bool avx2 = false;
#endif

#if defined(__x86_64__) && defined(SMP_HAVE_AVX512)
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");  // libgcc also checks the OS saves zmm
#else
  const bool avx512 = false;
#endif

  const Isa vector = avx2 ? Isa::kAvx2 : Isa::kPortable;
  const Isa best = avx512 ? Isa::kAvx512 : vector;
  if (requested == Isa::kAuto) {
    const char* env = std::getenv("SMP_SPARSE_ISA");
    if (env != nullptr && std::strcmp(env, "portable") == 0) return Isa::kPortable;
    if (env != nullptr && std::strcmp(env, "avx2") == 0) return vector;
    if (env != nullptr && std::strcmp(env, "avx512") == 0) return best;
    return intel_cpu() ? best : vector;
  }
  if (requested == Isa::kAvx512) return best;
  if (requested == Isa::kAvx2) return avx2 ? Isa::kAvx2 : Isa::kPortable;
  return Isa::kPortable;
}

std::string SerialRunner::parallel_for(size_t n, void (*fn)(void*, size_t), void* data) {
  for (size_t i = 0; i < n; ++i) fn(data, i);
  return "";
}

std::string ThreadRunner::parallel_for(size_t n, void (*fn)(void*, size_t), void* data) {
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(data, i);
  };
  const size_t extra = std::min<size_t>(static_cast<size_t>(threads_), n) - (n > 0 ? 1 : 0);
  std::vector<std::thread> pool;
  try {
    for (size_t t = 0; t < extra; ++t) pool.emplace_back(work);
  } catch (const std::exception&) {
    // Fewer threads than asked: the caller and those started finish the work.
  }
  work();
  for (auto& th : pool) th.join();
  return "";
}

std::string sparse_linear(const PackedMatrix& w, const float* x, int64_t m, float* y, Isa isa, Runner& runner,
                          const Epilogue& epilogue) {
  if (m <= 0 || w.rows == 0) return "";
  const int64_t tiles = (m + kTile - 1) / kTile;
  Job job;
  plan_splits(tiles, w.rows, w.bh, &job.splits, &job.rows_per_split);
  job.w = &w;
  job.x = x;
  job.y = y;
  job.m = m;
  // A fused LayerNorm reads the rows right back: keep them in cache.
  job.stream = epilogue.ln_gamma == nullptr && streaming_wanted(m, w.rows);
  job.isa = resolve_isa(isa);
  job.ops = &ops_for(job.isa);
  job.epilogue = epilogue;
  job.id = new_job_id();
  std::string err = runner.parallel_for(static_cast<size_t>(tiles * job.splits), run_task, &job);
  if (err.empty() && job.failed.load()) err = "out of memory for the kernel's scratch buffers";
  if (err.empty() && epilogue.ln_gamma != nullptr && job.splits > 1) {
    // Rows were split between tasks: normalise once every row is complete.
    NormJob norm{y, m, w.rows, &job.epilogue, job.isa};
    err = runner.parallel_for(static_cast<size_t>(tiles), norm_task, &norm);
  }
  return err;
}

const KernelOps& ops_for(Isa resolved) {
  if (resolved == Isa::kAvx512) return avx512_ops();
  return resolved == Isa::kAvx2 ? avx2_ops() : portable_ops();
}

}  // namespace smp

#if !defined(SMP_HAVE_AVX2)
namespace smp {
const KernelOps& avx2_ops() { return portable_ops(); }
void layer_norm_rows_avx2(float* y, int64_t tokens, int64_t cols, int64_t ldy, const Epilogue& e) {
  layer_norm_rows_portable(y, tokens, cols, ldy, e);
}
}  // namespace smp
#endif

#if !defined(SMP_HAVE_AVX512)
namespace smp {
const KernelOps& avx512_ops() { return avx2_ops(); }
}  // namespace smp
#endif
