// The quantized sparse linear: y = act(dequant(q8(x) Wq^T) + bias) (+ residual), weights int8
// CSR (int8_matrix.h), activations quantized per token inside the call.
//
// Per token t of a 32-token tile: s_t = max_k |x[t, k]| / 127 and xq[t, k] = rint(x[t, k] *
// (127 / max_k |x[t, k]|)) in [-127, 127] (a token of zeros: s_t = 0, xq = 0; a token holding
// NaN/inf: s_t = NaN, so its outputs are NaN). X^T is held as u8 (xq + 128) [cols][32].
// acc[r, t] = sum_k q[r, k] xq[t, k] exactly in int32 on every path, and
// yt[r, t] = bias[r] + (scale[r] * s_t) * float(acc) with no fused multiply-add, so that a numpy
// float32 reference reproduces the output bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include "int8_matrix.h"
#include "kernel.h"
#include "scratch.h"
#include "tiling.h"

namespace smp {

// Instruction paths of the int8 accumulation. kAuto: the best the CPU has (AVX512-VNNI on
// 256-bit registers, then AVX-VNNI, then AVX2), SMP_SPARSE_INT8=portable|avx2|avx-vnni|avx512-vnni
// forces one (an unsupported one falls back to the best supported path below it).
enum class Int8Path : int { kAuto = -1, kPortable = 0, kAvx2 = 1, kAvxVnni = 2, kAvx512Vnni = 3 };
Int8Path resolve_int8_path(Int8Path requested);
const char* int8_path_name(Int8Path path);

struct Int8Ops {
  // x rows [0, mt) (row stride ld, `cols` values) -> xq [cols][kTile] u8 and st [kTile];
  // lanes t >= mt: xq 128, st 0.
  void (*quantize_tile)(const float* x, int64_t ld, int64_t mt, int64_t cols, uint8_t* xq, float* st);
  // yt[(r - r0) * kTile + t] for rows [r0, r1), as in the header comment.
  void (*accumulate)(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, int64_t r1, float* yt);
  // The same quantization of a tile already transposed: ht [rows][kTile] floats (token t in
  // lane t, lanes t >= mt ignored) -> hq [rows][kTile] u8 and st [kTile], exactly what
  // quantize_tile gives for the token-major rows (SparseFFNInt8's hidden tile).
  void (*quantize_transposed)(const float* ht, int64_t rows, int64_t mt, uint8_t* hq, float* st);
};

const Int8Ops& int8_portable_ops();
const Int8Ops& int8_x86_ops(Int8Path path);  // AVX2 quantization + the path's accumulation

// y[m, w.rows] = act(...) (+ residual [m, w.rows]), then LayerNorm of each row when
// epilogue.ln_gamma is set (as in sparse_linear).
std::string int8_linear(const Int8Csr& w, const float* x, int64_t m, float* y, Int8Path path, Runner& runner,
                        const Epilogue& epilogue = Epilogue());

// The two int8 linears of a feed-forward block in one call (kernel.h's sparse_ffn, quantized):
//   y = LN(dq(q8(act(dq(q8(x) W1^T) + b1)) W2^T) + b2 (+ residual))
// bit for bit what two chained int8_linear calls give; the [m, inner] hidden activations stay
// in the thread's cache as a transposed tile and are quantized there, per token.
std::string int8_ffn(const Int8Csr& w1, const Int8Csr& w2, const float* x, int64_t m, float* y, Int8Path path,
                     Runner& runner, const FfnOptions& ffn);

// ---- shared by the int8 drivers (kernel_int8.cc, ffn_int8.cc)

// What a resolved path runs: its quantization / accumulation, and the fp32 store and LayerNorm.
struct Int8Kernels {
  const Int8Ops* ops;
  const KernelOps* store;
  Isa norm_isa;
};
Int8Kernels int8_kernels(Int8Path resolved);

// Per-thread scratch: the quantized X^T tile (and which call and tile it holds), one row
// block's accumulators, SparseFFNInt8's hidden tile (fp32) and its quantized form.
struct Int8Scratch {
  Buffer xq, st, yt, ht, hq, hst;
  uint64_t job = 0;
  int64_t tile = -1;
};
Int8Scratch& int8_scratch();
// Rows accumulated (and stored) together.
constexpr int64_t kInt8RowBlock = 64;
// The quantized tile of rows x[0, mt) (row stride cols) in s.xq / s.st, quantized unless s
// already holds (job, tile); false when memory runs out.
bool quantized_tile(Int8Scratch& s, uint64_t job, int64_t tile, const float* x, int64_t cols, int64_t mt,
                    const Int8Ops& ops);
// Rows [r0, r1) of w applied to the quantized tile (xq, st), one row block at a time through
// yt (kInt8RowBlock * kTile floats), stored to `out` with the epilogue's activation and residual.
void store_rows_int8(const Int8Csr& w, const uint8_t* xq, const float* st, int64_t r0, int64_t r1, float* yt,
                     const Int8Kernels& k, const Epilogue& epilogue, const OutputTile& out);

}  // namespace smp
