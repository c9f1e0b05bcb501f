// The onnxruntime custom operator ai.smp.Attention.
//
// Y = Attention(query, key, value[, mask]; shape = [num_heads, head_dim]) is BERT's
// self-attention core on the projected [batch, seq, num_heads * head_dim] tensors (see
// attention.h); mask is the [batch, seq] int32/int64 attention mask (0 = padding).
// Y = Attention(qkv, , [, mask]) (key and value absent) reads all three from one
// [batch, seq, 3 * num_heads * head_dim] tensor, e.g. one SparseLinear of the stacked weights.
// Attribute precision: "" / "fp32" (default), or "int8": Q, K, V and the softmax weights
// quantized inside the op (attention_int8.cc), softmax itself in float.
#include <string>
#include <vector>

#include "attention.h"
#include "custom_op.h"
#include "op_support.h"

namespace smp {
namespace {

using ort::Api;

struct AttentionKernel {
  explicit AttentionKernel(const void* table) : api(table) {}
  Api api;
  std::string node;
  int64_t heads = 0, head_dim = 0;
  bool int8 = false;
  std::string where() const { return std::string("ai.smp.Attention node '") + node + "': "; }
};

std::string init(AttentionKernel* k, const ort::KernelInfo* info) {
  k->node = node_name(k->api, info);
  std::vector<int64_t> shape;
  bool present = false;
  std::string err = read_ints(k->api, info, "shape", &shape, &present);
  if (!err.empty()) return "attribute shape: " + err;
  if (!present || shape.size() != 2 || shape[0] < 1 || shape[1] < 1 || shape[0] > kMaxDim || shape[1] > kMaxDim)
    return "attribute shape (ints [num_heads, head_dim], both in [1, 2^24]) is required";
  k->heads = shape[0];
  k->head_dim = shape[1];
  std::string precision;
  err = read_string(k->api, info, "precision", &precision);
  if (!err.empty()) return "attribute precision " + err;
  if (precision != "" && precision != "fp32" && precision != "int8")
    return "attribute precision must be \"fp32\" or \"int8\", got \"" + precision + "\"";
  k->int8 = precision == "int8";
  int64_t features = -1;  // what the graph declares for Y, checked against the claim at creation
  err = declared_features(k->api, info, true, 0, &features);
  if (!err.empty()) return "reading the declared shape of output Y: " + err;
  if (features >= 0 && features != k->heads * k->head_dim)
    return "the graph declares output Y with " + std::to_string(features) + " features, attribute shape gives " +
           std::to_string(k->heads) + " x " + std::to_string(k->head_dim);
  return "";
}

std::string compute(AttentionKernel* k, ort::KernelContext* ctx) {
  const Api& api = k->api;
  size_t count = 0;
  std::string err = take_error(api, api.KernelContextGetInputCount(ctx, &count));
  TensorView in[4];
  bool present[4] = {false, false, false, false};
  for (size_t i = 0; i < 4 && err.empty(); ++i) err = input_view(api, ctx, i, count, &in[i], &present[i]);
  if (!err.empty()) return err;
  const bool packed = present[0] && !present[1] && !present[2];
  if (!packed && !(present[0] && present[1] && present[2]))
    return "query, key and value are required (or query alone, packed [batch, seq, 3 * num_heads * head_dim])";
  for (size_t i = 0; i < (packed ? 1u : 3u); ++i)
    if (in[i].dtype != kDTypeFloat) return "query, key and value must be float32";
  if (present[3] && in[3].dtype != ort::kInt32 && in[3].dtype != ort::kInt64) return "mask must be int32 or int64";
  AttentionShape shape;
  const std::vector<int64_t>* mask = present[3] ? &in[3].dims : nullptr;
  err = packed ? check_packed_attention(in[0].dims, mask, k->heads, k->head_dim, &shape)
               : check_attention(in[0].dims, in[1].dims, in[2].dims, mask, k->heads, k->head_dim, &shape);
  if (!err.empty()) return err;
  shape.int8 = k->int8;
  const int64_t elements = shape.batch * shape.seq * shape.heads * shape.head_dim;
  if (elements > 0 && (in[0].data == nullptr || (!packed && (in[1].data == nullptr || in[2].data == nullptr)) ||
                       (present[3] && in[3].data == nullptr)))
    return "an input has no data";
  const float* q = static_cast<const float*>(in[0].data);
  const int64_t width = shape.heads * shape.head_dim;
  const float* kp = packed ? q + width : static_cast<const float*>(in[1].data);
  const float* vp = packed ? q + 2 * width : static_cast<const float*>(in[2].data);
  const std::vector<int64_t> out_dims{shape.batch, shape.seq, width};
  ort::Value* out = nullptr;
  err = take_error(api, api.KernelContextGetOutput(ctx, 0, out_dims.data(), out_dims.size(), &out));
  void* y = nullptr;
  if (err.empty()) err = take_error(api, api.GetTensorMutableData(out, &y));
  if (!err.empty() || elements == 0) return err;
  OrtRunner runner(api, ctx);
  return attention(shape, q, kp, vp, present[3] ? in[3].data : nullptr, in[3].dtype, static_cast<float*>(y),
                   Isa::kAuto, runner);
}

const char* op_name(const ort::CustomOp*) { return kAttentionOpType; }
int input_type(const ort::CustomOp*, size_t i) { return i < 3 ? ort::kFloat : ort::kUndefined; }
size_t input_count(const ort::CustomOp*) { return 4; }
int input_characteristic(const ort::CustomOp*, size_t i) { return i == 0 ? ort::kRequired : ort::kOptional; }

}  // namespace

const ort::CustomOp* attention_op() {
  static const ort::CustomOp op =
      kernel_op<AttentionKernel, init, compute>(op_name, input_type, input_count, input_characteristic);
  return &op;
}

}  // namespace smp
