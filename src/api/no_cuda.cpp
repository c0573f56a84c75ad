#include "common/device_memory.h"
#include "flashattn/flashattn.h"

namespace flashattn {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

namespace detail {
bool read_device_int32(int32_t*, const int32_t*, int64_t, int device, void*) {
  throw Error("flashattn: a tensor is on device cuda:" + std::to_string(device) +
              " but this build has no CUDA support; pass CPU tensors");
}
}  // namespace detail

}  // namespace flashattn
