#include "int8_matrix.h"

#include <cmath>
#include <cstdlib>

namespace smp {
namespace {

std::string check_view(const TensorView& v, int dtype, int64_t n, const char* name) {
  if (v.data == nullptr && n > 0) return std::string(name) + " is missing";
  if (v.dtype != dtype) return std::string(name) + " has the wrong element type";
  if (v.dims.size() != 1 || v.dims[0] != n)
    return std::string(name) + " must be 1-D of length " + std::to_string(n);
  return "";
}

// nnz from crow, then crow monotone from 0 to nnz.
std::string check_crow(const int64_t* crow, int64_t rows) {
  if (crow[0] != 0) return "crow must start at 0";
  for (int64_t r = 0; r < rows; ++r)
    if (crow[r + 1] < crow[r]) return "crow decreases at row " + std::to_string(r);
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
  const int64_t* cp = static_cast<const int64_t*>(crow.data);
  msg = check_crow(cp, rows);
  if (!msg.empty()) return msg;
  const int64_t nnz = cp[rows];
  if (nnz > rows * cols) return "crow claims more entries than rows x cols";
  if (msg.empty()) msg = check_view(col, kDTypeInt64, nnz, "col");
  if (msg.empty()) msg = check_view(values, kDTypeInt8, nnz, "values");
  if (msg.empty()) msg = check_view(scale, kDTypeFloat, rows, "scale");
  if (msg.empty() && bias != nullptr) msg = check_view(*bias, kDTypeFloat, rows, "bias");
  if (!msg.empty()) return msg;
  const int64_t* cc = static_cast<const int64_t*>(col.data);
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
    for (int64_t e = cp[r]; e < cp[r + 1]; ++e) {
      if (cc[e] < 0 || cc[e] >= cols) return "col holds " + std::to_string(cc[e]) + " at entry " + std::to_string(e) +
                                             ", outside [0, " + std::to_string(cols) + ")";
      if (e > cp[r] && cc[e] <= cc[e - 1]) return "col is not strictly increasing in row " + std::to_string(r);
      if (vq[e] == -128) return "values holds -128 at entry " + std::to_string(e) + " (symmetric int8 is [-127, 127])";
      w.col_off.push_back(static_cast<int32_t>(cc[e] * kTile));
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
