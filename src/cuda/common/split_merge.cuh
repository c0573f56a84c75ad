// The merge of split-KV partial results: each split s of a row's keys left a normalised partial
// output O_s and its log-sum-exp L_s (fp32). Attention over the union of the splits is
//   L = log Σ_s exp(L_s),   O = Σ_s exp(L_s − L) · O_s,
// with L = −inf and O = 0 where no split saw a key, and NaN where an L_s is NaN. The combine
// kernel (cuda/combine.cu) merges a row a block; merge_split_rows below merges the few rows of a
// decode tile in the block that finished the tile's last split.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/mma.cuh"

namespace flashattn::detail::cuda {

// Merges two (max, Σ exp(x − max)) pairs of log-sum-exp; an empty pair has max −inf, and a NaN
// max makes the merge NaN (fmaxf would pass it over).
__device__ __forceinline__ void lse_merge(float& m, float& sum, float m2, float sum2) {
  constexpr float kNegInf = -__builtin_huge_valf();
  if (isnan(m) || isnan(m2)) {
    m = sum = __int_as_float(0x7fc00000);
    return;
  }
  const float top = fmaxf(m, m2);
  if (top == kNegInf) return;
  sum = (m == kNegInf ? 0.0f : sum * __expf(m - top)) + (m2 == kNegInf ? 0.0f : sum2 * __expf(m2 - top));
  m = top;
}

// L of a row from each lane's (max, sum) over its splits: merged across the warp (the same
// shuffle tree in both merges), every lane getting it.
__device__ __forceinline__ float warp_lse(float m, float sum) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    lse_merge(m, sum, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, sum, o));
  }
  return sum == 0.0f ? -__builtin_huge_valf() : m + __logf(sum);  // NaN stays NaN
}

// The weight of a split with log-sum-exp lse_s in a row of log-sum-exp lse: 0 where no split saw
// a key (the partial is then not read: it may hold anything), NaN where lse is NaN.
__device__ __forceinline__ float split_weight(float lse_s, float lse) {
  return lse == -__builtin_huge_valf() ? 0.0f : __expf(lse_s - lse);
}

// The split counts one merge serves (the decode kernel splits at most kMaxSplits ways).
inline constexpr int kMergeMaxSplits = 128;
// The order of the sums, the same in both merges so that they give the same bits: split s goes
// to class s % kMergeClasses (the combine kernel's warps), each class adds its splits in
// increasing order, and then the classes are added 0, 1, 2, …
inline constexpr int kMergeClasses = 8;
// merge_split_rows: kMergeRounds · kMergeClasses partial loads of a thread in flight.
inline constexpr int kMergeRounds = 2;

// The whole block (kThreads threads) merges `rows` ≤ kMaxRows rows of `splits` ≤
// kMergeMaxSplits partials, head_dim columns (a multiple of 4). Row r's split s:
// partial(r) + s · split_stride is its head_dim floats (16-byte aligned) and
// partial_lse(r) + s · lse_split_stride its L_s; out(r) its head_dim elements of T (8-byte
// aligned), lse_out(r) where its L goes (null: nowhere); each is called once a row or item, not
// once a load (a row's slot may take divisions). `weights` is shared memory of kMaxRows ·
// kMergeMaxSplits floats. The partials were written by other blocks of this grid: they are read
// through L2 (ld.global.cg), never from a stale L1 line.
//
// Each warp takes rows w, w + kWarps, … and its lanes every 32nd split's L_s (all loads in flight
// at once), reduces (max, sum) with shuffles as the combine kernel does and leaves each split's
// weight in shared memory; then each thread takes (row, 4 columns) items and sums their splits
// in the order above, 16 float4 loads in flight. So the result is the combine kernel's, bit for
// bit, whichever block merges.
template <class T, int kThreads, int kMaxRows, class Partial, class PartialLse, class Out,
          class LseOut>
__device__ __forceinline__ void merge_split_rows(int rows, int splits, int head_dim, float* weights,
                                                 Partial partial, int64_t split_stride,
                                                 PartialLse partial_lse, int64_t lse_split_stride,
                                                 Out out, LseOut lse_out) {
  constexpr float kNegInf = -__builtin_huge_valf();
  constexpr int kWarps = kThreads / 32, kWarpRows = (kMaxRows + kWarps - 1) / kWarps;
  constexpr int kLoads = kMergeMaxSplits / 32;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  float l[kWarpRows][kLoads];
#pragma unroll
  for (int i = 0; i < kWarpRows; ++i) {
    const int r = warp + i * kWarps;
    const float* const lse_r = r < rows ? partial_lse(r) : nullptr;
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int s = lane + 32 * k;
      l[i][k] = r < rows && s < splits ? __ldcg(lse_r + s * lse_split_stride) : kNegInf;
    }
  }
#pragma unroll
  for (int i = 0; i < kWarpRows; ++i) {
    const int r = warp + i * kWarps;
    if (r >= rows) break;
    float m = kNegInf, sum = 0.0f;
#pragma unroll
    for (int k = 0; k < kLoads; ++k) lse_merge(m, sum, l[i][k], 1.0f);
    const float lse = warp_lse(m, sum);
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int s = lane + 32 * k;
      if (s < splits) weights[r * kMergeMaxSplits + s] = split_weight(l[i][k], lse);
    }
    float* const dst = lse_out(r);
    if (lane == 0 && dst != nullptr) *dst = lse;
  }
  __syncthreads();

  const int chunks = head_dim / 4;
  for (int item = static_cast<int>(threadIdx.x); item < rows * chunks; item += kThreads) {
    const int r = item / chunks, c = item % chunks * 4;
    const float* w = weights + r * kMergeMaxSplits;
    const float* const src = partial(r) + c;
    float acc[kMergeClasses][4] = {};
    for (int s0 = 0; s0 < splits; s0 += kMergeClasses * kMergeRounds) {
      float4 x[kMergeRounds][kMergeClasses];
#pragma unroll
      for (int k = 0; k < kMergeRounds; ++k) {
#pragma unroll
        for (int u = 0; u < kMergeClasses; ++u) {  // unconditional loads: a clamped split, weight 0
          const int s = min(s0 + k * kMergeClasses + u, splits - 1);
          x[k][u] = __ldcg(reinterpret_cast<const float4*>(src + s * split_stride));
        }
      }
#pragma unroll
      for (int k = 0; k < kMergeRounds; ++k) {
#pragma unroll
        for (int u = 0; u < kMergeClasses; ++u) {
          const int s = s0 + k * kMergeClasses + u;
          const float weight = s < splits ? w[s] : 0.0f;
          if (weight == 0.0f) continue;
          acc[u][0] += weight * x[k][u].x;
          acc[u][1] += weight * x[k][u].y;
          acc[u][2] += weight * x[k][u].z;
          acc[u][3] += weight * x[k][u].w;
        }
      }
    }
#pragma unroll
    for (int u = 1; u < kMergeClasses; ++u) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[0][e] += acc[u][e];
    }
    *reinterpret_cast<uint2*>(out(r) + c) =
        make_uint2(pack2<T>(acc[0][0], acc[0][1]), pack2<T>(acc[0][2], acc[0][3]));
  }
}

}  // namespace flashattn::detail::cuda
