// Helpers shared by the custom operators: onnxruntime statuses, tensor views, attributes,
// the thread pool, and an OrtCustomOp with the callbacks every ai.smp op has in common.
#pragma once

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "kernel.h"
#include "ort_abi.h"
#include "sparse_matrix.h"

namespace smp {

// "" if `s` is null (success); else its message, and `s` is released.
std::string take_error(const ort::Api& api, ort::Status* s);
std::string view_of(const ort::Api& api, const ort::Value* value, TensorView* out);
// The int64 list attribute `name`; *present = false (and "" returned) when it is absent.
std::string read_ints(const ort::Api& api, const ort::KernelInfo* info, const char* name, std::vector<int64_t>* out,
                      bool* present);
std::string read_string(const ort::Api& api, const ort::KernelInfo* info, const char* name, std::string* value);
std::string node_name(const ort::Api& api, const ort::KernelInfo* info);
// Input `index` of `count` as a view; *present = false when it is absent (optional inputs).
std::string input_view(const ort::Api& api, const ort::KernelContext* ctx, size_t index, size_t count,
                       TensorView* out, bool* present);

// Runs tasks on onnxruntime's intra-op pool (KernelContext_ParallelFor).
class OrtRunner : public Runner {
 public:
  OrtRunner(const ort::Api& api, const ort::KernelContext* ctx) : api_(api), ctx_(ctx) {}
  std::string parallel_for(size_t n, void (*fn)(void*, size_t), void* data) override;

