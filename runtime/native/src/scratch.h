// Per-thread scratch memory of the kernels.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace smp {

// 64-byte aligned floats, grown on demand, kept for the owner's lifetime (used thread_local).
struct Buffer {
  float* data = nullptr;
  size_t capacity = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data); }
  // At least `floats` floats, or null when memory runs out (the old block stays valid then).
  float* get(size_t floats) {
    if (floats <= capacity) return data;
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    void* fresh = std::aligned_alloc(64, bytes);
    if (fresh == nullptr) return nullptr;
    std::free(data);
    data = static_cast<float*>(fresh);
    capacity = bytes / sizeof(float);
    return data;
  }
};

}  // namespace smp
