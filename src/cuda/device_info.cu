#include <cuda_runtime.h>

#include "flashattn/flashattn.h"

namespace flashattn {

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the sticky error, report none
    return 0;
  }
  return count;
}

}  // namespace flashattn
