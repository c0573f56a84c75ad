// What the API layer may call of the CUDA part: plain C++, no CUDA headers (the compile firewall).
#pragma once

#include "common/params.h"

namespace flashattn::detail::cuda {

void forward(const AttentionParams& p);
void backward(const AttentionParams& p);

}  // namespace flashattn::detail::cuda
