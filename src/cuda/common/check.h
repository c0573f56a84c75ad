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
