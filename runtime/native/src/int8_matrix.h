// int8 CSR weights for the quantized sparse linear: validation and the kernel-ready form.
//
// W [rows, cols] is stored symmetric per output row: W[r, k] ~= scale[r] * q[r, k], q in
// [-127, 127] (-128 is refused, so |q| fits the AVX2 sign trick). Each row's entries are padded
// with zero weights to a multiple of 4: the kernels take a row's entries four at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sparse_matrix.h"

namespace smp {

// ONNX TensorProto.DataType of int8.
constexpr int kDTypeInt8 = 3;

// Most input features: keeps every int32 accumulator exact (65,536 x 255 x 127 < 2^31).
constexpr int64_t kMaxInt8Cols = int64_t(1) << 16;

struct Int8Csr {
  int64_t rows = 0, cols = 0;
  int max_abs = 0;                 // largest |q|: <= 64 lets AVX2 skip the sign trick
  std::vector<int64_t> row_ptr;    // rows + 1, every row's span a multiple of 4
  std::vector<int32_t> col_off;    // column * kTile (byte offset into the u8 X^T tile)
  std::vector<int8_t> values;      // q, zeros in the padding
  std::vector<int32_t> row_sum;    // sum of q over the row (the u8 offset's compensation)
  std::vector<float> scale;        // rows entries, finite and > 0
  std::vector<float> bias;         // rows entries (zeros when there is none)
};

// Validates CSR arrays (crow [rows + 1], col [nnz], each int32 or int64; values int8 [nnz]), per-row
// scales (float [rows]) and an optional bias (float [rows]) against rows x cols, and packs them.
// "" on success, else a message naming the array and the fault.
std::string pack_int8_csr(int64_t rows, int64_t cols, const TensorView& crow, const TensorView& col,
                          const TensorView& values, const TensorView& scale, const TensorView* bias, Int8Csr* out);

}  // namespace smp
