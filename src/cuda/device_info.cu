#include <cuda_runtime.h>

#include "common/device_memory.h"
#include "cuda/common/check.h"
#include "flashattn/flashattn.h"

namespace flashattn {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the error, report none
    return 0;
  }
  return count;
}

namespace detail {
bool read_device_int32(int32_t* dst, const int32_t* src, int64_t n, int device, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  FLASHATTN_CUDA_CHECK(cudaStreamIsCapturing(s, &capture));
  if (capture != cudaStreamCaptureStatusNone) return false;
  int previous = 0;
  FLASHATTN_CUDA_CHECK(cudaGetDevice(&previous));
  FLASHATTN_CUDA_CHECK(cudaSetDevice(device));
  FLASHATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, s));
  FLASHATTN_CUDA_CHECK(cudaStreamSynchronize(s));
  FLASHATTN_CUDA_CHECK(cudaSetDevice(previous));
  return true;
}
}  // namespace detail

}  // namespace flashattn
