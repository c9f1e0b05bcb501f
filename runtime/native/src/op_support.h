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

}  // namespace smp
