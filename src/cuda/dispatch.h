// The CUDA side of the compile firewall: the API calls forward() and backward(); they pick one
// declared run_fwd / run_bwd<dtype, head dim, score mods>, defined in a generated instantiation
// file.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "common/params.h"
#include "cuda/api.h"
#include "cuda/instantiations/table.h"

// What this build compiled (FLASHATTN_HEAD_DIMS / FLASHATTN_DTYPES, passed by CMake as bit masks
// over the generated table's order); everything where they are not given.
#ifndef FLASHATTN_CUDA_HEAD_DIM_MASK
#define FLASHATTN_CUDA_HEAD_DIM_MASK (~0u)
#endif
#ifndef FLASHATTN_CUDA_DTYPE_MASK
#define FLASHATTN_CUDA_DTYPE_MASK (~0u)
#endif

namespace flashattn::detail::cuda {

// Head dims there are kernels for; any other head dim ≤ 256 that is a multiple of 8 runs on the
// next compiled one up.
inline constexpr int kAllHeadDims[] = {FLASHATTN_ALL_HEAD_DIMS};

constexpr bool head_dim_compiled(int head_dim) {
  for (unsigned i = 0; i < sizeof(kAllHeadDims) / sizeof(kAllHeadDims[0]); ++i) {
    if (kAllHeadDims[i] == head_dim) return ((FLASHATTN_CUDA_HEAD_DIM_MASK) >> i) & 1u;
  }
  return false;
}

constexpr bool dtype_compiled(DType dtype) {
  switch (dtype) {
    case DType::f16: return ((FLASHATTN_CUDA_DTYPE_MASK) >> FLASHATTN_DTYPE_BIT_FP16) & 1u;
    case DType::bf16: return ((FLASHATTN_CUDA_DTYPE_MASK) >> FLASHATTN_DTYPE_BIT_BF16) & 1u;
    default: return false;
  }
}

// A switch from the environment: set, and neither empty nor "0".
inline bool env_flag(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, "") != 0 && std::strcmp(env, "0") != 0;
}

// Whether the Hopper (sm_90a) kernels serve this device: a compute capability 9.0 GPU, unless the
// environment sets FLASHATTN_DISABLE_SM90=1 (then every call takes the sm80 kernels).
bool use_sm90(int device);

// The device's streaming multiprocessors (read once a device).
int multiprocessors(int device);

// Lets `kernel` use `bytes` of dynamic shared memory on `device` (over 48 KB needs an opt-in):
// cudaFuncSetAttribute once per kernel and device, a table lookup after that. Where the device
// cannot give that much (an A100 has 163 KB a block, sm_86/89/120 99 KB), an Error names the
// kernel (`what`, e.g. "the sm80 backward (dK/dV) kernel"), the head dim, the bytes and the
// limit. FLASHATTN_TEST_SMEM_LIMIT=bytes in the environment (tests only; read once) lowers the
// limit, to emulate a smaller GPU.
void allow_dynamic_smem(const void* kernel, size_t bytes, int device, const char* what,
                        int head_dim);
// Whether `kernel` may ask for `bytes` of dynamic shared memory on `device` (the limit above, the
// emulated one included): how a launcher with tiles of several sizes picks the largest that fits.
bool dynamic_smem_fits(const void* kernel, size_t bytes, int device);

// The blocks of `kernel` (threads a block, dynamic shared memory bytes) that one SM of `device`
// holds at once; read once per (kernel, device).
int blocks_per_multiprocessor(const void* kernel, int threads, size_t smem_bytes, int device);

// How one forward call runs. A decode step (padded batch, seqlen_q ≤ kDecodeMaxSeqlenQ, no
// dropout), a paged cache, or a split asked for (Options::num_splits > 1) takes the decode kernel:
// the query heads of a KV group share one tile's rows (pack_gqa), and the keys are split
// num_splits ways, each split's O and LSE going to the workspace in fp32, merged by the combine
// kernel. Anything else takes the regular kernels, without workspace.
struct FwdPlan {
  bool decode = false;
  bool pack_gqa = false;
  bool decode_rows32 = false;  // more than 16 tile rows: the 32-row decode tile, where there is one
  int num_splits = 1;
  // A split whose tiles the decode kernel merges itself (AttentionParams::split_counters: the
  // counters are the workspace's first kSplitCounterBytes), else the combine kernel merges: for
  // short steps (plan_fwd), and only on a caller's workspace that is zeroed (Workspace::zeroed;
  // forward() decides that).
  bool merge_in_kernel = false;
  size_t workspace_bytes = 0;
};
// The start of a split forward's workspace, its tiles' counters; the partials follow. Always
// reserved whole, so that the partials of no call overlap the counters of another on a kept
// buffer (Workspace::zeroed).
inline constexpr size_t kSplitCounterBytes = 16384;
inline constexpr int64_t kDecodeMaxSeqlenQ = 16;
// Whether a forward call takes the decode kernel (FwdPlan::decode): refused before here are splits
// with dropout or a varlen batch (validate.cpp) and a paged cache with dropout (forward's checks).
inline bool takes_decode_kernel(const AttentionParams& p) {
  return p.dropout_p == 0.0f && (p.block_table != nullptr || p.num_splits > 1 ||
                                 (!p.is_varlen && p.seqlen_q <= kDecodeMaxSeqlenQ));
}

// The split count for `requested` splits over `key_blocks` blocks of keys: at most one split a
// key block and kMaxSplits. Split s takes key blocks [s · n / splits, (s + 1) · n / splits) of a
// sequence's n, so the splits differ by at most one block.
inline constexpr int kMaxSplits = 128;
int split_count(int64_t requested, int64_t key_blocks);
// The heuristic (num_splits = 0): the most splits whose grid of blocks × splits fits the `slots`
// (SMs × resident blocks) in one wave; 1 when `blocks` already fill most of them.
int choose_num_splits(int64_t blocks, int64_t key_blocks, int64_t slots);

// Merges the p.splits partial results of the decode kernel (p.out_partial, p.lse_partial) into
// out and lse: lse = log Σ exp(lse_s), out = Σ exp(lse_s − lse) · out_s.
void combine_splits(const AttentionParams& p, cudaStream_t stream);
// The same merge for any CombineParams (the public combine()), on the current device.
void launch_combine(const CombineParams& p, cudaStream_t stream);

// A varlen call's rows past its last sequence (params.h, total_q), the end read on the device:
// the forward's out as zeros and LSE as −inf, the backward's dq, dk and dv as zeros. One launch;
// nothing for a padded batch.
void write_varlen_tails(const AttentionParams& p, bool backward, cudaStream_t stream);

template <class T, int kHeadDim, bool kScoreMods>
FwdPlan plan_fwd(const AttentionParams& p);

// The forward on `workspace`, a buffer of at least plan.workspace_bytes (null when that is 0).
template <class T, int kHeadDim, bool kScoreMods>
void run_fwd(const AttentionParams& p, const FwdPlan& plan, void* workspace, cudaStream_t stream);

// The backward's device scratch in bytes (the one plan that run_bwd carves up), and the
// backward itself on `workspace`, a buffer of at least that size (null when it is 0).
template <class T, int kHeadDim, bool kScoreMods>
size_t bwd_workspace_bytes(const AttentionParams& p);

template <class T, int kHeadDim, bool kScoreMods>
void run_bwd(const AttentionParams& p, void* workspace, cudaStream_t stream);

}  // namespace flashattn::detail::cuda
