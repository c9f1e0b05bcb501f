// Registration entry of the custom-op library.
#pragma once

#include "ort_abi.h"

#define SMP_EXPORT __attribute__((visibility("default")))

namespace smp {

constexpr const char* kDomain = "ai.smp";
constexpr const char* kOpType = "SparseLinear";

// Adds the ai.smp domain (SparseLinear) to `options`; a status on failure.
ort::Status* register_ops(ort::SessionOptions* options, const ort::ApiBase* base);

}  // namespace smp
