// The few pieces of the onnxruntime C ABI this library uses, declared by hand.
//
// onnxruntime publishes its C API as a table of function pointers (OrtApi) that only ever
// grows at the end: a slot keeps its index forever. We read that table as an array of
// pointers and call only the slots named in `Slot`; every other slot is opaque to us.
// The indices were counted from the public header of onnxruntime 1.32 and cross-checked
// with a published binding's byte offsets (slot = offset / 8); tests/test_kernel_abi.py
// checks at run time that every slot below is called and behaves as expected.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace smp {
namespace ort {

// API version 17 (onnxruntime 1.17) is the first with KernelContext_ParallelFor.
constexpr uint32_t kApiVersion = 17;

struct Status;          // OrtStatus, opaque
struct KernelInfo;      // OrtKernelInfo, opaque
struct KernelContext;   // OrtKernelContext, opaque
struct Value;           // OrtValue, opaque
struct TypeShape;       // OrtTensorTypeAndShapeInfo, opaque
struct SessionOptions;  // OrtSessionOptions, opaque
struct Domain;          // OrtCustomOpDomain, opaque
struct TypeInfo;        // OrtTypeInfo, opaque

// ONNXTensorElementDataType values we check (same numbering as TensorProto.DataType).
enum ElementType : int { kUndefined = 0, kFloat = 1, kInt32 = 6, kInt64 = 7 };
// OrtErrorCode values we return.
enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2, kRuntimeException = 6, kInvalidGraph = 10 };
// OrtCustomOpInputOutputCharacteristic.
enum Characteristic : int { kRequired = 0, kOptional = 1 };

// OrtApiBase: the one struct handed to RegisterCustomOps.
struct ApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// Slot numbers (index of the function pointer in OrtApi).
enum Slot : int {
  kCreateStatus = 0,
  kGetErrorMessage = 2,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kGetTensorMutableData = 51,
  kCastTypeInfoToTensorInfo = 55,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorTypeAndShape = 65,
  kKernelInfoGetAttributeString = 87,
  kKernelContextGetInputCount = 88,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseStatus = 93,
  kReleaseTypeInfo = 98,
  kReleaseTensorTypeAndShapeInfo = 99,
  kReleaseCustomOpDomain = 101,
  kKernelInfoGetAttributeArrayInt64 = 163,
  kKernelInfoGetInputTypeInfo = 234,
  kKernelInfoGetOutputTypeInfo = 235,
  kKernelInfoGetNodeName = 244,
  kKernelInfoGetConstantInputTensor = 249,
  kKernelContextParallelFor = 274,
};

// The slots above, in one list (the tests read it through smp_abi_slots).
constexpr int kUsedSlots[] = {
    kCreateStatus, kGetErrorMessage, kCreateCustomOpDomain, kCustomOpDomainAdd, kAddCustomOpDomain,
    kGetTensorMutableData, kCastTypeInfoToTensorInfo, kGetTensorElementType, kGetDimensionsCount, kGetDimensions,
    kGetTensorTypeAndShape, kKernelInfoGetAttributeString, kKernelContextGetInputCount, kKernelContextGetInput,
    kKernelContextGetOutput, kReleaseStatus, kReleaseTypeInfo, kReleaseTensorTypeAndShapeInfo,
    kReleaseCustomOpDomain, kKernelInfoGetAttributeArrayInt64, kKernelInfoGetInputTypeInfo,
    kKernelInfoGetOutputTypeInfo, kKernelInfoGetNodeName, kKernelInfoGetConstantInputTensor,
    kKernelContextParallelFor};
constexpr int kNumUsedSlots = sizeof(kUsedSlots) / sizeof(kUsedSlots[0]);

// OrtCustomOp with the fields of API version 17; later versions append fields that
// onnxruntime reads only from ops declaring a newer version (kept zeroed in `tail`).
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp*, const void* api, const KernelInfo*);
  const char* (*GetName)(const CustomOp*);
  const char* (*GetExecutionProviderType)(const CustomOp*);
  int (*GetInputType)(const CustomOp*, size_t);
  size_t (*GetInputTypeCount)(const CustomOp*);
  int (*GetOutputType)(const CustomOp*, size_t);
  size_t (*GetOutputTypeCount)(const CustomOp*);
  void (*KernelCompute)(void*, KernelContext*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const CustomOp*, size_t);
  int (*GetOutputCharacteristic)(const CustomOp*, size_t);
  int (*GetInputMemoryType)(const CustomOp*, size_t);
  int (*GetVariadicInputMinArity)(const CustomOp*);
  int (*GetVariadicInputHomogeneity)(const CustomOp*);
  int (*GetVariadicOutputMinArity)(const CustomOp*);
  int (*GetVariadicOutputHomogeneity)(const CustomOp*);
  Status* (*CreateKernelV2)(const CustomOp*, const void* api, const KernelInfo*, void** kernel);
  Status* (*KernelComputeV2)(void*, KernelContext*);
  Status* (*InferOutputShapeFn)(const CustomOp*, void*);
  int (*GetStartVersion)(const CustomOp*);
  int (*GetEndVersion)(const CustomOp*);
  void* tail[8];
};

// How often each used slot was called (diagnostics for the ABI tests).
std::atomic<int64_t>* slot_call_counts();

// Typed access to the function table; every call is counted.
class Api {
 public:
  explicit Api(const void* table) : table_(static_cast<void* const*>(table)) {}
  bool valid() const { return table_ != nullptr; }

