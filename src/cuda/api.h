// What the API layer may call of the CUDA part: plain C++, no CUDA headers (the compile firewall).
#pragma once

#include "common/params.h"

namespace flashattn::detail::cuda {

void forward(const AttentionParams& p, const Workspace& workspace);
size_t forward_workspace_bytes(const AttentionParams& p);
void backward(const AttentionParams& p, const Workspace& workspace);
size_t backward_workspace_bytes(const AttentionParams& p);
void release_workspace_pool();
void combine(const CombineParams& p);

}  // namespace flashattn::detail::cuda
