// The rows of a varlen call that belong to no sequence (params.h, total_q): past
// cu_seqlens_q[batch] in out and dq, past cu_seqlens_k[batch] in dk and dv. The forward writes
// them as zeros with LSE −inf, the backward's gradients as zeros, so that a caller whose packed
// tensors are longer than its sequences (padding for a CUDA graph, say) never reads stale memory.
// The end of the last sequence is read on the device (the host may not know it), so one small
// launch a varlen call does the writing; where the tails are empty its blocks return at once.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/check.h"
#include "cuda/dispatch.h"

namespace flashattn::detail::cuda {
namespace {

constexpr int kThreads = 128, kMaxBlocks = 128;

struct TailOperand {
  uint16_t* data = nullptr;  // fp16 or bf16: zero is the all-zero bit pattern either way
  OperandStrides stride;
  const int32_t* end = nullptr;  // &cu_seqlens[batch]: the first row past every sequence
  int64_t rows = 0, heads = 0, dim = 0;
  float* lse = nullptr;  // forward only: (heads, rows), row stride 1
  int64_t lse_head_stride = 0;
};

struct TailParams {
  TailOperand op[3];  // forward: out (with its LSE); backward: dq, dk, dv
};

// Block (x, y) zeroes rows x, x + gridDim.x, … of the tail of operand y, each head's dim
// elements spread over the threads.
__global__ void __launch_bounds__(kThreads) varlen_tail_kernel(const __grid_constant__ TailParams p) {
  const TailOperand& t = p.op[blockIdx.y];
  if (t.data == nullptr) return;
  const int64_t end = *t.end;  // a negative one (trusted bounds, bad values) writes no row twice
  for (int64_t r = (end > 0 ? end : 0) + blockIdx.x; r < t.rows; r += gridDim.x) {
    for (int64_t h = 0; h < t.heads; ++h) {
      uint16_t* row = t.data + r * t.stride.row + h * t.stride.head;
      for (int64_t c = threadIdx.x; c < t.dim; c += kThreads) row[c] = 0;
    }
    if (t.lse != nullptr) {
      for (int64_t h = threadIdx.x; h < t.heads; h += kThreads) {
        t.lse[h * t.lse_head_stride + r] = -__builtin_huge_valf();
      }
    }
  }
}

}  // namespace

void write_varlen_tails(const AttentionParams& p, bool backward, cudaStream_t stream) {
  if (!p.is_varlen) return;
  TailParams t;
  auto operand = [&](void* data, const OperandStrides& st, const int32_t* cu, int64_t rows,
                     int64_t heads, int64_t dim) {
    TailOperand o;
    if (rows > 0) {
      o.data = static_cast<uint16_t*>(data);
      o.stride = st;
      o.end = cu + p.batch;
      o.rows = rows;
      o.heads = heads;
      o.dim = dim;
    }
    return o;
  };
  if (backward) {
    t.op[0] = operand(p.dq, p.dq_stride, p.cu_seqlens_q, p.total_q, p.heads_q, p.head_dim);
    t.op[1] = operand(p.dk, p.dk_stride, p.cu_seqlens_k, p.total_k, p.heads_kv, p.head_dim);
    t.op[2] = operand(p.dv, p.dv_stride, p.cu_seqlens_k, p.total_k, p.heads_kv, p.head_dim_v);
  } else {
    t.op[0] = operand(p.out, p.out_stride, p.cu_seqlens_q, p.total_q, p.heads_q, p.head_dim_v);
    if (t.op[0].data != nullptr) {
      t.op[0].lse = p.lse;
      t.op[0].lse_head_stride = p.lse_head_stride;
    }
  }
  int64_t rows = 0;
  for (const TailOperand& o : t.op) rows = o.rows > rows ? o.rows : rows;
  if (rows == 0) return;
  const dim3 grid(static_cast<unsigned>(rows < kMaxBlocks ? rows : kMaxBlocks), backward ? 3 : 1);
  varlen_tail_kernel<<<grid, kThreads, 0, stream>>>(t);
  FLASHATTN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace flashattn::detail::cuda
