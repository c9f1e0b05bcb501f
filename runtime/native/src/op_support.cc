// Helpers shared by the custom operators (op_support.h).
#include "op_support.h"

#include <cstring>
#include <string>
#include <vector>

#include "custom_op.h"

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

// ---------------------------------------------------------------- weights, inputs, outputs

namespace {

// Inputs first..first+n-1 that are constant initializers, as views; constant[i] says which.
std::string constant_views(const Api& api, const ort::KernelInfo* info, size_t first, size_t n, TensorView* views,
                           bool* constant) {
  for (size_t i = 0; i < n; ++i) {
    int is_constant = 0;
    const ort::Value* value = nullptr;
    std::string err = take_error(api, api.KernelInfoGetConstantInputTensor(info, first + i, &is_constant, &value));
    if (!err.empty()) return err;
    constant[i] = is_constant != 0 && value != nullptr;
    if (constant[i]) {
      err = view_of(api, value, &views[i]);
      if (!err.empty()) return err;
    }
  }
  return "";
}

}  // namespace

std::string constant_inputs(const Api& api, const ort::KernelInfo* info, size_t first, size_t n, TensorView* views,
                            bool* constant) {
  return constant_views(api, info, first, n, views, constant);
}

std::string read_weight_shape(const Api& api, const ort::KernelInfo* info, const char* shape_attr,
                              const char* block_attr, WeightSlot* slot) {
  std::vector<int64_t> shape, block{1, 1};
  bool present = false;
  std::string err = read_ints(api, info, shape_attr, &shape, &present);
  if (!err.empty()) return std::string("attribute ") + shape_attr + ": " + err;
  if (!present) return std::string("attribute ") + shape_attr + " (ints [out, in]) is required";
  err = read_ints(api, info, block_attr, &block, &present);
  if (!err.empty()) return std::string("attribute ") + block_attr + ": " + err;
  if (!present) block = {1, 1};
  err = check_attributes(shape, block, &slot->rows, &slot->cols, &slot->bh, &slot->bw);
  if (!err.empty()) return *slot->name ? std::string(shape_attr) + " / " + block_attr + ": " + err : err;
  return "";
}

std::string pack_constant_weights(const Api& api, const ort::KernelInfo* info, WeightSlot* slot) {
  TensorView views[4];
  bool constant[4] = {false, false, false, false};
  std::string err = constant_views(api, info, slot->first_input, 4, views, constant);
  if (!err.empty()) return err;
  if (!(constant[0] && constant[1] && constant[2])) return "";  // validated on every call instead
  slot->bias_constant = constant[3];
  err = pack_matrix(slot->rows, slot->cols, slot->bh, slot->bw, views[0], views[1], views[2],
                    constant[3] ? &views[3] : nullptr, default_chunk_cols(slot->cols, slot->bw), &slot->packed);
  if (!err.empty()) return slot->label() + err;
  slot->prepacked = true;
  return "";
}

std::string declared_features(const Api& api, const ort::KernelInfo* info, bool output, size_t index,
                              int64_t* features) {
  *features = -1;
  ort::TypeInfo* type = nullptr;
  std::string err = take_error(api, api.KernelInfoGetTypeInfo(info, output, index, &type));
  if (!err.empty() || type == nullptr) return err;
  const ort::TypeShape* tensor = nullptr;  // owned by `type`
  err = take_error(api, api.CastTypeInfoToTensorInfo(type, &tensor));
  size_t rank = 0;
  if (err.empty() && tensor != nullptr) err = take_error(api, api.GetDimensionsCount(tensor, &rank));
  std::vector<int64_t> dims(rank);
  if (err.empty() && rank > 0) err = take_error(api, api.GetDimensions(tensor, dims.data(), rank));
  api.ReleaseTypeInfo(type);
  if (err.empty() && rank > 0 && dims.back() > 0) *features = dims.back();
  return err;
}

