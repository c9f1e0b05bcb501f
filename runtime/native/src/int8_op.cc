// The onnxruntime custom operator ai.smp.SparseLinearInt8.
//
// Y = SparseLinearInt8(X, crow_indices, col_indices, values, scale[, bias][, residual]) computes
// act(dequant(q8(X) Wq^T) + bias) + residual (kernel_int8.h): W [shape[0], shape[1]] in int8 CSR
// (crow int64 [rows + 1], col int64 [nnz], values int8 [nnz]) with one float scale per output
// row; X quantized per token inside the op. Attributes: shape (required), activation ("" or
// "gelu"). The arrays are untrusted: validated and packed once at creation when crow, col,
// values, scale (and bias, if given) are constant initializers, else on every call.
#include <string>
#include <vector>

#include "custom_op.h"
#include "int8_matrix.h"
#include "kernel_int8.h"
#include "op_support.h"
#include "ort_abi.h"

namespace smp {

using ort::Api;

namespace {

constexpr size_t kInputX = 0, kInputCrow = 1, kInputBias = 5, kInputResidual = 6, kInputCount = 7;
constexpr size_t kWeightInputs = 5;  // crow, col, values, scale, bias

struct Kernel {
  explicit Kernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  int64_t rows = 0, cols = 0;
  bool prepacked = false, bias_constant = false;
  Int8Csr packed;
  Epilogue epilogue;

  std::string where() const { return "ai.smp.SparseLinearInt8 node '" + node + "': "; }
};

std::string read_shape(Kernel* k, const ort::KernelInfo* info) {
  std::vector<int64_t> shape;
  bool present = false;
  std::string err = read_ints(k->api, info, "shape", &shape, &present);
  if (!err.empty()) return err;
  if (!present || shape.size() != 2 || shape[0] < 0 || shape[1] < 0 || shape[0] > kMaxDim ||
      shape[1] > kMaxInt8Cols)
    return "attribute shape must be [rows, cols] with rows in [0, " + std::to_string(kMaxDim) + "] and cols in [0, " +
           std::to_string(kMaxInt8Cols) + "]";
  k->rows = shape[0];
  k->cols = shape[1];
  return "";
}

std::string pack(const Kernel& k, TensorView* views, bool with_bias, Int8Csr* out) {
  return pack_int8_csr(k.rows, k.cols, views[0], views[1], views[2], views[3], with_bias ? &views[4] : nullptr, out);
}

std::string init_kernel(Kernel* k, const ort::KernelInfo* info) {
  k->node = node_name(k->api, info);
  std::string err = read_shape(k, info);
  if (err.empty()) err = check_graph_features(k->api, info, kInputX, k->cols, k->rows);
  if (err.empty()) err = read_activation(k->api, info, &k->epilogue.activation);
  TensorView views[kWeightInputs];
  bool constant[kWeightInputs] = {false, false, false, false, false};
  if (err.empty()) err = constant_inputs(k->api, info, kInputCrow, kWeightInputs, views, constant);
  if (!err.empty() || !(constant[0] && constant[1] && constant[2] && constant[3])) return err;
  k->bias_constant = constant[4];
  err = pack(*k, views, constant[4], &k->packed);
  k->prepacked = err.empty();
  return err;
}

// The packed weight of this call: the one packed at creation, or this call's inputs.
std::string call_weights(const Kernel& k, ort::KernelContext* ctx, size_t count, Int8Csr* per_call,
                         const Int8Csr** out) {
  TensorView views[kWeightInputs];
  bool present[kWeightInputs] = {false, false, false, false, false};
  std::string err;
  for (size_t i = 0; i < kWeightInputs && err.empty(); ++i)
    err = input_view(k.api, ctx, kInputCrow + i, count, &views[i], &present[i]);
  if (!err.empty()) return err;
  if (k.prepacked && present[4] == k.bias_constant) {
    *out = &k.packed;
    return "";
  }
  if (!(present[0] && present[1] && present[2] && present[3]))
    return "crow_indices, col_indices, values and scale are required";
  err = pack(k, views, present[4], per_call);
  *out = per_call;
  return err;
}

std::string compute(Kernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  TensorView x;
  int64_t m = 0;
  if (err.empty()) err = input_x(api, ctx, count, kInputX, k->cols, &x, &m);
  Int8Csr per_call;
  const Int8Csr* w = nullptr;
  if (err.empty()) err = call_weights(*k, ctx, count, &per_call, &w);
  if (!err.empty()) return err;
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = k->rows;
  Epilogue epilogue = k->epilogue;
  err = residual_input(api, ctx, count, kInputResidual, out_dims, &epilogue.residual);
  float* y = nullptr;
  if (err.empty()) err = output_data(api, ctx, out_dims, &y);
  if (!err.empty() || m == 0) return err;
  OrtRunner runner(api, ctx);
  return int8_linear(*w, static_cast<const float*>(x.data), m, y, Int8Path::kAuto, runner, epilogue);
}

const char* op_name(const ort::CustomOp*) { return "SparseLinearInt8"; }
int input_type(const ort::CustomOp*, size_t i) { return i == kInputX ? ort::kFloat : ort::kUndefined; }
size_t input_count(const ort::CustomOp*) { return kInputCount; }
int input_characteristic(const ort::CustomOp*, size_t i) { return i >= kInputBias ? ort::kOptional : ort::kRequired; }

const ort::CustomOp kOp = kernel_op<Kernel, init_kernel, compute>(op_name, input_type, input_count, input_characteristic);

}  // namespace

const ort::CustomOp* int8_linear_op() { return &kOp; }

}  // namespace smp