 private:
  const ort::Api& api_;
  const ort::KernelContext* ctx_;
};

// One sparse weight of an op: crow_indices, col_indices, values, bias at inputs first_input
// + 0..3; packed once at creation when the first three are constant initializers.
struct WeightSlot {
  size_t first_input = 1;
  const char* name = "";  // "" for an op's only weight, else how errors name it
  int64_t rows = 0, cols = 0, bh = 1, bw = 1;
  bool prepacked = false, bias_constant = false;
  PackedMatrix packed;
  std::string label() const { return *name ? std::string(name) + ": " : std::string(); }
};
// Inputs first .. first + n - 1 that are constant initializers, as views (constant[i] set).
std::string constant_inputs(const ort::Api& api, const ort::KernelInfo* info, size_t first, size_t n,
                            TensorView* views, bool* constant);
// Reads and checks the shape / block-shape attributes into the slot (nothing allocated).
std::string read_weight_shape(const ort::Api& api, const ort::KernelInfo* info, const char* shape_attr,
                              const char* block_attr, WeightSlot* slot);
// Packs the arrays once when they are constant initializers (after read_weight_shape).
std::string pack_constant_weights(const ort::Api& api, const ort::KernelInfo* info, WeightSlot* slot);
// The last dimension the graph declares for input (or output) `index`: -1 when the graph
// states no fixed one (no shape, rank 0, or a symbolic dimension).
std::string declared_features(const ort::Api& api, const ort::KernelInfo* info, bool output, size_t index,
                              int64_t* features);
// At creation: the graph's declared X features (input x_index) must be `cols` and its declared
// output features `rows`, where the graph states them; a claim the model cannot feed is an error
// before anything is packed.
std::string check_graph_features(const ort::Api& api, const ort::KernelInfo* info, size_t x_index, int64_t cols,
                                 int64_t rows);
// At creation: the LayerNorm inputs at first..first+2 that are constant initializers pass the
// same checks as on every call (shapes, finite values, epsilon in range).
std::string check_constant_layer_norm(const ort::Api& api, const ort::KernelInfo* info, size_t first, int64_t rows);
// The packed weight of this call: the prepacked one, or the inputs validated and packed
// into *per_call (inputs that are not constant, or a bias present unlike at creation).
std::string call_weights(const ort::Api& api, ort::KernelContext* ctx, size_t count, const WeightSlot& slot,
                         PackedMatrix* per_call, const PackedMatrix** out);
// The attribute activation ("" or "gelu") as kActivation*.
std::string read_activation(const ort::Api& api, const ort::KernelInfo* info, int* activation);
// Input `index`: float32 [..., cols]; *m = product of the leading dims.
std::string input_x(const ort::Api& api, const ort::KernelContext* ctx, size_t count, size_t index, int64_t cols,
                    TensorView* x, int64_t* m);
// The optional LayerNorm inputs gamma, beta [rows] and epsilon [1] (float32) at first..first+2,
// all or none, into e.
std::string layer_norm_inputs(const ort::Api& api, ort::KernelContext* ctx, size_t count, size_t first, int64_t rows,
                              Epilogue* e);
// The optional residual input `index`: float32 shaped like Y (out_dims); *residual stays null
// when it is absent.
std::string residual_input(const ort::Api& api, ort::KernelContext* ctx, size_t count, size_t index,
                           const std::vector<int64_t>& out_dims, const float** residual);
// A feed-forward op's output: the optional residual (input residual_index, shaped like Y) and
// LayerNorm inputs (ln_first..ln_first+2) into *options, and output 0 shaped like x with
// `rows` features.
std::string ffn_output(const ort::Api& api, ort::KernelContext* ctx, size_t count, const TensorView& x, int64_t rows,
                       size_t residual_index, size_t ln_first, FfnOptions* options, float** y);
// Output 0 with dims, and its data.
std::string output_data(const ort::Api& api, ort::KernelContext* ctx, const std::vector<int64_t>& dims, float** y);

// CPU provider, one float output, default memory, version 1; name, inputs and kernel unset.
ort::CustomOp base_op();

// CreateKernelV2 / KernelComputeV2 / KernelDestroy for a kernel type K with members `api`
// and `where()` ("ai.smp.<Op> node '<name>': "): Init(K*, info) and Compute(K*, ctx) return ""
// or an error, which (like any exception) becomes an INVALID_ARGUMENT status naming the node.
template <class K, std::string (*Init)(K*, const ort::KernelInfo*)>
ort::Status* create_kernel(const ort::CustomOp*, const void* table, const ort::KernelInfo* info, void** kernel) {
  ort::Api api(table);
  std::unique_ptr<K> k;
  std::string err;
  try {
    k.reset(new K(table));
    err = Init(k.get(), info);
  } catch (const std::exception& e) {
    err = std::string("cannot create the kernel: ") + e.what();
  }
  if (!err.empty()) {
    const std::string where = k ? k->where() : std::string("ai.smp: ");
    return api.CreateStatus(ort::kInvalidArgument, (where + err).c_str());
  }
  *kernel = k.release();
  return nullptr;
}

template <class K, std::string (*Compute)(K*, ort::KernelContext*)>
ort::Status* compute_kernel(void* kernel, ort::KernelContext* ctx) {
  K* k = static_cast<K*>(kernel);
  std::string err;
  try {
    err = Compute(k, ctx);
  } catch (const std::exception& e) {
    err = e.what();
  }
  if (err.empty()) return nullptr;
  return k->api.CreateStatus(ort::kInvalidArgument, (k->where() + err).c_str());
}

template <class K>
void destroy_kernel(void* kernel) {
  delete static_cast<K*>(kernel);
}

// The OrtCustomOp of kernel type K: base_op() plus its name and inputs, created by Init and
// run by Compute (see create_kernel / compute_kernel).
template <class K, std::string (*Init)(K*, const ort::KernelInfo*), std::string (*Compute)(K*, ort::KernelContext*)>
ort::CustomOp kernel_op(const char* (*name)(const ort::CustomOp*), int (*input_type)(const ort::CustomOp*, size_t),
                        size_t (*input_count)(const ort::CustomOp*),
                        int (*input_characteristic)(const ort::CustomOp*, size_t)) {
  ort::CustomOp op = base_op();
  op.GetName = name;
  op.GetInputType = input_type;
  op.GetInputTypeCount = input_count;
  op.GetInputCharacteristic = input_characteristic;
  op.KernelDestroy = destroy_kernel<K>;
  op.CreateKernelV2 = create_kernel<K, Init>;
  op.KernelComputeV2 = compute_kernel<K, Compute>;
  return op;
}

}  // namespace smp
