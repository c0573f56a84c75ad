// The combine kernel of split-KV decoding (the merge: cuda/common/split_merge.cuh). One block per
// (query head, row): its warps take every kWarps-th split, kUnroll of them in flight a lane, and
// add their sums through shared memory. A decode step has few rows and up to 128 splits, so the
// splits, not the rows, are where the parallelism is, and the kernel's time is round trips to
// memory: the loads are unconditional (clamped index, zero weight) so that all of a lane's
// kUnroll loads issue before the first is used, and the first of them go out beside the LSE
// loads, so that up to 64 splits of 128 columns take one round trip, not one for L and one for
// every 32 splits (3.7 µs at batch 1 with 49 splits, 32 heads, d 128, on the H200). The
// same kernel serves the public combine() (CombineParams: any strides) and the split forward
// whose tiles the decode kernel does not merge itself (FwdPlan::merge_in_kernel).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/common/check.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/split_merge.cuh"
#include "cuda/dispatch.h"

namespace flashattn::detail::cuda {
namespace {

constexpr int kWarps = kMergeClasses, kUnroll = 8;  // (the order of the sums: split_merge.cuh)

template <class T, bool kVec>
__global__ void __launch_bounds__(32 * kWarps) combine_kernel(const __grid_constant__ CombineParams p) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int64_t rows = p.batch * p.seqlen;
  // Head-major items: the split forward's partials of one head are contiguous rows.
  const int64_t item = blockIdx.x, head = item / rows, row = item % rows;
  const int64_t b = row / p.seqlen, i = row % p.seqlen;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  auto at = [&](const CombineStrides& st) { return b * st.batch + i * st.row + head * st.head; };
  const float* lse_s = p.lse_partial + at(p.lp);
  const float* o_s = p.out_partial + at(p.op);
  const int64_t splits = p.splits;

  // One batch of a lane's loads: the partial LSEs and kCols columns from c of the splits s0,
  // s0 + kWarps, ... (kUnroll of them; past the last split, its weight −inf and a valid address).
  constexpr int kCols = kVec ? 4 : 1;  // kVec: 16-byte partial loads, 4-element stores
  float w[kUnroll], x[kUnroll][kCols];
  auto load = [&](int64_t c, int64_t s0) {
    const float* x0 = o_s + (c < p.head_dim ? c : 0);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t s = s0 + u * kWarps, sc = min(s, splits - 1);
      w[u] = s < splits ? lse_s[sc * p.lp.split] : kNegInf;
      const float* src = x0 + sc * p.op.split;
      if constexpr (kVec) {
        const float4 v = *reinterpret_cast<const float4*>(src);
        x[u][0] = v.x, x[u][1] = v.y, x[u][2] = v.z, x[u][3] = v.w;
      } else {
        x[u][0] = *src;
      }
    }
  };
  // The first batch goes out with the LSE loads below: neither waits for the other, so a row
  // of up to kWarps · kUnroll splits and 32 · kCols columns costs one round trip to memory.
  load(lane * kCols, warp);

  // L, in one pass: each lane's (max, sum) over its splits, then the warp's (every warp the same).
  float m = kNegInf, sum = 0.0f;
  {
    constexpr int kLoads = 4;  // a decode step's splits (≤ 128) in one round of loads
    float l[kLoads];
#pragma unroll
    for (int k = 0; k < kLoads; ++k) {
      const int64_t s = lane + 32 * k;
      l[k] = s < splits ? lse_s[s * p.lp.split] : kNegInf;
    }
#pragma unroll
    for (int k = 0; k < kLoads; ++k) lse_merge(m, sum, l[k], 1.0f);
    for (int64_t s = lane + 32 * kLoads; s < splits; s += 32) lse_merge(m, sum, lse_s[s * p.lp.split], 1.0f);
  }
  const float lse = warp_lse(m, sum);