  Status* CreateStatus(int code, const char* msg) const {
    return call<Status* (*)(int, const char*)>(kCreateStatus)(code, msg);
  }
  const char* GetErrorMessage(const Status* s) const {
    return call<const char* (*)(const Status*)>(kGetErrorMessage)(s);
  }
  Status* CreateCustomOpDomain(const char* name, Domain** out) const {
    return call<Status* (*)(const char*, Domain**)>(kCreateCustomOpDomain)(name, out);
  }
  Status* CustomOpDomainAdd(Domain* d, const CustomOp* op) const {
    return call<Status* (*)(Domain*, const CustomOp*)>(kCustomOpDomainAdd)(d, op);
  }
  Status* AddCustomOpDomain(SessionOptions* o, Domain* d) const {
    return call<Status* (*)(SessionOptions*, Domain*)>(kAddCustomOpDomain)(o, d);
  }
  Status* GetTensorMutableData(Value* v, void** out) const {
    return call<Status* (*)(Value*, void**)>(kGetTensorMutableData)(v, out);
  }
  Status* CastTypeInfoToTensorInfo(const TypeInfo* t, const TypeShape** out) const {
    return call<Status* (*)(const TypeInfo*, const TypeShape**)>(kCastTypeInfoToTensorInfo)(t, out);
  }
  Status* GetTensorElementType(const TypeShape* t, int* out) const {
    return call<Status* (*)(const TypeShape*, int*)>(kGetTensorElementType)(t, out);
  }
  Status* GetDimensionsCount(const TypeShape* t, size_t* out) const {
    return call<Status* (*)(const TypeShape*, size_t*)>(kGetDimensionsCount)(t, out);
  }
  Status* GetDimensions(const TypeShape* t, int64_t* dims, size_t n) const {
    return call<Status* (*)(const TypeShape*, int64_t*, size_t)>(kGetDimensions)(t, dims, n);
  }
  Status* GetTensorTypeAndShape(const Value* v, TypeShape** out) const {
    return call<Status* (*)(const Value*, TypeShape**)>(kGetTensorTypeAndShape)(v, out);
  }
  Status* KernelContextGetInputCount(const KernelContext* c, size_t* out) const {
    return call<Status* (*)(const KernelContext*, size_t*)>(kKernelContextGetInputCount)(c, out);
  }
  Status* KernelContextGetInput(const KernelContext* c, size_t i, const Value** out) const {
    return call<Status* (*)(const KernelContext*, size_t, const Value**)>(kKernelContextGetInput)(c, i, out);
  }
  Status* KernelContextGetOutput(KernelContext* c, size_t i, const int64_t* dims, size_t n,
                                 Value** out) const {
    return call<Status* (*)(KernelContext*, size_t, const int64_t*, size_t, Value**)>(
        kKernelContextGetOutput)(c, i, dims, n, out);
  }
  void ReleaseStatus(Status* s) const { call<void (*)(Status*)>(kReleaseStatus)(s); }
  void ReleaseTypeInfo(TypeInfo* t) const { call<void (*)(TypeInfo*)>(kReleaseTypeInfo)(t); }
  void ReleaseTypeShape(TypeShape* t) const {
    call<void (*)(TypeShape*)>(kReleaseTensorTypeAndShapeInfo)(t);
  }
  void ReleaseCustomOpDomain(Domain* d) const { call<void (*)(Domain*)>(kReleaseCustomOpDomain)(d); }
  Status* KernelInfoGetAttributeArrayInt64(const KernelInfo* i, const char* name, int64_t* out,
                                           size_t* size) const {
    return call<Status* (*)(const KernelInfo*, const char*, int64_t*, size_t*)>(
        kKernelInfoGetAttributeArrayInt64)(i, name, out, size);
  }
  Status* KernelInfoGetAttributeString(const KernelInfo* i, const char* name, char* out, size_t* size) const {
    return call<Status* (*)(const KernelInfo*, const char*, char*, size_t*)>(kKernelInfoGetAttributeString)(
        i, name, out, size);
  }
  // The type the graph declares for input / output `index` of the node (released by the caller).
  Status* KernelInfoGetTypeInfo(const KernelInfo* i, bool output, size_t index, TypeInfo** out) const {
    return call<Status* (*)(const KernelInfo*, size_t, TypeInfo**)>(
        output ? kKernelInfoGetOutputTypeInfo : kKernelInfoGetInputTypeInfo)(i, index, out);
  }
  Status* KernelInfoGetNodeName(const KernelInfo* i, char* out, size_t* size) const {
    return call<Status* (*)(const KernelInfo*, char*, size_t*)>(kKernelInfoGetNodeName)(i, out, size);
  }
  Status* KernelInfoGetConstantInputTensor(const KernelInfo* i, size_t index, int* is_constant,
                                           const Value** out) const {
    return call<Status* (*)(const KernelInfo*, size_t, int*, const Value**)>(
        kKernelInfoGetConstantInputTensor)(i, index, is_constant, out);
  }
  Status* KernelContextParallelFor(const KernelContext* c, void (*fn)(void*, size_t), size_t total,
                                   size_t num_batch, void* data) const {
    return call<Status* (*)(const KernelContext*, void (*)(void*, size_t), size_t, size_t, void*)>(
        kKernelContextParallelFor)(c, fn, total, num_batch, data);
  }

 private:
  template <typename Fn>
  Fn call(Slot slot) const {
    slot_call_counts()[slot].fetch_add(1, std::memory_order_relaxed);
    return reinterpret_cast<Fn>(table_[slot]);
  }
  void* const* table_;
};

}  // namespace ort
}  // namespace smp
