// What the tiled drivers (SparseLinear in kernel.cc, SparseFFN in ffn.cc) share: per-thread
// scratch, the packed X^T tile cache, row blocking, row splits and the LayerNorm pass.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernel.h"
#include "scratch.h"

namespace smp {

// Per-thread scratch: the packed X^T tile (and which call and tile it holds), the
// accumulators of one row block, and SparseFFN's hidden tile.
struct Scratch {
  Buffer xt, yt, ht;
  uint64_t job = 0;
  int64_t tile = -1;
};

Scratch& thread_scratch();
// A fresh id per kernel call: a thread's cached X^T tile is reused only within one call.
uint64_t new_job_id();
// Rows accumulated (and stored) together, a multiple of 16 * w.bh (SMP_SPARSE_ROWBLOCK).
int64_t block_step(const PackedMatrix& w);
// The X^T tile of rows x[0, mt) (row stride cols) in s.xt, packed unless s already holds
// (job, tile); null when memory runs out.
const float* packed_tile(Scratch& s, uint64_t job, int64_t tile, const float* x, int64_t cols, int64_t mt,
                         const KernelOps& ops);

// Where a tile's outputs go: y [m, ldy] rows m0 .. m0 + mt; stream: non-temporal stores.
struct OutputTile {
  float* y;
  int64_t m0, mt, ldy;
  bool stream;
};
// Rows [r0, r1) of w applied to xt, one L1 row block at a time through yt (block_step(w) *
// kTile floats), stored to `out` with the epilogue's activation and residual (not LayerNorm).
void store_rows(const PackedMatrix& w, const float* xt, int64_t r0, int64_t r1, float* yt, const KernelOps& ops,
                const Epilogue& epilogue, const OutputTile& out);
// How many row splits (and rows per split) so that `tiles` token tiles make enough tasks.
void plan_splits(int64_t tiles, int64_t rows, int64_t bh, int64_t* splits, int64_t* per_split);
bool streaming_wanted(int64_t m, int64_t rows);
const KernelOps& ops_for(Isa resolved);

// LayerNorm of y [m, rows] token tile by token tile (one task per tile).
struct NormJob {
  float* y;
  int64_t m, rows;
  const Epilogue* epilogue;
  Isa isa;
};
void norm_task(void* data, size_t index);

}  // namespace smp