  __shared__ float warp_acc[kWarps][32 * kCols];
  T* out = static_cast<T*>(p.out) + at(p.o);
  for (int64_t c0 = 0; c0 < p.head_dim; c0 += 32 * kCols) {
    const int64_t c = c0 + lane * kCols;
    const bool active = c < p.head_dim;
    float acc[kCols] = {};
    for (int64_t s0 = warp; s0 < splits; s0 += kWarps * kUnroll) {
      if (c0 != 0 || s0 != warp) load(c, s0);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        // 0 past the last split, for a split that saw no key, and where no split saw one (its
        // partial output is then not read: it may hold anything); NaN where an LSE is NaN.
        const float weight = split_weight(w[u], lse);
        if (weight == 0.0f) continue;
#pragma unroll
        for (int k = 0; k < kCols; ++k) acc[k] += weight * x[u][k];
      }
    }
    __syncthreads();  // the previous pass has read warp_acc
#pragma unroll
    for (int k = 0; k < kCols; ++k) warp_acc[warp][lane * kCols + k] = acc[k];
    __syncthreads();
    if (warp != 0 || !active) continue;
#pragma unroll
    for (int k = 0; k < kCols; ++k) {
#pragma unroll
      for (int v = 1; v < kWarps; ++v) acc[k] += warp_acc[v][lane * kCols + k];
    }
    if constexpr (std::is_same_v<T, float>) {
      if constexpr (kVec) {
        *reinterpret_cast<float4*>(out + c) = make_float4(acc[0], acc[1], acc[2], acc[3]);
      } else {
        out[c] = acc[0];
      }
    } else if constexpr (kVec) {
      *reinterpret_cast<uint2*>(out + c) = make_uint2(pack2<T>(acc[0], acc[1]), pack2<T>(acc[2], acc[3]));
    } else if constexpr (std::is_same_v<T, __half>) {
      out[c] = __float2half_rn(acc[0]);
    } else {
      out[c] = __float2bfloat16_rn(acc[0]);
    }
  }
  if (threadIdx.x == 0 && p.lse != nullptr) p.lse[at(p.l)] = lse;
}

template <class T>
void launch_typed(const CombineParams& p, cudaStream_t stream) {
  const int64_t items = p.batch * p.seqlen * p.heads;
  if (items == 0) return;
  if (items > 0x7fffffff) {
    throw Error("flashattn::combine: argument 'out_partial': at most 2^31 − 1 (row, head) pairs, got " +
                std::to_string(items));
  }
  // 16-byte partial loads and 4-element stores where every row of both is aligned for them.
  auto aligned = [](const void* ptr, size_t bytes, std::initializer_list<int64_t> strides) {
    bool ok = reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
    for (int64_t s : strides) ok = ok && s % 4 == 0;
    return ok;
  };
  const bool vec = p.head_dim % 4 == 0 &&
                   aligned(p.out_partial, 16, {p.op.split, p.op.batch, p.op.row, p.op.head}) &&
                   aligned(p.out, 4 * sizeof(T), {p.o.batch, p.o.row, p.o.head});
  auto kernel = vec ? combine_kernel<T, true> : combine_kernel<T, false>;
  kernel<<<static_cast<unsigned>(items), 32 * kWarps, 0, stream>>>(p);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void launch_combine(const CombineParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::f16: return launch_typed<__half>(p, stream);
    case DType::bf16: return launch_typed<__nv_bfloat16>(p, stream);
    case DType::f32: return launch_typed<float>(p, stream);
    default: break;
  }
  throw Error(std::string("flashattn::combine: argument 'out': no CUDA combine for dtype ") +
              dtype_name(p.dtype));
}

void combine_splits(const AttentionParams& p, cudaStream_t stream) {
  // The decode kernel's partials (split_slot), rows of head_dim_v floats; out and lse as the
  // forward's (padded batch).
  CombineParams c;
  c.dtype = p.dtype;
  c.device = p.device;
  c.splits = p.splits;
  c.batch = p.batch;
  c.seqlen = p.seqlen_q;
  c.heads = p.heads_q;
  c.head_dim = p.head_dim_v;
  c.lse_partial = p.lse_partial;
  c.lp = {split_slot(p, 1, 0, 0, 0), split_slot(p, 0, 0, 1, 0), split_slot(p, 0, 0, 0, 1),
          split_slot(p, 0, 1, 0, 0)};
  c.out_partial = p.out_partial;
  c.op = {c.lp.split * p.head_dim_v, c.lp.batch * p.head_dim_v, p.head_dim_v, c.lp.head * p.head_dim_v};
  c.out = p.out;
  c.o = {0, p.out_stride.batch, p.out_stride.row, p.out_stride.head};
  c.lse = p.lse;
  c.l = {0, p.lse_batch_stride, 1, p.lse_head_stride};
  launch_combine(c, stream);
}

}  // namespace flashattn::detail::cuda
