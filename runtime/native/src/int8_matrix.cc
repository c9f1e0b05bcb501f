#include "int8_matrix.h"

#include <cmath>
#include <cstdlib>
#include <vector>

namespace smp {
namespace {

std::string check_view(const TensorView& v, int dtype, int64_t n, const char* name) {
  if (v.data == nullptr && n > 0) return std::string(name) + " is missing";
  const bool index = dtype == kDTypeInt64 && v.dtype == kDTypeInt32;  // index arrays: int32 or int64
  if (v.dtype != dtype && !index) return std::string(name) + " has the wrong element type";
  if (v.dims.size() != 1 || v.dims[0] != n)
    return std::string(name) + " must be 1-D of length " + std::to_string(n);
  return "";
}

// Entry i of an int32 or int64 index array.
int64_t index_at(const TensorView& v, int64_t i) {
  return v.dtype == kDTypeInt32 ? static_cast<const int32_t*>(v.data)[i] : static_cast<const int64_t*>(v.data)[i];
}

// crow monotone from 0 (to nnz, its last entry), widened to int64.
std::string read_crow(const TensorView& crow, int64_t rows, std::vector<int64_t>* out) {
  out->resize(static_cast<size_t>(rows + 1));
  for (int64_t r = 0; r <= rows; ++r) (*out)[static_cast<size_t>(r)] = index_at(crow, r);
  if ((*out)[0] != 0) return "crow must start at 0";
  for (int64_t r = 0; r < rows; ++r)
    if ((*out)[static_cast<size_t>(r) + 1] < (*out)[static_cast<size_t>(r)])
      return "crow decreases at row " + std::to_string(r);
  return "";
}

}  // namespace

std::string pack_int8_csr(int64_t rows, int64_t cols, const TensorView& crow, const TensorView& col,
                          const TensorView& values, const TensorView& scale, const TensorView* bias, Int8Csr* out) {
  if (rows < 0 || cols < 0 || rows > kMaxDim || cols > kMaxInt8Cols)
    return "shape must be rows in [0, " + std::to_string(kMaxDim) + "] and cols in [0, " +
           std::to_string(kMaxInt8Cols) + "]";
  std::string msg = check_view(crow, kDTypeInt64, rows + 1, "crow");
  if (!msg.empty()) return msg;
  std::vector<int64_t> crow64;
  msg = read_crow(crow, rows, &crow64);
  if (!msg.empty()) return msg;
  const int64_t* cp = crow64.data();
  const int64_t nnz = cp[rows];
  if (nnz > rows * cols) return "crow claims more entries than rows x cols";
  if (msg.empty()) msg = check_view(col, kDTypeInt64, nnz, "col");
  if (msg.empty()) msg = check_view(values, kDTypeInt8, nnz, "values");
  if (msg.empty()) msg = check_view(scale, kDTypeFloat, rows, "scale");
  if (msg.empty() && bias != nullptr) msg = check_view(*bias, kDTypeFloat, rows, "bias");
  if (!msg.empty()) return msg;
  const int8_t* vq = static_cast<const int8_t*>(values.data);
  const float* sc = static_cast<const float*>(scale.data);
  for (int64_t r = 0; r < rows; ++r)
    if (!std::isfinite(sc[r]) || !(sc[r] > 0.0f)) return "scale must be finite and > 0 (row " + std::to_string(r) + ")";
  if (bias != nullptr) {
    msg = check_finite(static_cast<const float*>(bias->data), rows, "bias");
    if (!msg.empty()) return msg;
  }
  Int8Csr w;
  w.rows = rows;
  w.cols = cols;
  w.row_ptr.reserve(static_cast<size_t>(rows + 1));
  w.row_ptr.push_back(0);
  w.row_sum.assign(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = cp[r], prev = -1; e < cp[r + 1]; ++e) {
      const int64_t c = index_at(col, e);
      if (c < 0 || c >= cols) return "col holds " + std::to_string(c) + " at entry " + std::to_string(e) +
                                     ", outside [0, " + std::to_string(cols) + ")";
      if (c <= prev) return "col is not strictly increasing in row " + std::to_string(r);
      prev = c;
      if (vq[e] == -128) return "values holds -128 at entry " + std::to_string(e) + " (symmetric int8 is [-127, 127])";
      w.col_off.push_back(static_cast<int32_t>(c * kTile));
      w.values.push_back(vq[e]);
      w.row_sum[static_cast<size_t>(r)] += vq[e];
      w.max_abs = std::max(w.max_abs, std::abs(static_cast<int>(vq[e])));
    }
    while ((w.values.size() - static_cast<size_t>(w.row_ptr.back())) % 4 != 0) {
      w.col_off.push_back(0);
      w.values.push_back(0);
    }
    w.row_ptr.push_back(static_cast<int64_t>(w.values.size()));
  }
  w.scale.assign(sc, sc + rows);
  if (bias != nullptr) {
    const float* b = static_cast<const float*>(bias->data);
    w.bias.assign(b, b + rows);
  } else {
    w.bias.assign(static_cast<size_t>(rows), 0.0f);
  }
  *out = std::move(w);
  return "";
}

}  // namespace smp
