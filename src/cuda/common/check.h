// Checked CUDA runtime calls: a failure becomes a flashattn::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "flashattn/flashattn.h"

#define FLASHATTN_CUDA_CHECK(call)                                                           \
  do {                                                                                       \
    const cudaError_t flashattn_status_ = (call);                                            \
    if (flashattn_status_ != cudaSuccess) {                                                  \
      throw ::flashattn::Error(std::string("flashattn: CUDA error in ") + #call + ": " +     \
                               cudaGetErrorString(flashattn_status_));                      \
    }                                                                                        \
  } while (0)

namespace flashattn::detail::cuda {

// Dynamic shared memory beyond the default 48 KB must be allowed per kernel, once per process
// is enough but the call is cheap; a failure is an error like any CUDA call's.
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    FLASHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(bytes)));
  }
}

}  // namespace flashattn::detail::cuda
