// What the int8 custom operators (SparseLinearInt8, SparseFFNInt8) share: one int8 CSR weight
// of an op, packed once at creation when its arrays are constant initializers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "int8_matrix.h"
#include "ort_abi.h"

namespace smp {

// crow, col, values, scale, bias at inputs first_input + 0..4 (bias optional).
constexpr size_t kInt8WeightInputs = 5;

struct Int8Slot {
  size_t first_input = 1;
  const char* name = "";  // "" for an op's only weight, else how errors name it
  int64_t rows = 0, cols = 0;
  bool prepacked = false, bias_constant = false;
  Int8Csr packed;
  std::string label() const { return *name ? std::string(name) + ": " : std::string(); }
};

// Reads the int64 pair attribute `shape_attr` ([rows, cols], cols <= kMaxInt8Cols) into slot.
std::string read_int8_shape(const ort::Api& api, const ort::KernelInfo* info, const char* shape_attr, Int8Slot* slot);
// Packs the arrays once when crow, col, values and scale are constant initializers.
std::string pack_constant_int8(const ort::Api& api, const ort::KernelInfo* info, Int8Slot* slot);
// The packed weight of this call: the prepacked one, or this call's inputs validated and packed
// into *per_call (arrays that are not constant, or a bias present unlike at creation).
std::string call_int8_weights(const ort::Api& api, ort::KernelContext* ctx, size_t count, const Int8Slot& slot,
                              Int8Csr* per_call, const Int8Csr** out);

}  // namespace smp
