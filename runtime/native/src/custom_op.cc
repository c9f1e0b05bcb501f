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
namespace ort {

std::atomic<int64_t>* slot_call_counts() {
  static std::atomic<int64_t> counts[kKernelContextParallelFor + 1];
  return counts;
}

}  // namespace ort

using ort::Api;

// "" if `s` is null (success); else its message, and `s` is released.
std::string take_error(const Api& api, ort::Status* s) {
  if (s == nullptr) return "";
  std::string msg = api.GetErrorMessage(s);
  api.ReleaseStatus(s);
  return msg.empty() ? "onnxruntime call failed" : msg;
}

std::string view_of(const Api& api, const ort::Value* value, TensorView* out) {
  ort::TypeShape* info = nullptr;
  std::string err = take_error(api, api.GetTensorTypeAndShape(value, &info));
  if (!err.empty()) return err;
  size_t rank = 0;
  int dtype = 0;
  err = take_error(api, api.GetTensorElementType(info, &dtype));
  if (err.empty()) err = take_error(api, api.GetDimensionsCount(info, &rank));
  std::vector<int64_t> dims(rank);
  if (err.empty() && rank > 0) err = take_error(api, api.GetDimensions(info, dims.data(), rank));
  api.ReleaseTypeShape(info);
  if (!err.empty()) return err;
  void* data = nullptr;
  err = take_error(api, api.GetTensorMutableData(const_cast<ort::Value*>(value), &data));
  out->data = data;
  out->dtype = dtype;
  out->dims = std::move(dims);
  return err;
}

// The int64 list attribute `name`; *present = false (and "" returned) when it is absent.
std::string read_ints(const Api& api, const ort::KernelInfo* info, const char* name, std::vector<int64_t>* out,
                      bool* present) {
  size_t size = 0;
  std::string err = take_error(api, api.KernelInfoGetAttributeArrayInt64(info, name, nullptr, &size));
  if (!err.empty()) {
    // Absent is fine (the caller decides); present with another type is an error.
    *present = false;
    return err.find("No attribute") != std::string::npos ? "" : "must be a list of ints (" + err + ")";
  }
  *present = true;
  out->assign(size, 0);
  if (size == 0) return "";
  return take_error(api, api.KernelInfoGetAttributeArrayInt64(info, name, out->data(), &size));
}

// The string attribute `name` into *value ("" when absent); an error if it is not a string.
std::string read_string(const Api& api, const ort::KernelInfo* info, const char* name, std::string* value) {
  size_t size = 0;
  value->clear();
  std::string err = take_error(api, api.KernelInfoGetAttributeString(info, name, nullptr, &size));
  if (!err.empty()) return err.find("No attribute") != std::string::npos ? "" : "must be a string (" + err + ")";
  if (size == 0) return "";
  value->assign(size, '\0');
  err = take_error(api, api.KernelInfoGetAttributeString(info, name, &(*value)[0], &size));
  value->resize(std::strlen(value->c_str()));
  return err;
}

std::string node_name(const Api& api, const ort::KernelInfo* info) {
  size_t size = 0;
  ort::Status* s = api.KernelInfoGetNodeName(info, nullptr, &size);
  if (s != nullptr || size == 0) {
    if (s != nullptr) api.ReleaseStatus(s);
    return "";
  }
  std::string name(size, '\0');
  if (!take_error(api, api.KernelInfoGetNodeName(info, &name[0], &size)).empty()) return "";
  name.resize(std::strlen(name.c_str()));
  return name;
}

std::string OrtRunner::parallel_for(size_t n, void (*fn)(void*, size_t), void* data) {
  return take_error(api_, api_.KernelContextParallelFor(ctx_, fn, n, 0, data));
}

std::string input_view(const Api& api, const ort::KernelContext* ctx, size_t index, size_t count,
                       TensorView* out, bool* present) {
  *present = false;
  if (index >= count) return "";
  const ort::Value* value = nullptr;
  std::string err = take_error(api, api.KernelContextGetInput(ctx, index, &value));
  if (!err.empty() || value == nullptr) return err;
  *present = true;
  return view_of(api, value, out);
}

namespace {

const char* op_provider(const ort::CustomOp*) { return nullptr; }  // CPU
int output_type(const ort::CustomOp*, size_t) { return ort::kFloat; }
size_t output_count(const ort::CustomOp*) { return 1; }
int output_characteristic(const ort::CustomOp*, size_t) { return ort::kRequired; }
int input_memory_type(const ort::CustomOp*, size_t) { return 0; }  // OrtMemTypeDefault
int variadic_min_arity(const ort::CustomOp*) { return 1; }
int variadic_homogeneity(const ort::CustomOp*) { return 1; }
int start_version(const ort::CustomOp*) { return 1; }

}  // namespace

