#include "flashattn/flashattn.h"

namespace flashattn {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

}  // namespace flashattn
