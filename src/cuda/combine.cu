// The combine kernel of split-KV decoding: each split s of the keys left a normalised partial
// output O_s and its log-sum-exp L_s (fp32, in the forward's workspace). Attention over the
// union of the splits is
//   L = log Σ_s exp(L_s),   O = Σ_s exp(L_s − L) · O_s,
// with L = −inf and O = 0 where no split saw a key. One warp per (query head, row).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/check.h"
#include "cuda/common/mma.cuh"
#include "cuda/dispatch.h"

namespace flashattn::detail::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <class T>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    combine_splits_kernel(const __grid_constant__ AttentionParams p) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int64_t rows = p.batch * p.seqlen_q;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= rows * p.heads_q) return;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t head = item / rows, row = item % rows;  // slot of split s: s · split_stride + item
  const int64_t b = row / p.seqlen_q, i = row % p.seqlen_q;
  const int64_t split_stride = p.heads_q * rows;
  const float* lse_s = p.lse_partial + item;

  float m = kNegInf;
  for (int s = lane; s < p.splits; s += 32) m = fmaxf(m, lse_s[s * split_stride]);
  m = warp_max(m);
  float sum = 0.0f;
  if (m != kNegInf) {
    for (int s = lane; s < p.splits; s += 32) sum += __expf(lse_s[s * split_stride] - m);
  }
  sum = warp_sum(sum);
  const float lse = sum > 0.0f ? m + __logf(sum) : kNegInf;

  const int head_dim = static_cast<int>(p.head_dim_v);
  const float* o_s = p.out_partial + item * head_dim;
  T* out = static_cast<T*>(p.out) + b * p.out_stride.batch + i * p.out_stride.row +
           head * p.out_stride.head;
  for (int c = lane * 4; c < head_dim; c += 128) {
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (lse != kNegInf) {
      for (int s = 0; s < p.splits; ++s) {
        const float w = __expf(lse_s[s * split_stride] - lse);
        const float4 x = *reinterpret_cast<const float4*>(o_s + s * split_stride * head_dim + c);
        acc.x += w * x.x;
        acc.y += w * x.y;
        acc.z += w * x.z;
        acc.w += w * x.w;
      }
    }
    *reinterpret_cast<uint2*>(out + c) = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[b * p.lse_batch_stride + head * p.lse_head_stride + i] = lse;
  }
}

template <class T>
void launch(const AttentionParams& p, cudaStream_t stream) {
  const int64_t warps = p.batch * p.seqlen_q * p.heads_q;
  const auto blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  combine_splits_kernel<T><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void combine_splits(const AttentionParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::f16:
      if constexpr (dtype_compiled(DType::f16)) return launch<__half>(p, stream);
      break;
    case DType::bf16:
      if constexpr (dtype_compiled(DType::bf16)) return launch<__nv_bfloat16>(p, stream);
      break;
    default: break;
  }
  throw Error(std::string("flashattn::forward: internal error: no combine kernel for ") +
              dtype_name(p.dtype));
}

}  // namespace flashattn::detail::cuda
