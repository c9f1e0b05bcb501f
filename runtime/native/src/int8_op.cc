// The onnxruntime custom operator ai.smp.SparseLinearInt8.
//
// Y = SparseLinearInt8(X, crow_indices, col_indices, values, scale[, bias][, residual][, ln_gamma,
// ln_beta, ln_epsilon]) computes act(dequant(q8(X) Wq^T) + bias) + residual (kernel_int8.h), then,
// with the three ln_ inputs, a LayerNormalization over the last axis: W [shape[0], shape[1]] in
// int8 CSR (crow [rows + 1], col [nnz] int32 or int64, values int8 [nnz]) with one float scale per
// output row; X quantized per token inside the op. Attributes: shape (required), activation (""
// or "gelu"). The arrays are untrusted: validated and packed once at creation when crow, col,
// values, scale (and bias, if given) are constant initializers, else on every call.
#include <string>
#include <vector>

#include "custom_op.h"
#include "int8_op_support.h"
#include "kernel_int8.h"
#include "op_support.h"
#include "ort_abi.h"

namespace smp {

using ort::Api;

namespace {

constexpr size_t kInputX = 0, kInputCrow = 1, kInputBias = 5, kInputResidual = 6, kInputLnGamma = 7,
                 kInputCount = 10;

struct Kernel {
  explicit Kernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  Int8Slot weights;
  Epilogue epilogue;

  std::string where() const { return "ai.smp.SparseLinearInt8 node '" + node + "': "; }
};

std::string init_kernel(Kernel* k, const ort::KernelInfo* info) {
  k->node = node_name(k->api, info);
  k->weights.first_input = kInputCrow;
  const Int8Slot& w = k->weights;
  std::string err = read_int8_shape(k->api, info, "shape", &k->weights);
  if (err.empty()) err = check_graph_features(k->api, info, kInputX, w.cols, w.rows);
  if (err.empty()) err = read_activation(k->api, info, &k->epilogue.activation);
  if (err.empty()) err = check_constant_layer_norm(k->api, info, kInputLnGamma, w.rows);
  if (err.empty()) err = pack_constant_int8(k->api, info, &k->weights);
  return err;
}

std::string compute(Kernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  TensorView x;
  int64_t m = 0;
  if (err.empty()) err = input_x(api, ctx, count, kInputX, k->weights.cols, &x, &m);
  Int8Csr per_call;
  const Int8Csr* w = nullptr;
  if (err.empty()) err = call_int8_weights(api, ctx, count, k->weights, &per_call, &w);
  if (!err.empty()) return err;
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = k->weights.rows;
  Epilogue epilogue = k->epilogue;
  err = residual_input(api, ctx, count, kInputResidual, out_dims, &epilogue.residual);
  if (err.empty()) err = layer_norm_inputs(api, ctx, count, kInputLnGamma, k->weights.rows, &epilogue);
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