std::string check_graph_features(const Api& api, const ort::KernelInfo* info, size_t x_index, int64_t cols,
                                 int64_t rows) {
  int64_t features = -1;
  std::string err = declared_features(api, info, false, x_index, &features);
  if (!err.empty()) return "reading the declared shape of input X: " + err;
  if (features >= 0 && features != cols)
    return "the graph feeds input X with " + std::to_string(features) + " features, the weight's shape claims " +
           std::to_string(cols) + " inputs";
  err = declared_features(api, info, true, 0, &features);
  if (!err.empty()) return "reading the declared shape of output Y: " + err;
  if (features >= 0 && features != rows)
    return "the graph declares output Y with " + std::to_string(features) + " features, the weight's shape claims " +
           std::to_string(rows) + " outputs";
  return "";
}

std::string call_weights(const Api& api, ort::KernelContext* ctx, size_t count, const WeightSlot& slot,
                         PackedMatrix* per_call, const PackedMatrix** out) {
  bool bias_here = false;
  if (slot.prepacked && count > slot.first_input + 3) {
    const ort::Value* b = nullptr;
    std::string err = take_error(api, api.KernelContextGetInput(ctx, slot.first_input + 3, &b));
    if (!err.empty()) return err;
    bias_here = b != nullptr;
  }
  if (slot.prepacked && bias_here == slot.bias_constant) {
    *out = &slot.packed;
    return "";
  }
  TensorView views[4];
  bool present[4] = {false, false, false, false};
  std::string err;
  for (size_t i = 0; i < 4 && err.empty(); ++i)
    err = input_view(api, ctx, slot.first_input + i, count, &views[i], &present[i]);
  if (err.empty() && !(present[0] && present[1] && present[2]))
    err = "crow_indices, col_indices and values are required";
  if (err.empty())
    err = pack_matrix(slot.rows, slot.cols, slot.bh, slot.bw, views[0], views[1], views[2],
                      present[3] ? &views[3] : nullptr, default_chunk_cols(slot.cols, slot.bw), per_call);
  if (!err.empty()) return slot.label() + err;
  *out = per_call;
  return "";
}

std::string read_activation(const Api& api, const ort::KernelInfo* info, int* activation) {
  std::string name;
  std::string err = read_string(api, info, "activation", &name);
  if (!err.empty()) return "attribute activation " + err;
  if (name == "gelu") {
    *activation = kActivationGelu;
  } else if (name.empty()) {
    *activation = kActivationNone;
  } else {
    return "attribute activation must be \"\" or \"gelu\", got \"" + name + "\"";
  }
  return "";
}

std::string input_x(const Api& api, const ort::KernelContext* ctx, size_t count, size_t index, int64_t cols,
                    TensorView* x, int64_t* m) {
  bool present = false;
  std::string err = input_view(api, ctx, index, count, x, &present);
  if (!err.empty()) return err;
  if (!present) return "input X is missing";
  if (x->dtype != kDTypeFloat) return "input X must be float32";
  if (x->dims.empty()) return "input X must have rank >= 1";
  if (x->dims.back() != cols)
    return "input X has " + std::to_string(x->dims.back()) + " features, the weight expects " + std::to_string(cols);
  int64_t total = 1;
  for (size_t i = 0; i + 1 < x->dims.size(); ++i) {
    if (x->dims[i] < 0 || (x->dims[i] > 0 && total > (int64_t(1) << 40) / x->dims[i])) return "input X is too large";
    total *= x->dims[i];
  }
  if (total > 0 && x->data == nullptr) return "input X has no data";
  *m = total;
  return "";
}

