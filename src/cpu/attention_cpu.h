// The CPU implementation: the executable specification of every feature. It runs the
// FlashAttention-2 algorithm itself (query and key blocks, running max and sum, one rescale at the
// end; the backward recomputes P from the LSE), threaded over independent blocks, in fp32 (in
// fp64 for fp64 inputs).
#pragma once

#include "common/params.h"

namespace flashattn::detail::cpu {

void forward(const AttentionParams& p);
void backward(const AttentionParams& p);
void combine(const CombineParams& p);

}  // namespace flashattn::detail::cpu
