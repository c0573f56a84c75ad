// The TMA tensor maps of the sm90 forward: their kernel-parameter type, and their encoding on
// the host for one call.
#pragma once

#include <cuda.h>

#include "common/params.h"

namespace flashattn::detail::cuda::sm90 {

// q, k and v as (head_dim, rows, heads, batch) tensors (varlen: the packed rows, batch 1), read
// in boxes of 64 columns with the 128-byte swizzle wgmma reads (wgmma.cuh), zeros outside.
struct FwdTensorMaps {
  CUtensorMap q, k, v;
};

// Boxes of box_rows_q rows of q and box_rows_kv rows of k and v. False when q or k has no rows,
// an operand has a broadcast (stride-0) dimension, or the driver refuses a map: the caller then
// takes the sm80 kernel. A refusal throws instead when FLASHATTN_TEST_REQUIRE_TMA=1 (the GPU
// tests), so that no call leaves the sm90 kernel unnoticed.
bool encode_fwd_tensor_maps(const AttentionParams& p, int box_rows_q, int box_rows_kv,
                            FwdTensorMaps* maps);

}  // namespace flashattn::detail::cuda::sm90
