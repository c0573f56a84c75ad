// The README's "GPUs" paragraph as a rule: which backward calls a GPU with `smem_limit` bytes of
// shared memory a block refuses (the Ampere kernels). On an A100 (166,912 bytes) the
// deterministic mode past d 192, whose dQ kernel does not fit; on an sm_86/89/120 part (101,376)
// d 256, and the deterministic mode past d 96. Hopper (227 KB) refuses nothing. Every other call
// runs, on the smaller tiles where it must (src/cuda/sm80/bwd_tile.h). test_tile_limits holds the
// tile tables to this rule; the GPU suite asserts it call by call.
#pragma once

#include <cstdint>

namespace fa_test {

inline constexpr long long kA100SmemLimit = 166912, kSm86SmemLimit = 101376,
                           kHopperSmemLimit = 232448;

// compiled_head_dim: the head dim of the kernels that run (a multiple of 32); dq_kernel: the
// deterministic mode with query rows to compute (the dQ kernel then runs).
inline bool backward_refused(long long smem_limit, int64_t compiled_head_dim, bool dq_kernel) {
  if (smem_limit >= kHopperSmemLimit) return false;
  if (smem_limit >= kA100SmemLimit) return dq_kernel && compiled_head_dim > 192;
  return compiled_head_dim == 256 || (dq_kernel && compiled_head_dim > 96);
}

}  // namespace fa_test
