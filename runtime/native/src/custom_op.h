// Registration entry of the custom-op library.
#pragma once

#include "ort_abi.h"

#define SMP_EXPORT __attribute__((visibility("default")))

namespace smp {

constexpr const char* kDomain = "ai.smp";
constexpr const char* kOpType = "SparseLinear";
constexpr const char* kAttentionOpType = "Attention";
constexpr const char* kFfnOpType = "SparseFFN";

// The ai.smp.Attention operator (attention_op.cc).
const ort::CustomOp* attention_op();
// The ai.smp.SparseFFN operator (ffn_op.cc).
const ort::CustomOp* ffn_op();
// The ai.smp.SparseLinearInt8 operator (int8_op.cc).
const ort::CustomOp* int8_linear_op();
// The ai.smp.SparseFFNInt8 operator (ffn_int8_op.cc).
const ort::CustomOp* ffn_int8_op();

// Adds the ai.smp domain (SparseLinear, Attention, SparseFFN and their int8 forms) to `options`; a status on failure.
ort::Status* register_ops(ort::SessionOptions* options, const ort::ApiBase* base);

}  // namespace smp
