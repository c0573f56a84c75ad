// Argument checks: every argument of forward()/backward() is checked here before any work, and
// the checked arguments are turned into the one AttentionParams that the implementations read.
#pragma once

#include "common/params.h"
#include "flashattn/flashattn.h"

namespace flashattn::detail {

AttentionParams check_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Options& options);

AttentionParams check_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Options& options);

CombineParams check_combine(const Tensor& out_partial, const Tensor& lse_partial, const Tensor& out,
                            const Tensor& lse, const Options& options);

}  // namespace flashattn::detail