ort::CustomOp base_op() {
  ort::CustomOp op;
  std::memset(&op, 0, sizeof(op));
  op.version = ort::kApiVersion;
  op.GetExecutionProviderType = op_provider;
  op.GetOutputType = output_type;
  op.GetOutputTypeCount = output_count;
  op.GetOutputCharacteristic = output_characteristic;
  op.GetInputMemoryType = input_memory_type;
  op.GetVariadicInputMinArity = variadic_min_arity;
  op.GetVariadicInputHomogeneity = variadic_homogeneity;
  op.GetVariadicOutputMinArity = variadic_min_arity;
  op.GetVariadicOutputHomogeneity = variadic_homogeneity;
  op.GetStartVersion = start_version;
  return op;
}

namespace {

constexpr size_t kInputX = 0, kInputCrow = 1, kInputCol = 2, kInputValues = 3, kInputBias = 4, kInputResidual = 5,
                 kInputLnGamma = 6, kInputLnBeta = 7, kInputLnEpsilon = 8, kInputCount = 9;

// The optional LayerNorm epilogue: gamma, beta [rows] and epsilon [1] (float32), all or none.
std::string layer_norm_inputs(const Api& api, ort::KernelContext* ctx, size_t count, int64_t rows, Epilogue* e) {
  TensorView v[3];
  bool present[3] = {false, false, false};
  for (size_t i = 0; i < 3; ++i) {
    std::string err = input_view(api, ctx, kInputLnGamma + i, count, &v[i], &present[i]);
    if (!err.empty()) return err;
  }
  if (!present[0] && !present[1] && !present[2]) return "";
  if (!(present[0] && present[1] && present[2])) return "ln_gamma, ln_beta and ln_epsilon go together";
  for (size_t i = 0; i < 2; ++i)
    if (v[i].dtype != kDTypeFloat || v[i].dims != std::vector<int64_t>{rows} || (rows > 0 && v[i].data == nullptr))
      return "ln_gamma and ln_beta must be float32 [" + std::to_string(rows) + "]";
  if (v[2].dtype != kDTypeFloat || v[2].dims != std::vector<int64_t>{1} || v[2].data == nullptr)
    return "ln_epsilon must be float32 [1]";
  const float eps = *static_cast<const float*>(v[2].data);
  if (!(eps >= 0.0f) || eps > 1.0f) return "ln_epsilon must be in [0, 1]";
  e->ln_gamma = static_cast<const float*>(v[0].data);
  e->ln_beta = static_cast<const float*>(v[1].data);
  e->ln_epsilon = eps;
  return "";
}

struct Kernel {
  explicit Kernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  int64_t rows = 0, cols = 0, bh = 1, bw = 1;
  Epilogue epilogue;
  bool prepacked = false, bias_constant = false;
  PackedMatrix packed;

