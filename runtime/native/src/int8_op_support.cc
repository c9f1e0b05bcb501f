#include "int8_op_support.h"

#include <vector>

#include "op_support.h"

namespace smp {

std::string read_int8_shape(const ort::Api& api, const ort::KernelInfo* info, const char* shape_attr,
                            Int8Slot* slot) {
  std::vector<int64_t> shape;
  bool present = false;
  std::string err = read_ints(api, info, shape_attr, &shape, &present);
  if (!err.empty()) return slot->label() + err;
  if (!present || shape.size() != 2 || shape[0] < 0 || shape[1] < 0 || shape[0] > kMaxDim ||
      shape[1] > kMaxInt8Cols)
    return slot->label() + "attribute " + shape_attr + " must be [rows, cols] with rows in [0, " +
           std::to_string(kMaxDim) + "] and cols in [0, " + std::to_string(kMaxInt8Cols) + "]";
  slot->rows = shape[0];
  slot->cols = shape[1];
  return "";
}

namespace {

std::string pack(const Int8Slot& slot, const TensorView* views, bool with_bias, Int8Csr* out) {
  std::string err = pack_int8_csr(slot.rows, slot.cols, views[0], views[1], views[2], views[3],
                                  with_bias ? &views[4] : nullptr, out);
  return err.empty() ? err : slot.label() + err;
}

}  // namespace

std::string pack_constant_int8(const ort::Api& api, const ort::KernelInfo* info, Int8Slot* slot) {
  TensorView views[kInt8WeightInputs];
  bool constant[kInt8WeightInputs] = {false, false, false, false, false};
  std::string err = constant_inputs(api, info, slot->first_input, kInt8WeightInputs, views, constant);
  if (!err.empty() || !(constant[0] && constant[1] && constant[2] && constant[3])) return err;
  slot->bias_constant = constant[4];
  err = pack(*slot, views, constant[4], &slot->packed);
  slot->prepacked = err.empty();
  return err;
}

std::string call_int8_weights(const ort::Api& api, ort::KernelContext* ctx, size_t count, const Int8Slot& slot,
                              Int8Csr* per_call, const Int8Csr** out) {
  TensorView views[kInt8WeightInputs];
  bool present[kInt8WeightInputs] = {false, false, false, false, false};
  std::string err;
  for (size_t i = 0; i < kInt8WeightInputs && err.empty(); ++i)
    err = input_view(api, ctx, slot.first_input + i, count, &views[i], &present[i]);
  if (!err.empty()) return slot.label() + err;
  if (slot.prepacked && present[4] == slot.bias_constant) {
    *out = &slot.packed;
    return "";
  }
  if (!(present[0] && present[1] && present[2] && present[3]))
    return slot.label() + "crow_indices, col_indices, values and scale are required";
  err = pack(slot, views, present[4], per_call);
  *out = per_call;
  return err;
}

}  // namespace smp
