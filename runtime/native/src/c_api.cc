// Plain C entry points for Python (ctypes): the kernel without onnxruntime, ISA queries and
// ABI diagnostics. Used by tests and benchmarks; onnxruntime only uses RegisterCustomOps.
#include <cstring>
#include <exception>
#include <string>

#include "attention.h"
#include "custom_op.h"
#include "int8_matrix.h"
#include "kernel_int8.h"
#include "kernel.h"
#include "ort_abi.h"
#include "sparse_matrix.h"

namespace {

void put_error(const std::string& msg, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  std::strncpy(err, msg.c_str(), err_len - 1);
  err[err_len - 1] = '\0';
}

smp::TensorView view(const void* data, int dtype, const int64_t* dims, int32_t rank) {
  smp::TensorView v;
  v.data = data;
  v.dtype = dtype;
  if (dims != nullptr && rank > 0) v.dims.assign(dims, dims + rank);
  return v;
}

}  // namespace

extern "C" {

// One array as onnxruntime would hand it over: data, ONNX dtype, dims.
struct SmpArray {
  const void* data;
  int32_t dtype;
  int32_t rank;
  const int64_t* dims;
};

// One sparse weight: its CSR/BSR arrays (bias.data null: no bias) and shape attributes.
struct SmpWeight {
  SmpArray crow, col, values, bias;
  const int64_t* shape;
  int32_t shape_len;
  const int64_t* block;
  int32_t block_len;
};

}  // extern "C"

namespace {

// chunk_cols <= 0: the default chunking.
std::string pack_weight(const SmpWeight* w, int64_t chunk_cols, smp::PackedMatrix* out) {
  if (w == nullptr) return "weight missing";
  std::vector<int64_t> s(w->shape, w->shape + (w->shape_len > 0 ? w->shape_len : 0));
  std::vector<int64_t> b(w->block, w->block + (w->block_len > 0 ? w->block_len : 0));
  int64_t rows = 0, cols = 0, bh = 1, bw = 1;
  std::string msg = smp::check_attributes(s, b, &rows, &cols, &bh, &bw);
  if (!msg.empty()) return msg;
  auto v = [](const SmpArray& a) { return view(a.data, a.dtype, a.dims, a.rank); };
  const smp::TensorView bias = v(w->bias);
  return smp::pack_matrix(rows, cols, bh, bw, v(w->crow), v(w->col), v(w->values),
                          w->bias.data != nullptr || w->bias.rank > 0 ? &bias : nullptr,
                          chunk_cols > 0 ? chunk_cols : smp::default_chunk_cols(cols, bw), out);
}

// The checks both kernel entries make of their scalar arguments.
std::string check_call(int64_t m, int32_t activation) {
  if (m < 0) return "m must be >= 0";
  if (activation != smp::kActivationNone && activation != smp::kActivationGelu)
    return "activation must be 0 (none) or 1 (gelu)";
  return "";
}

// The LayerNorm arguments (gamma null: none): beta with gamma, both finite, epsilon in [0, 1].
std::string check_layer_norm_args(int64_t rows, const float* gamma, const float* beta, float eps) {
  if (gamma == nullptr) return "";
  if (beta == nullptr) return "ln_beta is required with ln_gamma";
  std::string msg = smp::check_finite(gamma, rows, "ln_gamma");
  if (msg.empty()) msg = smp::check_finite(beta, rows, "ln_beta");
  if (msg.empty() && (!(eps >= 0.0f) || eps > 1.0f)) msg = "ln_epsilon must be in [0, 1]";
  return msg;
}

}  // namespace

