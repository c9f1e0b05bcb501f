#include "sparse_matrix.h"

#include <cmath>
#include <cstdlib>
#include <string>

namespace smp {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

const char* dtype_name(int dtype) {
  switch (dtype) {
    case kDTypeFloat: return "float32";
    case kDTypeInt32: return "int32";
    case kDTypeInt64: return "int64";
    default: return "an unsupported type";
  }
}

int64_t index_at(const TensorView& t, int64_t i) {
  return t.dtype == kDTypeInt32 ? static_cast<const int32_t*>(t.data)[i]
                                : static_cast<const int64_t*>(t.data)[i];
}

std::string check_vector(const TensorView& t, const char* name, int64_t* length) {
  if (t.dims.size() != 1) return std::string(name) + " must be 1-D, got rank " + str(t.dims.size());
  if (t.dims[0] < 0 || t.dims[0] > kMaxDim) return std::string(name) + " has an invalid length";
  if (t.dims[0] > 0 && t.data == nullptr) return std::string(name) + " has no data";
  *length = t.dims[0];
  return "";
}

std::string check_indices(const TensorView& crow, const TensorView& col, int64_t block_rows,
                          int64_t block_cols, int64_t* nnz) {
  for (const TensorView* t : {&crow, &col}) {
    if (t->dtype != kDTypeInt32 && t->dtype != kDTypeInt64)
      return std::string(t == &crow ? "crow_indices" : "col_indices") + " must be int32 or int64, got " +
             dtype_name(t->dtype);
  }
  if (crow.dtype != col.dtype) return "crow_indices and col_indices must have the same dtype";
  int64_t n_crow = 0, n_col = 0;
  std::string err = check_vector(crow, "crow_indices", &n_crow);
  if (err.empty()) err = check_vector(col, "col_indices", &n_col);
  if (!err.empty()) return err;
  if (n_crow != block_rows + 1)
    return "crow_indices has " + str(n_crow) + " entries, expected rows + 1 = " + str(block_rows + 1);
  if (index_at(crow, 0) != 0) return "crow_indices must start at 0, starts at " + str(index_at(crow, 0));
  if (index_at(crow, block_rows) != n_col)
    return "crow_indices must end at nnz = " + str(n_col) + ", ends at " + str(index_at(crow, block_rows));
  for (int64_t r = 0; r < block_rows; ++r) {
    const int64_t begin = index_at(crow, r), end = index_at(crow, r + 1);
    if (end < begin) return "crow_indices decreases at row " + str(r);
    if (end > n_col) return "crow_indices out of range at row " + str(r);
    int64_t previous = -1;
    for (int64_t e = begin; e < end; ++e) {
      const int64_t c = index_at(col, e);
      if (c < 0 || c >= block_cols)
        return "col_indices out of range [0, " + str(block_cols) + ") in row " + str(r) + ": " + str(c);
      if (c <= previous) return "col_indices not strictly increasing in row " + str(r);
      previous = c;
    }
  }
  *nnz = n_col;
  return "";
}

std::string check_values(const TensorView& values, int64_t nnz, int64_t bh, int64_t bw) {
  if (values.dtype != kDTypeFloat) return std::string("values must be float32, got ") + dtype_name(values.dtype);
  const bool csr = bh == 1 && bw == 1;
  std::vector<int64_t> want = csr ? std::vector<int64_t>{nnz} : std::vector<int64_t>{nnz, bh, bw};
  if (values.dims != want) {
    std::string got, exp;
    for (int64_t d : values.dims) got += (got.empty() ? "" : ", ") + str(d);
    for (int64_t d : want) exp += (exp.empty() ? "" : ", ") + str(d);
    return "values has shape [" + got + "], expected [" + exp + "]";
  }
  if (nnz > 0 && values.data == nullptr) return "values has no data";
  return "";
}

void fill(const TensorView& crow, const TensorView& col, const float* values, int64_t nbr, PackedMatrix* p) {
  const int64_t bsize = p->bh * p->bw, cbc = p->chunk_cols / p->bw, stride = nbr + 1;
  p->row_ptr.assign(static_cast<size_t>(p->num_chunks * stride), 0);
  for (int64_t r = 0; r < nbr; ++r)
    for (int64_t e = index_at(crow, r); e < index_at(crow, r + 1); ++e)
      ++p->row_ptr[(index_at(col, e) / cbc) * stride + r + 1];
  int64_t running = 0;
  for (int64_t c = 0; c < p->num_chunks; ++c) {
    p->row_ptr[c * stride] = running;
    for (int64_t r = 0; r < nbr; ++r) {
      running += p->row_ptr[c * stride + r + 1];
      p->row_ptr[c * stride + r + 1] = running;
    }
  }
  std::vector<int64_t> cursor(p->row_ptr);
  p->col_off.resize(static_cast<size_t>(p->nnz_blocks));
  p->values.resize(static_cast<size_t>(p->nnz_blocks * bsize));
  for (int64_t r = 0; r < nbr; ++r) {
    for (int64_t e = index_at(crow, r); e < index_at(crow, r + 1); ++e) {
      const int64_t bc = index_at(col, e), c = bc / cbc;
      const int64_t slot = cursor[c * stride + r]++;
      p->col_off[slot] = static_cast<int32_t>((bc - c * cbc) * p->bw * kTile);
      for (int64_t i = 0; i < bsize; ++i) p->values[slot * bsize + i] = values[e * bsize + i];
    }
  }
}

// Packed row pointers: num_chunks * (block_rows + 1) entries. Column chunking alone would let a
// shape claim (65,536 x 8,388,608, say) cost gigabytes while the arrays hold kilobytes, so the
// chunks are widened until the row pointers need at most this many entries per index entry the
// model really stores (crow_indices + col_indices), plus a small slack. Chunk width only sets
// the cache blocking: the sums, and so the results, are the same.
constexpr int64_t kRowPtrPerIndex = 4;
constexpr int64_t kRowPtrSlack = int64_t(1) << 16;

int64_t bounded_chunk_cols(int64_t cols, int64_t bw, int64_t block_rows, int64_t index_entries, int64_t chunk_cols) {
  const int64_t stride = block_rows + 1;
  const int64_t budget = kRowPtrPerIndex * index_entries + kRowPtrSlack;
  const int64_t chunks = (cols + chunk_cols - 1) / chunk_cols;
  if (chunks <= budget / stride) return chunk_cols;
  const int64_t max_chunks = budget / stride > 1 ? budget / stride : 1;
  int64_t wider = (cols + max_chunks - 1) / max_chunks;
  wider = (wider + bw - 1) / bw * bw;
  return wider < kMaxChunkCols ? wider : kMaxChunkCols / bw * bw;
}

}  // namespace

