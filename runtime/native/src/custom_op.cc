// The onnxruntime custom operator ai.smp.SparseLinear and RegisterCustomOps.
//
// Y = SparseLinear(X, crow_indices, col_indices, values[, bias][, residual][, ln_gamma, ln_beta,
// ln_epsilon]) computes act(X W^T + bias) + residual with W [shape[0], shape[1]] stored in CSR
// (block_shape [1, 1], values [nnz]) or BSR (values [nnz_blocks, bh, bw]); act is the attribute
// activation ("" or "gelu", the exact erf form); then, with the three ln_ inputs, a
// LayerNormalization over the last axis. The arrays are untrusted: they are validated when the
// kernel is created (constant initializers, packed once) or on every call (other inputs).
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "custom_op.h"
#include "kernel.h"
#include "op_support.h"
#include "ort_abi.h"
#include "sparse_matrix.h"

namespace smp {

using ort::Api;

namespace {

constexpr size_t kInputX = 0, kInputCrow = 1, kInputBias = 4, kInputResidual = 5, kInputLnGamma = 6,
                 kInputCount = 9;

struct Kernel {
  explicit Kernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  WeightSlot weights;
  Epilogue epilogue;

  std::string where() const { return "ai.smp.SparseLinear node '" + node + "': "; }
};

// At creation: attributes, checked against the shapes the graph declares, then the LayerNorm
// and weight arrays if they are constant initializers.
std::string init_kernel(Kernel* k, const ort::KernelInfo* info) {
  k->node = node_name(k->api, info);
  k->weights.first_input = kInputCrow;
  const WeightSlot& w = k->weights;
  std::string err = read_weight_shape(k->api, info, "shape", "block_shape", &k->weights);
  if (err.empty()) err = check_graph_features(k->api, info, kInputX, w.cols, w.rows);
  if (err.empty()) err = check_constant_layer_norm(k->api, info, kInputLnGamma, w.rows);
  if (err.empty()) err = pack_constant_weights(k->api, info, &k->weights);
  if (err.empty()) err = read_activation(k->api, info, &k->epilogue.activation);
  return err;
}

std::string compute(Kernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  TensorView x;
  int64_t m = 0;
  if (err.empty()) err = input_x(api, ctx, count, kInputX, k->weights.cols, &x, &m);
  PackedMatrix per_call;
  const PackedMatrix* w = nullptr;
  if (err.empty()) err = call_weights(api, ctx, count, k->weights, &per_call, &w);
  if (!err.empty()) return err;
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = k->weights.rows;
  Epilogue epilogue = k->epilogue;
  err = residual_input(api, ctx, count, kInputResidual, out_dims, &epilogue.residual);
  if (!err.empty()) return err;
  err = layer_norm_inputs(api, ctx, count, kInputLnGamma, k->weights.rows, &epilogue);
  float* y = nullptr;
  if (err.empty()) err = output_data(api, ctx, out_dims, &y);
  if (!err.empty() || m == 0) return err;
  OrtRunner runner(api, ctx);
  return sparse_linear(*w, static_cast<const float*>(x.data), m, y, Isa::kAuto, runner, epilogue);
}

// ---------------------------------------------------------------- OrtCustomOp callbacks

const char* op_name(const ort::CustomOp*) { return kOpType; }
int input_type(const ort::CustomOp*, size_t i) { return i == kInputX ? ort::kFloat : ort::kUndefined; }
size_t input_count(const ort::CustomOp*) { return kInputCount; }
int input_characteristic(const ort::CustomOp*, size_t i) { return i >= kInputBias ? ort::kOptional : ort::kRequired; }

const ort::CustomOp kSparseLinear =
    kernel_op<Kernel, init_kernel, compute>(op_name, input_type, input_count, input_characteristic);

}  // namespace

ort::Status* register_ops(ort::SessionOptions* options, const ort::ApiBase* base) {
  if (base == nullptr || base->GetApi == nullptr) return nullptr;  // nothing to report through
  const void* table = base->GetApi(ort::kApiVersion);
  if (table == nullptr) {
    const void* oldest = base->GetApi(1);
    if (oldest == nullptr) return nullptr;
    const char* version = base->GetVersionString ? base->GetVersionString() : "unknown";
    const std::string msg = std::string("the ai.smp sparse kernels need onnxruntime C API version ") +
                            std::to_string(ort::kApiVersion) + " (onnxruntime >= 1.17); this onnxruntime is " +
                            (version ? version : "unknown");
    return Api(oldest).CreateStatus(ort::kFail, msg.c_str());
  }
  Api api(table);
  // One domain for the process, shared by every session: onnxruntime only reads it.
  static std::mutex mutex;
  static ort::Domain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (domain == nullptr) {
    ort::Domain* fresh = nullptr;
    if (ort::Status* s = api.CreateCustomOpDomain(kDomain, &fresh)) return s;
    for (const ort::CustomOp* op : {&kSparseLinear, attention_op(), ffn_op(), int8_linear_op(), ffn_int8_op()}) {
      if (ort::Status* s = api.CustomOpDomainAdd(fresh, op)) {
        api.ReleaseCustomOpDomain(fresh);
        return s;
      }
    }
    domain = fresh;
  }
  return api.AddCustomOpDomain(options, domain);
}

}  // namespace smp

extern "C" SMP_EXPORT smp::ort::Status* RegisterCustomOps(smp::ort::SessionOptions* options,
                                                          const smp::ort::ApiBase* base) {
  try {
    return smp::register_ops(options, base);
  } catch (const std::exception&) {
    return nullptr;
  }
}