  std::string where() const { return "ai.smp.SparseLinear node '" + node + "': "; }
};

// Packs the weight arrays of `inputs` (views of inputs 1..4; bias may be null).
std::string pack_from(const Kernel& k, const TensorView views[3], const TensorView* bias, PackedMatrix* out) {
  return pack_matrix(k.rows, k.cols, k.bh, k.bw, views[0], views[1], views[2], bias,
                     default_chunk_cols(k.cols, k.bw), out);
}

// At creation: attributes, then the weight arrays if they are constant initializers.
std::string init_kernel(Kernel* k, const ort::KernelInfo* info) {
  const Api& api = k->api;
  k->node = node_name(api, info);
  std::vector<int64_t> shape, block{1, 1};
  bool present = false;
  std::string err = read_ints(api, info, "shape", &shape, &present);
  if (!err.empty()) return "attribute shape: " + err;
  if (!present) return "attribute shape (ints [out, in]) is required";
  err = read_ints(api, info, "block_shape", &block, &present);
  if (!err.empty()) return "attribute block_shape: " + err;
  if (!present) block = {1, 1};
  err = check_attributes(shape, block, &k->rows, &k->cols, &k->bh, &k->bw);
  if (!err.empty()) return err;
  std::string activation;
  err = read_string(api, info, "activation", &activation);
  if (!err.empty()) return "attribute activation " + err;
  if (activation == "gelu") {
    k->epilogue.activation = kActivationGelu;
  } else if (!activation.empty()) {
    return "attribute activation must be \"\" or \"gelu\", got \"" + activation + "\"";
  }
  TensorView views[4];
  bool constant[4] = {false, false, false, false};
  for (size_t i = 0; i < 4; ++i) {
    int is_constant = 0;
    const ort::Value* value = nullptr;
    err = take_error(api, api.KernelInfoGetConstantInputTensor(info, kInputCrow + i, &is_constant, &value));
    if (!err.empty()) return err;
    constant[i] = is_constant != 0 && value != nullptr;
    if (constant[i]) {
      err = view_of(api, value, &views[i]);
      if (!err.empty()) return err;
    }
  }
  if (!(constant[0] && constant[1] && constant[2])) return "";  // validated on every call instead
  k->bias_constant = constant[3];
  err = pack_from(*k, views, constant[3] ? &views[3] : nullptr, &k->packed);
  if (!err.empty()) return err;
  k->prepacked = true;
  return "";
}

std::string check_x(const TensorView& x, int64_t cols, int64_t* m) {
  if (x.dtype != kDTypeFloat) return "input X must be float32";
  if (x.dims.empty()) return "input X must have rank >= 1";
  if (x.dims.back() != cols)
    return "input X has " + std::to_string(x.dims.back()) + " features, the weight expects " + std::to_string(cols);
  int64_t total = 1;
  for (size_t i = 0; i + 1 < x.dims.size(); ++i) {
    if (x.dims[i] < 0 || (x.dims[i] > 0 && total > (int64_t(1) << 40) / x.dims[i])) return "input X is too large";
    total *= x.dims[i];
  }
  if (total > 0 && x.data == nullptr) return "input X has no data";
  *m = total;
  return "";
}

std::string compute(Kernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  if (!err.empty()) return err;
  TensorView x, views[4];
  bool present[5] = {false, false, false, false, false};
  err = input_view(api, ctx, kInputX, count, &x, &present[0]);
  if (err.empty() && !present[0]) err = "input X is missing";
  int64_t m = 0;
  if (err.empty()) err = check_x(x, k->cols, &m);
  if (!err.empty()) return err;
  PackedMatrix per_call;
  const PackedMatrix* w = &k->packed;
  bool bias_here = false;
  if (k->prepacked && count > kInputBias) {
    const ort::Value* b = nullptr;
    err = take_error(api, api.KernelContextGetInput(ctx, kInputBias, &b));
    if (!err.empty()) return err;
    bias_here = b != nullptr;
  }
  if (!k->prepacked || bias_here != k->bias_constant) {
    for (size_t i = 0; i < 4 && err.empty(); ++i) err = input_view(api, ctx, kInputCrow + i, count, &views[i], &present[i + 1]);
    if (err.empty() && !(present[1] && present[2] && present[3])) err = "crow_indices, col_indices and values are required";
    if (err.empty()) err = pack_from(*k, views, present[4] ? &views[3] : nullptr, &per_call);
    if (!err.empty()) return err;
    w = &per_call;
  }
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = k->rows;
  Epilogue epilogue = k->epilogue;
  TensorView residual;
  bool has_residual = false;
  err = input_view(api, ctx, kInputResidual, count, &residual, &has_residual);
  if (!err.empty()) return err;
  if (has_residual) {
    if (residual.dtype != kDTypeFloat || residual.dims != out_dims) return "residual must be float32 shaped like Y";
    if (m > 0 && k->rows > 0 && residual.data == nullptr) return "residual has no data";
    epilogue.residual = static_cast<const float*>(residual.data);
  }
  err = layer_norm_inputs(api, ctx, count, k->rows, &epilogue);
  if (!err.empty()) return err;
  ort::Value* out = nullptr;
  err = take_error(api, api.KernelContextGetOutput(ctx, 0, out_dims.data(), out_dims.size(), &out));
  void* y = nullptr;
  if (err.empty()) err = take_error(api, api.GetTensorMutableData(out, &y));
  if (!err.empty() || m == 0) return err;
  OrtRunner runner(api, ctx);
  return sparse_linear(*w, static_cast<const float*>(x.data), m, static_cast<float*>(y), Isa::kAuto, runner,
                       epilogue);
}

// ---------------------------------------------------------------- OrtCustomOp callbacks

const char* op_name(const ort::CustomOp*) { return kOpType; }
int input_type(const ort::CustomOp*, size_t i) { return i == kInputX ? ort::kFloat : ort::kUndefined; }
size_t input_count(const ort::CustomOp*) { return kInputCount; }
int input_characteristic(const ort::CustomOp*, size_t i) { return i >= kInputBias ? ort::kOptional : ort::kRequired; }

ort::CustomOp make_op() {
  ort::CustomOp op = base_op();
  op.GetName = op_name;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetInputCharacteristic = input_characteristic;
  op.KernelDestroy = destroy_kernel<Kernel>;
  op.CreateKernelV2 = create_kernel<Kernel, init_kernel>;
  op.KernelComputeV2 = compute_kernel<Kernel, compute>;
  return op;
}

const ort::CustomOp kSparseLinear = make_op();

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
    for (const ort::CustomOp* op : {&kSparseLinear, attention_op()}) {
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