namespace {

// gamma, beta [rows] and epsilon [1], all float32 and finite, or none of them.
std::string check_layer_norm(const TensorView* v, const bool* present, int64_t rows, Epilogue* e) {
  if (!present[0] && !present[1] && !present[2]) return "";
  if (!(present[0] && present[1] && present[2])) return "ln_gamma, ln_beta and ln_epsilon go together";
  const char* names[2] = {"ln_gamma", "ln_beta"};
  for (size_t i = 0; i < 2; ++i) {
    if (v[i].dtype != kDTypeFloat || v[i].dims != std::vector<int64_t>{rows} || (rows > 0 && v[i].data == nullptr))
      return "ln_gamma and ln_beta must be float32 [" + std::to_string(rows) + "]";
    std::string err = check_finite(static_cast<const float*>(v[i].data), rows, names[i]);
    if (!err.empty()) return err;
  }
  if (v[2].dtype != kDTypeFloat || v[2].dims != std::vector<int64_t>{1} || v[2].data == nullptr)
    return "ln_epsilon must be float32 [1]";
  const float eps = *static_cast<const float*>(v[2].data);
  if (!(eps >= 0.0f) || eps > 1.0f) return "ln_epsilon must be in [0, 1]";
  e->ln_gamma = static_cast<const float*>(v[0].data);
  e->ln_beta = static_cast<const float*>(v[1].data);
  e->ln_epsilon = eps;
  return "";
}

}  // namespace

std::string layer_norm_inputs(const Api& api, ort::KernelContext* ctx, size_t count, size_t first, int64_t rows,
                              Epilogue* e) {
  TensorView v[3];
  bool present[3] = {false, false, false};
  for (size_t i = 0; i < 3; ++i) {
    std::string err = input_view(api, ctx, first + i, count, &v[i], &present[i]);
    if (!err.empty()) return err;
  }
  return check_layer_norm(v, present, rows, e);
}

std::string check_constant_layer_norm(const Api& api, const ort::KernelInfo* info, size_t first, int64_t rows) {
  TensorView v[3];
  bool constant[3] = {false, false, false};
  std::string err = constant_views(api, info, first, 3, v, constant);
  if (!err.empty()) return err;
  if (!(constant[0] && constant[1] && constant[2])) return "";  // checked on every call
  Epilogue unused;
  return check_layer_norm(v, constant, rows, &unused);
}

std::string residual_input(const Api& api, ort::KernelContext* ctx, size_t count, size_t index,
                           const std::vector<int64_t>& out_dims, const float** residual) {
  TensorView view;
  bool present = false;
  std::string err = input_view(api, ctx, index, count, &view, &present);
  if (!err.empty() || !present) return err;
  if (view.dtype != kDTypeFloat || view.dims != out_dims) return "residual must be float32 shaped like Y";
  int64_t elements = 1;
  for (int64_t d : out_dims) elements *= d;
  if (elements > 0 && view.data == nullptr) return "residual has no data";
  *residual = static_cast<const float*>(view.data);
  return "";
}

std::string output_data(const Api& api, ort::KernelContext* ctx, const std::vector<int64_t>& dims, float** y) {
  ort::Value* out = nullptr;
  std::string err = take_error(api, api.KernelContextGetOutput(ctx, 0, dims.data(), dims.size(), &out));
  void* data = nullptr;
  if (err.empty()) err = take_error(api, api.GetTensorMutableData(out, &data));
  *y = static_cast<float*>(data);
  return err;
}

std::string ffn_output(const Api& api, ort::KernelContext* ctx, size_t count, const TensorView& x, int64_t rows,
                       size_t residual_index, size_t ln_first, FfnOptions* options, float** y) {
  Epilogue ln;
  std::string err = layer_norm_inputs(api, ctx, count, ln_first, rows, &ln);
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = rows;
  if (err.empty()) err = residual_input(api, ctx, count, residual_index, out_dims, &options->residual);
  if (err.empty()) err = output_data(api, ctx, out_dims, y);
  options->ln_gamma = ln.ln_gamma;
  options->ln_beta = ln.ln_beta;
  options->ln_epsilon = ln.ln_epsilon;
  return err;
}

}  // namespace smp
