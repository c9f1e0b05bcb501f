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
};

const Int8Ops& int8_portable_ops();
const Int8Ops& int8_x86_ops(Int8Path path);  // AVX2 quantization + the path's accumulation

// y[m, w.rows] = act(...) (+ residual [m, w.rows]); LayerNorm is not part of this entry.
std::string int8_linear(const Int8Csr& w, const float* x, int64_t m, float* y, Int8Path path, Runner& runner,
                        const Epilogue& epilogue = Epilogue());

}  // namespace smp
