// The few device-memory services the API layer needs, implemented by the CUDA part of the build
// (src/cuda/device_info.cu) or by its CPU-only stand-in (src/api/no_cuda.cpp).
#pragma once

#include <cstdint>

namespace flashattn::detail {

// Copies n int32 values from device memory to the host, ordered after the work on `stream`.
// Returns false, copying nothing, when the values cannot be read now: the stream is being
// captured into a CUDA graph. Throws flashattn::Error when there is no CUDA in this build.
bool read_device_int32(int32_t* dst, const int32_t* src, int64_t n, int device, void* stream);

}  // namespace flashattn::detail
