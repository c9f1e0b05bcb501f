// The SparseFFNInt8 driver: both int8 linears of a feed-forward block per 32-token tile.
//
// Chained, the first SparseLinearInt8 writes its [m, inner] output token-major and the second
// reads it back and quantizes it per token. Here the hidden tile stays transposed, and is
// quantized where it lies:
//
//   X tile ─q8─► X^T u8 [hidden][32] ─W1, act─► H^T [inner][32] ─q8─► H^T u8 ─W2─► Y rows (+R, LN)
//
// The per-token scale of H needs every one of a token's inner values, so the hidden tile is
// complete before it is quantized. Many tiles (>= 16): one task per tile, everything in the
// thread's scratch. Few tiles (batch 1): three rounds through shared buffers of all tiles (the
// W1 rows split between tasks, then one quantization task per tile, then the W2 rows split).
#include <algorithm>
#include <atomic>
#include <string>

#include "kernel_int8.h"

namespace smp {
namespace {

thread_local Buffer tls_hidden, tls_hidden_q, tls_hidden_st;  // the caller's, three-round plan

struct FfnJob {
  const Int8Csr *w1, *w2;
  const float* x;
  float* y;
  float* hidden = nullptr;      // three-round plan: [tiles][w1.rows][kTile] floats
  uint8_t* hidden_q = nullptr;  // and its quantized form, same layout in bytes
  float* hidden_st = nullptr;   // [tiles][kTile] scales
  int64_t m, splits1, per1, splits2, per2;
  bool stream;
  Int8Kernels k;
  int activation;
  Epilogue out;  // residual and LayerNorm of the second product
  uint64_t id;
  std::atomic<bool> failed{false};
};

int64_t tile_tokens(const FfnJob& job, int64_t tile) { return std::min<int64_t>(kTile, job.m - tile * kTile); }

OutputTile output_tile(const FfnJob& job, int64_t tile) {
  return OutputTile{job.y, tile * kTile, tile_tokens(job, tile), job.w2->rows, job.stream};
}

// H^T rows [r0, r1) = act(dq(X W1^T) + b1) of the tile quantized in s, written to ht.
void hidden_rows(const FfnJob& job, const Int8Scratch& s, int64_t r0, int64_t r1, float* ht) {
  const auto* xq = reinterpret_cast<const uint8_t*>(s.xq.data);
  for (int64_t b0 = r0; b0 < r1; b0 += kInt8RowBlock) {
    const int64_t b1 = std::min(r1, b0 + kInt8RowBlock);
    float* block = ht + (b0 - r0) * kTile;
    job.k.ops->accumulate(*job.w1, xq, s.st.data, b0, b1, block);
    job.k.store->activate(block, (b1 - b0) * kTile, job.activation);
  }
}

bool quantize_x(FfnJob& job, Int8Scratch& s, int64_t tile) {
  const int64_t cols = job.w1->cols;
  if (quantized_tile(s, job.id, tile, job.x + tile * kTile * cols, cols, tile_tokens(job, tile), *job.k.ops)) return true;
  job.failed.store(true);
  return false;
}

void normalise(const FfnJob& job, const OutputTile& out) {
  layer_norm_rows(job.y + out.m0 * out.ldy, out.mt, out.ldy, out.ldy, job.out, job.k.norm_isa);
}

void tile_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index), inner = std::max<int64_t>(job.w1->rows, 1);
  const OutputTile out = output_tile(job, tile);
  Int8Scratch& s = int8_scratch();
  float* ht = s.ht.get(static_cast<size_t>(inner * kTile));
  auto* hq = reinterpret_cast<uint8_t*>(s.hq.get(static_cast<size_t>(inner * kTile / 4)));
  float* hst = s.hst.get(kTile);
  float* yt = s.yt.get(static_cast<size_t>(kInt8RowBlock * kTile));
  if (ht == nullptr || hq == nullptr || hst == nullptr || yt == nullptr) {
    job.failed.store(true);
    return;
  }
  if (!quantize_x(job, s, tile)) return;
  hidden_rows(job, s, 0, job.w1->rows, ht);
  job.k.ops->quantize_transposed(ht, job.w1->rows, out.mt, hq, hst);
  store_rows_int8(*job.w2, hq, hst, 0, job.w2->rows, yt, job.k, job.out, out);
  if (job.out.ln_gamma != nullptr) normalise(job, out);
}

