// The combine kernel of split-KV decoding: each split s of the keys left a normalised partial
// output O_s and its log-sum-exp L_s (fp32, in the forward's workspace). Attention over the
// union of the splits is
//   L = log Σ_s exp(L_s),   O = Σ_s exp(L_s − L) · O_s,
// with L = −inf and O = 0 where no split saw a key. One warp per (query head, row). The same kernel
// serves the public combine() (CombineParams: any strides) and the split forward's last step.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

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

template <class T, bool kVec>
__global__ void __launch_bounds__(32 * kWarpsPerBlock)
    combine_kernel(const __grid_constant__ CombineParams p) {
  constexpr float kNegInf = -__builtin_huge_valf();
  const int64_t rows = p.batch * p.seqlen;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= rows * p.heads) return;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  // Head-major items: the split forward's partials of one head are contiguous rows.
  const int64_t head = item / rows, row = item % rows;
  const int64_t b = row / p.seqlen, i = row % p.seqlen;
  auto at = [&](const CombineStrides& st) { return b * st.batch + i * st.row + head * st.head; };
  const float* lse_s = p.lse_partial + at(p.lp);

  float m = kNegInf;
  for (int64_t s = lane; s < p.splits; s += 32) m = fmaxf(m, lse_s[s * p.lp.split]);
  m = warp_max(m);
  float sum = 0.0f;
  if (m != kNegInf) {
    for (int64_t s = lane; s < p.splits; s += 32) sum += __expf(lse_s[s * p.lp.split] - m);
  }
  sum = warp_sum(sum);
  const float lse = sum > 0.0f ? m + __logf(sum) : kNegInf;

  // The splits' weights exp(L_s − L), kChunk at a time, in this warp's shared memory; the
  // weighted sum then has kUnroll independent partial loads in flight a lane.
  constexpr int kChunk = 128, kUnroll = 8;
  __shared__ float weights_all[kWarpsPerBlock][kChunk];
  float* weights = weights_all[threadIdx.x / 32];
  const float* o_s = p.out_partial + at(p.op);
  T* out = static_cast<T*>(p.out) + at(p.o);
  constexpr int kCols = kVec ? 4 : 1;  // kVec: 16-byte partial loads, 4-element stores
  // Every lane takes part in each pass over the columns (the warp fills the weights together).
  for (int64_t c0 = 0; c0 < p.head_dim; c0 += 32 * kCols) {
    const int64_t c = c0 + lane * kCols;
    const bool active = c < p.head_dim;
    float acc[kCols] = {};
    for (int64_t s0 = 0; lse != kNegInf && s0 < p.splits; s0 += kChunk) {
      const int n = static_cast<int>(min(p.splits - s0, int64_t{kChunk}));
      __syncwarp();
      for (int s = lane; s < n; s += 32) weights[s] = __expf(lse_s[(s0 + s) * p.lp.split] - lse);
      __syncwarp();
      const float* x0 = o_s + s0 * p.op.split + c;
      for (int s = 0; s < n; s += kUnroll) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          if (s + u >= n || !active) break;
          const float w = weights[s + u];
          const float* x = x0 + (s + u) * p.op.split;
          if constexpr (kVec) {
            const float4 x4 = *reinterpret_cast<const float4*>(x);
            acc[0] += w * x4.x;
            acc[1] += w * x4.y;
            acc[2] += w * x4.z;
            acc[3] += w * x4.w;
          } else {
            acc[0] += w * x[0];
          }
        }
      }
    }
    if (!active) continue;
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
  if (lane == 0 && p.lse != nullptr) p.lse[at(p.l)] = lse;
}

template <class T>
void launch_typed(const CombineParams& p, cudaStream_t stream) {
  const int64_t warps = p.batch * p.seqlen * p.heads;
  if (warps == 0) return;
  const auto blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  // 16-byte partial loads and 4-element stores where every row of both is aligned for them.
  auto aligned = [](const void* ptr, size_t bytes, std::initializer_list<int64_t> strides) {
    bool ok = reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
    for (int64_t s : strides) ok = ok && s % 4 == 0;
    return ok;
  };
  const bool vec = p.head_dim % 4 == 0 &&
                   aligned(p.out_partial, 16, {p.op.split, p.op.batch, p.op.row, p.op.head}) &&
                   aligned(p.out, 4 * sizeof(T), {p.o.batch, p.o.row, p.o.head});
  if (vec) {
    combine_kernel<T, true><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p);
  } else {
    combine_kernel<T, false><<<blocks, 32 * kWarpsPerBlock, 0, stream>>>(p);
  }
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
  // The decode kernel's partials: slot (split · heads_q + head) · (batch · seqlen_q) + b · seqlen_q
  // + i, rows of head_dim_v floats; out and lse as the forward's (padded batch).
  CombineParams c;
  c.dtype = p.dtype;
  c.device = p.device;
  c.splits = p.splits;
  c.batch = p.batch;
  c.seqlen = p.seqlen_q;
  c.heads = p.heads_q;
  c.head_dim = p.head_dim_v;
  const int64_t rows = p.batch * p.seqlen_q;
  c.lse_partial = p.lse_partial;
  c.lp = {p.heads_q * rows, p.seqlen_q, 1, rows};
  c.out_partial = p.out_partial;
  c.op = {c.lp.split * p.head_dim_v, c.lp.batch * p.head_dim_v, p.head_dim_v, c.lp.head * p.head_dim_v};
  c.out = p.out;
  c.o = {0, p.out_stride.batch, p.out_stride.row, p.out_stride.head};
  c.lse = p.lse;
  c.l = {0, p.lse_batch_stride, 1, p.lse_head_stride};
  launch_combine(c, stream);
}

}  // namespace flashattn::detail::cuda