std::string check_finite(const float* values, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      const char* what = std::isnan(values[i]) ? "nan" : (values[i] > 0 ? "inf" : "-inf");
      return std::string(name) + " holds a non-finite value (" + what + ") at entry " + str(i) +
             "; weights must be finite";
    }
  }
  return "";
}

std::string check_attributes(const std::vector<int64_t>& shape, const std::vector<int64_t>& block,
                             int64_t* rows, int64_t* cols, int64_t* bh, int64_t* bw) {
  if (shape.size() != 2) return "attribute shape must hold 2 values [out, in], got " + str(shape.size());
  if (shape[0] < 0 || shape[1] < 0 || shape[0] > kMaxDim || shape[1] > kMaxDim)
    return "attribute shape [" + str(shape[0]) + ", " + str(shape[1]) + "] is out of range";
  if (block.size() != 2) return "attribute block_shape must hold 2 values, got " + str(block.size());
  if (block[0] < 1 || block[1] < 1 || block[0] > 256 || block[1] > 256)
    return "attribute block_shape values must be in [1, 256]";
  if (shape[0] % block[0] || shape[1] % block[1]) return "block_shape does not divide shape";
  *rows = shape[0];
  *cols = shape[1];
  *bh = block[0];
  *bw = block[1];
  return "";
}

int64_t default_chunk_cols(int64_t cols, int64_t bw) {
  int64_t chunk = 1024;  // X^T chunk of 128 KiB: L2-resident; finer L1 chunks measured slower
  if (const char* env = std::getenv("SMP_SPARSE_KCHUNK")) chunk = std::atoll(env);
  if (chunk <= 0 || chunk > cols) chunk = cols;
  if (chunk > kMaxChunkCols) chunk = kMaxChunkCols;
  chunk = (chunk + bw - 1) / bw * bw;
  return chunk > 0 ? chunk : bw;
}

std::string pack_matrix(int64_t rows, int64_t cols, int64_t bh, int64_t bw, const TensorView& crow,
                        const TensorView& col, const TensorView& values, const TensorView* bias,
                        int64_t chunk_cols, PackedMatrix* out) {
  const int64_t nbr = rows / bh, nbc = cols / bw;
  int64_t nnz = 0;
  std::string err = check_indices(crow, col, nbr, nbc, &nnz);
  if (err.empty()) err = check_values(values, nnz, bh, bw);
  if (err.empty()) err = check_finite(static_cast<const float*>(values.data), nnz * bh * bw, "values");
  if (!err.empty()) return err;
  PackedMatrix p;
  if (bias != nullptr) {
    if (bias->dtype != kDTypeFloat) return std::string("bias must be float32, got ") + dtype_name(bias->dtype);
    int64_t n = 0;
    err = check_vector(*bias, "bias", &n);
    if (!err.empty()) return err;
    if (n != rows) return "bias has " + str(n) + " entries, expected " + str(rows);
    const float* b = static_cast<const float*>(bias->data);
    err = check_finite(b, n, "bias");
    if (!err.empty()) return err;
    p.bias.assign(b, b + n);
  } else {
    p.bias.assign(static_cast<size_t>(rows), 0.0f);
  }
  p.rows = rows;
  p.cols = cols;
  p.bh = bh;
  p.bw = bw;
  if (chunk_cols > kMaxChunkCols) chunk_cols = kMaxChunkCols;
  p.chunk_cols = chunk_cols < bw ? bw : chunk_cols / bw * bw;
  if (cols > 0) p.chunk_cols = bounded_chunk_cols(cols, bw, nbr, nbr + 1 + nnz, p.chunk_cols);
  p.num_chunks = cols == 0 ? 0 : (cols + p.chunk_cols - 1) / p.chunk_cols;
  p.nnz_blocks = nnz;
  if (p.num_chunks > 0) fill(crow, col, static_cast<const float*>(values.data), nbr, &p);
  *out = std::move(p);
  return "";
}

}  // namespace smp
