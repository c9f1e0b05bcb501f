// The onnxruntime custom operator ai.smp.SparseFFN: a transformer feed-forward block.
//
// Y = SparseFFN(X, crow1, col1, values1[, bias1], crow2, col2, values2[, bias2][, residual]
//               [, ln_gamma, ln_beta, ln_epsilon]; shape1, block_shape1, shape2, block_shape2,
//               activation)
//   = LN(act(X W1^T + bias1) W2^T + bias2 (+ residual, shaped like Y))
// W1 [shape1] = [inner, hidden], W2 [shape2] = [out, inner], each CSR or BSR as in
// ai.smp.SparseLinear (same arrays, same validation). It computes exactly what two chained
// SparseLinear nodes compute, without writing the [.., inner] activations out (ffn.cc).
#include <string>
#include <vector>

#include "custom_op.h"
#include "kernel.h"
#include "op_support.h"

namespace smp {
namespace {

using ort::Api;

constexpr size_t kInputX = 0, kInputW1 = 1, kInputW2 = 5, kInputResidual = 9, kInputLnGamma = 10,
                 kInputCount = 13;

struct FfnKernel {
  explicit FfnKernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  WeightSlot w1, w2;
  FfnOptions options;
  std::string where() const { return std::string("ai.smp.SparseFFN node '") + node + "': "; }
};

std::string init(FfnKernel* k, const ort::KernelInfo* info) {
  const Api& api = k->api;
  k->node = node_name(api, info);
  k->w1.first_input = kInputW1;
  k->w1.name = "weight 1";
  k->w2.first_input = kInputW2;
  k->w2.name = "weight 2";
  std::string err = read_weight_shape(api, info, "shape1", "block_shape1", &k->w1);
  if (err.empty()) err = read_weight_shape(api, info, "shape2", "block_shape2", &k->w2);
  if (err.empty() && k->w2.cols != k->w1.rows)
    err = "shape2 takes " + std::to_string(k->w2.cols) + " inputs, shape1 gives " + std::to_string(k->w1.rows);
  if (err.empty()) err = check_graph_features(api, info, kInputX, k->w1.cols, k->w2.rows);
  if (err.empty()) err = check_constant_layer_norm(api, info, kInputLnGamma, k->w2.rows);
  if (err.empty()) err = pack_constant_weights(api, info, &k->w1);
  if (err.empty()) err = pack_constant_weights(api, info, &k->w2);
  if (err.empty()) err = read_activation(api, info, &k->options.activation);
  return err;
}

std::string compute(FfnKernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  TensorView x;
  int64_t m = 0;
  if (err.empty()) err = input_x(api, ctx, count, kInputX, k->w1.cols, &x, &m);
  PackedMatrix call1, call2;
  const PackedMatrix *w1 = nullptr, *w2 = nullptr;
  if (err.empty()) err = call_weights(api, ctx, count, k->w1, &call1, &w1);
  if (err.empty()) err = call_weights(api, ctx, count, k->w2, &call2, &w2);
  FfnOptions options = k->options;
  float* y = nullptr;
  if (err.empty()) err = ffn_output(api, ctx, count, x, k->w2.rows, kInputResidual, kInputLnGamma, &options, &y);
  if (!err.empty() || m == 0) return err;
  OrtRunner runner(api, ctx);
  return sparse_ffn(*w1, *w2, static_cast<const float*>(x.data), m, y, Isa::kAuto, runner, options);
}

const char* op_name(const ort::CustomOp*) { return kFfnOpType; }
int input_type(const ort::CustomOp*, size_t i) { return i == kInputX ? ort::kFloat : ort::kUndefined; }
size_t input_count(const ort::CustomOp*) { return kInputCount; }
int input_characteristic(const ort::CustomOp*, size_t i) {
  const bool required = i == kInputX || (i >= kInputW1 && i < kInputW1 + 3) || (i >= kInputW2 && i < kInputW2 + 3);
  return required ? ort::kRequired : ort::kOptional;
}

}  // namespace

const ort::CustomOp* ffn_op() {
  static const ort::CustomOp op =
      kernel_op<FfnKernel, init, compute>(op_name, input_type, input_count, input_characteristic);
  return &op;
}

}  // namespace smp
