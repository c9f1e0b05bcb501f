// The SparseFFN driver: both linears of a feed-forward block per 32-token tile.
//
// Unfused, the first linear writes its [m, inner] output (transposing every tile back to
// token-major rows) and the second reads it all again (transposing it into tiles). Here the
// hidden tile stays in the layout the second product reads, [inner][kTile]:
//
//   X tile ─pack─► X^T [hidden][32] ─W1, act─► H^T [inner][32] ─W2─► Y rows (+X, LN)
//
// Many tiles (>= 16): one task per tile, H^T in the thread's scratch (L2). Few tiles (batch
// 1): the rows of both products are split between tasks instead, in two rounds through a
// shared H^T buffer of all tiles, so every thread has work.
#include <algorithm>
#include <atomic>
#include <string>

#include "kernel.h"
#include "scratch.h"
#include "tiling.h"

namespace smp {
namespace {

thread_local Buffer tls_hidden;  // the caller's H^T of every tile (two-round plan)

struct FfnJob {
  const PackedMatrix *w1, *w2;
  const float* x;
  float* y;
  float* hidden;  // two-round plan only: [tiles][w1.rows][kTile]
  int64_t m, splits1, per1, splits2, per2;
  bool stream;
  const KernelOps* ops;
  Isa isa;
  int activation;
  Epilogue out;  // residual (x) and LayerNorm of the second product
  uint64_t id;
  std::atomic<bool> failed{false};
};

// H^T rows [r0, r1) = act(W1 X^T + b1), written to ht (row r at (r - r0) * kTile).
void hidden_rows(const FfnJob& job, const float* xt, int64_t r0, int64_t r1, float* ht) {
  const int64_t step = block_step(*job.w1);
  for (int64_t b0 = r0; b0 < r1; b0 += step) {
    const int64_t b1 = std::min(r1, b0 + step);
    float* block = ht + (b0 - r0) * kTile;
    job.ops->accumulate(*job.w1, xt, b0, b1, block);
    job.ops->activate(block, (b1 - b0) * kTile, job.activation);
  }
}

OutputTile output_tile(const FfnJob& job, int64_t tile) {
  const int64_t m0 = tile * kTile;
  return OutputTile{job.y, m0, std::min<int64_t>(kTile, job.m - m0), job.w2->rows, job.stream};
}

void tile_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index);
  const OutputTile out = output_tile(job, tile);
  Scratch& s = thread_scratch();
  const float* xt = packed_tile(s, job.id, tile, job.x + out.m0 * job.w1->cols, job.w1->cols, out.mt, *job.ops);
  float* ht = s.ht.get(static_cast<size_t>(std::max<int64_t>(job.w1->rows, 1) * kTile));
  float* yt = s.yt.get(static_cast<size_t>(block_step(*job.w2) * kTile));
  if (xt == nullptr || ht == nullptr || yt == nullptr) {
    job.failed.store(true);
    return;
  }
  hidden_rows(job, xt, 0, job.w1->rows, ht);
  store_rows(*job.w2, ht, 0, job.w2->rows, yt, *job.ops, job.out, out);
  if (job.out.ln_gamma != nullptr)
    layer_norm_rows(job.y + out.m0 * out.ldy, out.mt, out.ldy, out.ldy, job.out, job.isa);
}

void hidden_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index) / job.splits1, split = static_cast<int64_t>(index) % job.splits1;
  const int64_t m0 = tile * kTile, mt = std::min<int64_t>(kTile, job.m - m0);
  const int64_t r0 = split * job.per1, r1 = std::min(job.w1->rows, r0 + job.per1);
  if (r0 >= r1) return;
  const float* xt = packed_tile(thread_scratch(), job.id, tile, job.x + m0 * job.w1->cols, job.w1->cols, mt,
                                *job.ops);
  if (xt == nullptr) {
    job.failed.store(true);
    return;
  }
  hidden_rows(job, xt, r0, r1, job.hidden + (tile * job.w1->rows + r0) * kTile);
}

void output_task(void* data, size_t index) {
  FfnJob& job = *static_cast<FfnJob*>(data);
  const int64_t tile = static_cast<int64_t>(index) / job.splits2, split = static_cast<int64_t>(index) % job.splits2;
  const int64_t r0 = split * job.per2, r1 = std::min(job.w2->rows, r0 + job.per2);
  if (r0 >= r1) return;
  float* yt = thread_scratch().yt.get(static_cast<size_t>(block_step(*job.w2) * kTile));
  if (yt == nullptr) {
    job.failed.store(true);
    return;
  }
  const OutputTile out = output_tile(job, tile);
  store_rows(*job.w2, job.hidden + tile * job.w1->rows * kTile, r0, r1, yt, *job.ops, job.out, out);
  if (job.out.ln_gamma != nullptr && job.splits2 == 1)
    layer_norm_rows(job.y + out.m0 * out.ldy, out.mt, out.ldy, out.ldy, job.out, job.isa);
}

std::string check_shapes(const PackedMatrix& w1, const PackedMatrix& w2) {
  if (w2.cols != w1.rows)
    return "the second weight takes " + std::to_string(w2.cols) + " inputs, the first gives " +
           std::to_string(w1.rows);
  return "";
}

}  // namespace

std::string sparse_ffn(const PackedMatrix& w1, const PackedMatrix& w2, const float* x, int64_t m, float* y, Isa isa,
                       Runner& runner, const FfnOptions& ffn) {
  std::string err = check_shapes(w1, w2);
  if (!err.empty() || m <= 0 || w2.rows == 0) return err;
  const int64_t tiles = (m + kTile - 1) / kTile;
  FfnJob job;
  job.w1 = &w1;
  job.w2 = &w2;
  job.x = x;
  job.y = y;
  job.hidden = nullptr;
  job.m = m;
  job.isa = resolve_isa(isa);
  job.ops = &ops_for(job.isa);
  job.activation = ffn.activation;
  job.out = ffn.output();
  job.stream = ffn.ln_gamma == nullptr && streaming_wanted(m, w2.rows);
  job.id = new_job_id();
  plan_splits(tiles, w1.rows, w1.bh, &job.splits1, &job.per1);
  plan_splits(tiles, w2.rows, w2.bh, &job.splits2, &job.per2);
  if (job.splits1 == 1 && job.splits2 == 1) {
    err = runner.parallel_for(static_cast<size_t>(tiles), tile_task, &job);
  } else {
    job.hidden = tls_hidden.get(static_cast<size_t>(tiles * std::max<int64_t>(w1.rows, 1) * kTile));
    if (job.hidden == nullptr) return "out of memory for the hidden activations";
    err = runner.parallel_for(static_cast<size_t>(tiles * job.splits1), hidden_task, &job);
    if (err.empty() && !job.failed.load())
      err = runner.parallel_for(static_cast<size_t>(tiles * job.splits2), output_task, &job);
    if (err.empty() && !job.failed.load() && ffn.ln_gamma != nullptr && job.splits2 > 1) {
      NormJob norm{y, m, w2.rows, &job.out, job.isa};
      err = runner.parallel_for(static_cast<size_t>(tiles), norm_task, &norm);
    }
  }
  if (err.empty() && job.failed.load()) err = "out of memory for the kernel's scratch buffers";
  return err;
}

}  // namespace smp