extern "C" {

// ai.smp.SparseFFN without onnxruntime: y[m, w2 rows] = LN(act(x W1^T + b1) W2^T + b2 +
// residual); residual and ln_gamma/ln_beta may be null. Returns 0, or 1 with a message.
SMP_EXPORT int smp_sparse_ffn(const float* x, int64_t m, const SmpWeight* w1, const SmpWeight* w2, float* y,
                              int32_t threads, int32_t isa, int32_t activation, const float* residual,
                              const float* ln_gamma, const float* ln_beta, float ln_epsilon, char* err,
                              size_t err_len) {
  try {
    smp::PackedMatrix p1, p2;
    std::string msg = pack_weight(w1, 0, &p1);
    if (!msg.empty()) msg = "weight 1: " + msg;
    if (msg.empty()) {
      msg = pack_weight(w2, 0, &p2);
      if (!msg.empty()) msg = "weight 2: " + msg;
    }
    if (msg.empty()) msg = check_call(m, activation);
    if (msg.empty()) msg = check_layer_norm_args(p2.rows, ln_gamma, ln_beta, ln_epsilon);
    if (msg.empty()) {
      smp::ThreadRunner runner(threads);
      smp::FfnOptions options;
      options.activation = activation;
      options.residual = residual;
      options.ln_gamma = ln_gamma;
      options.ln_beta = ln_beta;
      options.ln_epsilon = ln_epsilon;
      msg = smp::sparse_ffn(p1, p2, x, m, y, static_cast<smp::Isa>(isa), runner, options);
    }
    if (msg.empty()) return 0;
    put_error(msg, err, err_len);
  } catch (const std::exception& e) {
    put_error(e.what(), err, err_len);
  }
  return 1;
}

// Validates and runs y[m, shape[0]] = act(x[m, shape[1]] W^T + bias) (+ residual, shaped
// like y), then LayerNorm over each row when ln_gamma / ln_beta ([rows]) are given. Each
// array comes with its dtype (ONNX numbering) and dims, exactly as an onnxruntime tensor would. Returns 0, or 1 with a message in err. isa: -1 auto, 0 portable,
// 1 avx2. threads: >= 1. activation: 0 none, 1 gelu.
SMP_EXPORT int smp_sparse_linear(const float* x, int64_t m, const void* crow, int32_t crow_dtype,
                                 const int64_t* crow_dims, int32_t crow_rank, const void* col, int32_t col_dtype,
                                 const int64_t* col_dims, int32_t col_rank, const void* values,
                                 int32_t values_dtype, const int64_t* values_dims, int32_t values_rank,
                                 const void* bias, int32_t bias_dtype, const int64_t* bias_dims, int32_t bias_rank,
                                 const int64_t* shape, int32_t shape_len, const int64_t* block, int32_t block_len,
                                 float* y, int32_t threads, int32_t isa, int64_t chunk_cols, int32_t activation,
                                 const float* residual, const float* ln_gamma, const float* ln_beta,
                                 float ln_epsilon, char* err, size_t err_len) {
  try {
    const SmpWeight weight{{crow, crow_dtype, crow_rank, crow_dims},
                           {col, col_dtype, col_rank, col_dims},
                           {values, values_dtype, values_rank, values_dims},
                           {bias, bias_dtype, bias_rank, bias_dims},
                           shape, shape_len, block, block_len};
    smp::PackedMatrix packed;
    std::string msg = pack_weight(&weight, chunk_cols, &packed);
    if (msg.empty()) msg = check_call(m, activation);
    if (msg.empty()) {
      smp::ThreadRunner runner(threads);
      smp::Epilogue epilogue;
      epilogue.activation = activation;
      epilogue.residual = residual;
      epilogue.ln_gamma = ln_gamma;
      epilogue.ln_beta = ln_gamma != nullptr ? ln_beta : nullptr;
      epilogue.ln_epsilon = ln_epsilon;
      msg = check_layer_norm_args(packed.rows, ln_gamma, ln_beta, ln_epsilon);
      if (msg.empty()) msg = smp::sparse_linear(packed, x, m, y, static_cast<smp::Isa>(isa), runner, epilogue);
    }
    if (msg.empty()) return 0;
    put_error(msg, err, err_len);
  } catch (const std::exception& e) {
    put_error(e.what(), err, err_len);
  }
  return 1;
}

// ai.smp.Attention without onnxruntime: q, k, v, out [batch, seq, heads * head_dim]; or, with
// packed = 1, q [batch, seq, 3 * heads * head_dim] holding all three (k and v ignored). mask
// [batch, seq] of mask_dtype 6 (int32) / 7 (int64), or null. Returns 0, or 1 with a message.
SMP_EXPORT int smp_attention(const float* q, const float* k, const float* v, const void* mask, int32_t mask_dtype,
                             int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, int32_t packed, float* out,
                             int32_t threads, int32_t isa, char* err, size_t err_len) {
  try {
    const std::vector<int64_t> dims{batch, seq, heads * head_dim}, mask_dims{batch, seq};
    const std::vector<int64_t> packed_dims{batch, seq, 3 * heads * head_dim};
    const std::vector<int64_t>* m = mask != nullptr ? &mask_dims : nullptr;
    smp::AttentionShape shape;
    std::string msg = packed ? smp::check_packed_attention(packed_dims, m, heads, head_dim, &shape)
                             : smp::check_attention(dims, dims, dims, m, heads, head_dim, &shape);
    if (msg.empty()) {
      if (packed) {
        k = q + heads * head_dim;
        v = q + 2 * heads * head_dim;
      }
      smp::ThreadRunner runner(threads);
      msg = smp::attention(shape, q, k, v, mask, mask_dtype, out, static_cast<smp::Isa>(isa), runner);
    }
    if (msg.empty()) return 0;
    put_error(msg, err, err_len);
  } catch (const std::exception& e) {
    put_error(e.what(), err, err_len);
  }
  return 1;
}

// The ISA a request resolves to on this machine (0 portable, 1 avx2, 2 avx512).
SMP_EXPORT int smp_resolve_isa(int32_t requested) {
  return static_cast<int>(smp::resolve_isa(static_cast<smp::Isa>(requested)));
}

// The onnxruntime C API version the library asks for.
SMP_EXPORT uint32_t smp_ort_api_version() { return smp::ort::kApiVersion; }

// Slot numbers of the OrtApi entries the library calls; returns how many.
SMP_EXPORT int smp_abi_slots(int32_t* out, int32_t capacity) {
  for (int i = 0; i < smp::ort::kNumUsedSlots && i < capacity; ++i) out[i] = smp::ort::kUsedSlots[i];
  return smp::ort::kNumUsedSlots;
}

// How often each of those slots was called so far, in the same order.
SMP_EXPORT int smp_abi_call_counts(int64_t* out, int32_t capacity) {
  for (int i = 0; i < smp::ort::kNumUsedSlots && i < capacity; ++i)
    out[i] = smp::ort::slot_call_counts()[smp::ort::kUsedSlots[i]].load();
  return smp::ort::kNumUsedSlots;
}

// Exercises the status and domain entries against a real OrtApiBase: creates a status and
// reads its message back, creates and releases a domain. 0 if all behaved.
SMP_EXPORT int smp_abi_selftest(const smp::ort::ApiBase* base, char* err, size_t err_len) {
  const void* table = base != nullptr ? base->GetApi(smp::ort::kApiVersion) : nullptr;
  if (table == nullptr) {
    put_error("GetApi returned no table for the required version", err, err_len);
    return 1;
  }
  smp::ort::Api api(table);
  smp::ort::Status* s = api.CreateStatus(smp::ort::kInvalidArgument, "smp-probe");
  const bool message_ok = s != nullptr && std::strcmp(api.GetErrorMessage(s), "smp-probe") == 0;
  api.ReleaseStatus(s);
  if (!message_ok) {
    put_error("CreateStatus/GetErrorMessage round trip failed", err, err_len);
    return 1;
  }
  smp::ort::Domain* domain = nullptr;
  if (smp::ort::Status* st = api.CreateCustomOpDomain("ai.smp.selftest", &domain)) {
    put_error(api.GetErrorMessage(st), err, err_len);
    api.ReleaseStatus(st);
    return 1;
  }
  api.ReleaseCustomOpDomain(domain);
  return 0;
}

// y[m, rows] = act(dequant(q8(x[m, cols]) W^T) + bias) (+ residual [m, rows]) with W int8 CSR
// (crow int64 [rows + 1], col int64 [nnz], values int8 [nnz]) and per-row scales (kernel_int8.h).
// bias / residual may be null. path: -1 auto, 0 portable, 1 avx2, 2 avx-vnni, 3 avx512-vnni.
// Returns 0, or 1 with a message in err.
SMP_EXPORT int smp_int8_linear(const float* x, int64_t m, int64_t rows, int64_t cols, const int64_t* crow,
                               const int64_t* col, const int8_t* values, const float* scale, const float* bias,
                               const float* residual, float* y, int32_t threads, int32_t path, int32_t activation,
                               char* err, size_t err_len) {
  try {
    std::string msg = check_call(m, activation);
    smp::Int8Csr w;
    if (msg.empty() && (rows < 0 || crow == nullptr)) msg = "crow missing";
    if (msg.empty()) {
      const int64_t n = crow[rows];
      const int64_t crow_dims[1] = {rows + 1}, n_dims[1] = {n < 0 ? 0 : n}, r_dims[1] = {rows};
      const smp::TensorView b = view(bias, smp::kDTypeFloat, r_dims, 1);
      msg = smp::pack_int8_csr(rows, cols, view(crow, smp::kDTypeInt64, crow_dims, 1),
                               view(col, smp::kDTypeInt64, n_dims, 1), view(values, smp::kDTypeInt8, n_dims, 1),
                               view(scale, smp::kDTypeFloat, r_dims, 1), bias != nullptr ? &b : nullptr, &w);
    }
    if (msg.empty() && path < -1) msg = "path must be -1 (auto) .. 3";
    if (msg.empty()) {
      smp::ThreadRunner runner(threads);
      smp::Epilogue epilogue;
      epilogue.activation = activation;
      epilogue.residual = residual;
      msg = smp::int8_linear(w, x, m, y, static_cast<smp::Int8Path>(path > 3 ? 3 : path), runner, epilogue);
    }
    if (msg.empty()) return 0;
    put_error(msg, err, err_len);
  } catch (const std::exception& e) {
    put_error(e.what(), err, err_len);
  }
  return 1;
}

// The int8 path that `requested` resolves to on this CPU (numbers as in smp_int8_linear).
SMP_EXPORT int smp_int8_resolve_path(int32_t requested) {
  return static_cast<int>(smp::resolve_int8_path(static_cast<smp::Int8Path>(requested < -1 || requested > 3 ? -1 : requested)));
}

}  // extern "C"
