// Validation of untrusted CSR/BSR arrays and their packed, kernel-ready form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace smp {

// Element types, numbered like ONNX TensorProto.DataType.
enum DType : int { kDTypeUndefined = 0, kDTypeFloat = 1, kDTypeInt32 = 6, kDTypeInt64 = 7 };

// A borrowed tensor: pointer, element type, dims. Nothing is owned.
struct TensorView {
  const void* data = nullptr;
  int dtype = kDTypeUndefined;
  std::vector<int64_t> dims;
};

// Tokens per tile: one tile of X^T holds this many tokens per input feature (4 AVX registers).
constexpr int64_t kTile = 32;
// Largest dimension accepted anywhere (keeps every product in int64 and offsets in int32).
constexpr int64_t kMaxDim = int64_t(1) << 24;
// Most columns per chunk (keeps a chunk's X^T offsets well inside int32).
constexpr int64_t kMaxChunkCols = int64_t(1) << 20;

// The weight W [rows, cols] of Y = X W^T + b, split into column chunks so that a chunk of
// X^T stays in cache (L2) while every row's entries of that chunk are applied. Per chunk c and block row r, entries
// row_ptr[c * (block_rows + 1) + r] .. [.. + r + 1] hold for each stored block its first
// column's offset inside the chunk's X^T slice (local column * kTile floats) and its
// bh * bw values (row-major). CSR is the case bh = bw = 1.
struct PackedMatrix {
  int64_t rows = 0, cols = 0, bh = 1, bw = 1;
  int64_t chunk_cols = 0;   // columns per chunk (a multiple of bw)
  int64_t num_chunks = 0;
  int64_t nnz_blocks = 0;
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> col_off;
  std::vector<float> values;
  std::vector<float> bias;  // rows entries (zeros when the node has no bias)

  int64_t block_rows() const { return bh ? rows / bh : 0; }
  const int64_t* chunk_row_ptr(int64_t c) const { return row_ptr.data() + c * (block_rows() + 1); }
};

// Checks the `shape` and `block_shape` attributes; "" if fine, else the reason.
std::string check_attributes(const std::vector<int64_t>& shape, const std::vector<int64_t>& block,
                             int64_t* rows, int64_t* cols, int64_t* bh, int64_t* bw);

// Validates crow/col/values/bias against rows x cols in bh x bw blocks and packs them.
// Returns "" on success, else a message naming the array and the fault. Never reads
// outside the extents the views declare.
std::string pack_matrix(int64_t rows, int64_t cols, int64_t bh, int64_t bw, const TensorView& crow,
                        const TensorView& col, const TensorView& values, const TensorView* bias,
                        int64_t chunk_cols, PackedMatrix* out);

// "" if all n values are finite, else "<name> holds a non-finite value (nan / inf / -inf) at
// entry i": weights, biases and LayerNorm parameters are refused, not computed with.
std::string check_finite(const float* values, int64_t n, const char* name);

// Columns per chunk: SMP_SPARSE_KCHUNK if set (0 = one chunk), else 1024, rounded to bw.
int64_t default_chunk_cols(int64_t cols, int64_t bw);

}  // namespace smp