void hidden_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index) / job.splits1, split = static_cast<int64_t>(index) % job.splits1;
  const int64_t r0 = split * job.per1, r1 = std::min(job.w1->rows, r0 + job.per1);
  Int8Scratch& s = int8_scratch();
  if (r0 >= r1 || !quantize_x(job, s, tile)) return;
  hidden_rows(job, s, r0, r1, job.hidden + (tile * job.w1->rows + r0) * kTile);
}

void quantize_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index), at = tile * job.w1->rows * kTile;
  job.k.ops->quantize_transposed(job.hidden + at, job.w1->rows, tile_tokens(job, tile), job.hidden_q + at,
                               job.hidden_st + tile * kTile);
}

void output_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index) / job.splits2, split = static_cast<int64_t>(index) % job.splits2;
  const int64_t r0 = split * job.per2, r1 = std::min(job.w2->rows, r0 + job.per2);
  if (r0 >= r1) return;
  float* yt = int8_scratch().yt.get(static_cast<size_t>(kInt8RowBlock * kTile));
  if (yt == nullptr) {
    job.failed.store(true);
    return;
  }
  const OutputTile out = output_tile(job, tile);
  const int64_t at = tile * job.w1->rows * kTile;
  store_rows_int8(*job.w2, job.hidden_q + at, job.hidden_st + tile * kTile, r0, r1, yt, job.k,
                  job.out, out);
  if (job.out.ln_gamma != nullptr && job.splits2 == 1) normalise(job, out);
}

// The three rounds of the few-tiles plan (buffers of every tile, owned by the calling thread).
std::string run_rounds(FfnJob& job, int64_t tiles, Runner& runner) {
  const size_t cells = static_cast<size_t>(tiles * std::max<int64_t>(job.w1->rows, 1) * kTile);
  job.hidden = tls_hidden.get(cells);
  job.hidden_q = reinterpret_cast<uint8_t*>(tls_hidden_q.get(cells / 4));
  job.hidden_st = tls_hidden_st.get(static_cast<size_t>(tiles * kTile));
  if (job.hidden == nullptr || job.hidden_q == nullptr || job.hidden_st == nullptr)
    return "out of memory for the hidden activations";
  std::string err = runner.parallel_for(static_cast<size_t>(tiles * job.splits1), hidden_task, &job);
  if (err.empty() && !job.failed.load()) err = runner.parallel_for(static_cast<size_t>(tiles), quantize_task, &job);
  if (err.empty() && !job.failed.load())
    err = runner.parallel_for(static_cast<size_t>(tiles * job.splits2), output_task, &job);
  if (err.empty() && !job.failed.load() && job.out.ln_gamma != nullptr && job.splits2 > 1) {
    NormJob norm{job.y, job.m, job.w2->rows, &job.out, job.k.norm_isa};
    err = runner.parallel_for(static_cast<size_t>(tiles), norm_task, &norm);
  }
  return err;
}

}  // namespace

std::string int8_ffn(const Int8Csr& w1, const Int8Csr& w2, const float* x, int64_t m, float* y, Int8Path path,
                     Runner& runner, const FfnOptions& ffn) {
  if (w2.cols != w1.rows)
    return "the second weight takes " + std::to_string(w2.cols) + " inputs, the first gives " +
           std::to_string(w1.rows);
  if (m <= 0 || w2.rows == 0) return "";
  const int64_t tiles = (m + kTile - 1) / kTile;
  const Int8Path resolved = resolve_int8_path(path);
  FfnJob job;
  job.w1 = &w1;
  job.w2 = &w2;
  job.x = x;
  job.y = y;
  job.m = m;
  job.k = int8_kernels(resolved);
  job.activation = ffn.activation;
  job.out = ffn.output();
  job.stream = ffn.ln_gamma == nullptr && streaming_wanted(m, w2.rows);
  job.id = new_job_id();
  plan_splits(tiles, w1.rows, 1, &job.splits1, &job.per1);
  plan_splits(tiles, w2.rows, 1, &job.splits2, &job.per2);
  std::string err = job.splits1 == 1 && job.splits2 == 1
                        ? runner.parallel_for(static_cast<size_t>(tiles), tile_task, &job)
                        : run_rounds(job, tiles, runner);
  if (err.empty() && job.failed.load()) err = "out of memory for the int8 kernel's scratch buffers";
  return err;
}

}  // namespace smp
