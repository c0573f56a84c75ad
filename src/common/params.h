// The one plain parameter struct that every implementation (CPU, CUDA) reads. Filled by the API
// layer after validation; all counts are resolved, all strides are in elements.
#pragma once

#include <cstdint>

#include "common/host_device.h"
#include "flashattn/flashattn.h"

namespace flashattn::detail {

// Strides of one (rows, heads, dim) operand. Padded batch: element (b, row, h, d) is at
// b·batch + row·row + h·head + d. Varlen: batch = 0 and the row is cu_seqlens[b] + row.
struct OperandStrides {
  int64_t batch = 0;
  int64_t row = 0;
  int64_t head = 0;
};

struct AttentionParams {
  DType dtype = DType::f16;  // of q, k, v, out, dout, dq, dk, dv
  Device device{};

  const void* q = nullptr;     // (batch, seqlen_q, heads_q, head_dim) or (total_q, heads_q, head_dim)
  const void* k = nullptr;     // (batch, seqlen_k, heads_kv, head_dim) or (total_k, …)
  const void* v = nullptr;     // (batch, seqlen_k, heads_kv, head_dim_v) or (total_k, …)
  void* out = nullptr;         // forward: written; backward: read. Shaped like q with head_dim_v
  float* lse = nullptr;        // (batch, heads_q, seqlen_q) or (heads_q, total_q); may be null in forward
  double* lse_f64 = nullptr;   // float64 inputs (CPU only): the LSE in float64, in place of lse
  const void* dout = nullptr;  // backward: like out
  void* dq = nullptr;          // backward: like q
  void* dk = nullptr;          // backward: like k
  void* dv = nullptr;          // backward: like v

  OperandStrides q_stride, k_stride, v_stride, out_stride, dout_stride, dq_stride, dk_stride,
      dv_stride;
  int64_t lse_batch_stride = 0;  // padded only
  int64_t lse_head_stride = 0;   // the row stride of lse is 1

  int64_t batch = 0;
  int64_t seqlen_q = 0;  // padded: the seqlen; varlen: max over sequences
  int64_t seqlen_k = 0;  // padded: the seqlen; varlen: max over sequences
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t group = 1;  // heads_q / heads_kv: query head h reads kv head h / group
  int64_t head_dim = 0;
  int64_t head_dim_v = 0;

  bool is_varlen = false;
  const int32_t* cu_seqlens_q = nullptr;  // (batch + 1), varlen only
  const int32_t* cu_seqlens_k = nullptr;  // (batch + 1), varlen only
  // Varlen: the rows of the packed q (out, dq) and of a packed k (dk, dv; 0 when k is paged).
  // Rows past the last sequence, [cu_seqlens_q[batch], total_q) and [cu_seqlens_k[batch],
  // total_k), belong to no sequence: they are written as zeros (the LSE as −inf), forward and
  // backward, so that no caller reads stale memory there.
  int64_t total_q = 0;
  int64_t total_k = 0;
  const int32_t* seqused_k = nullptr;     // (batch) or null
  const int32_t* leftpad_k = nullptr;     // (batch) or null: sequence b's keys start at this row
  // Paged k and v (forward; padded or varlen batches): (num_pages, page_size, heads_kv, d); row j
  // of sequence b is row j % page_size of page block_table[b · block_table_stride + j / page_size].
  // k_stride.batch and v_stride.batch are then the strides of a page.
  // On CUDA the table is not read on the host: entries outside [0, num_pages) are clamped into it
  // on the device (a wrong page, never a read out of bounds).
  const int32_t* block_table = nullptr;
  int64_t block_table_stride = 0;
  int64_t page_size = 0;
  int64_t num_pages = 0;

  float scale = 1.0f;       // multiplies Q Kᵀ
  double scale_f64 = 1.0;   // the same scale unrounded: float64 inputs compute with it
  float scale_log2 = 1.0f;  // scale · log2(e)
  float softcap = 0.0f;     // 0 = off
  float softcap_exp2 = 0.0f;  // 2·log2(e) / softcap, at most FLT_MAX: the CUDA kernels' tanh

  // Bottom-right aligned window, −1 = unbounded. causal has been folded in as window_right = 0.
  int64_t window_left = -1;
  int64_t window_right = -1;

  const float* alibi_slopes = nullptr;  // (heads_q) or (batch, heads_q)
  int64_t alibi_batch_stride = 0;       // 0 when the slopes are per head only

  float dropout_p = 0.0f;
  float dropout_scale = 1.0f;          // 1 / (1 − p)
  uint32_t dropout_threshold = 65536;  // keep iff the element's uint16 < threshold
  uint64_t dropout_seed = 0;
  uint64_t dropout_offset = 0;

  // Forward: how many ways to split the keys (0 = the implementation picks, 1 = no split).
  int num_splits = 0;
  // Set by the CUDA forward's plan (cuda/dispatch.h, FwdPlan) for its decode kernel:
  bool pack_gqa = false;          // a tile's rows are (query row, query head of one KV group)
  int splits = 1;                 // > 1: partial results below, merged by the combine kernel
  float* out_partial = nullptr;   // (splits, heads_q, batch · seqlen_q, head_dim_v), fp32
  float* lse_partial = nullptr;   // (splits, heads_q, batch · seqlen_q): split_slot below
  // Or merged in the decode kernel, by the block that finishes a tile's last split: one counter
  // a tile (blockIdx.x / splits + gridDim.x / splits · (blockIdx.y + gridDim.y · blockIdx.z)),
  // zero on entry, left zero.
  int* split_counters = nullptr;

  bool deterministic = false;
  int num_threads = 0;
  void* stream = nullptr;
};

// The merge of attention over disjoint sets of keys (combine(); the split forward's last step).
// Row r of `rows` = batch · seqlen is (b, i) = (r / seqlen, r % seqlen); element (s, b, i, h, c)
// of a tensor is at s·split + b·batch + i·row + h·head + c (strides in elements).
struct CombineStrides {
  int64_t split = 0;
  int64_t batch = 0;
  int64_t row = 0;
  int64_t head = 0;
};

struct CombineParams {
  DType dtype = DType::f32;  // of out
  Device device{};
  int64_t splits = 0, batch = 0, seqlen = 0, heads = 0, head_dim = 0;
  // Each tensor indexed (split, b, i, head[, c]) through its strides, whatever its layout.
  const float* out_partial = nullptr;  // fp32, head_dim contiguous
  CombineStrides op;
  const float* lse_partial = nullptr;  // fp32
  CombineStrides lp;
  void* out = nullptr;  // dtype, head_dim contiguous (split stride unused)
  CombineStrides o;
  float* lse = nullptr;  // fp32 (split stride unused); null: not written
  CombineStrides l;
  int num_threads = 0;
  void* stream = nullptr;
};

// Per-sequence geometry: where sequence b starts and how long it is.
struct SequenceInfo {
  int64_t q_start = 0;  // first row of q (varlen: in the packed tensor)
  int64_t k_start = 0;
  int64_t seqlen_q = 0;
  int64_t seqlen_k = 0;  // after seqused_k and leftpad_k
};

// The slot of (split, query head, batch b, query row i) in the split partials: lse_partial[slot],
// out_partial[slot · head_dim_v …] (padded batches only).
FLASHATTN_HOST_DEVICE int64_t split_slot(const AttentionParams& p, int64_t split, int64_t head,
                                         int64_t b, int64_t i) {
  return (split * p.heads_q + head) * (p.batch * p.seqlen_q) + b * p.seqlen_q + i;
}

FLASHATTN_HOST_DEVICE SequenceInfo sequence_info(const AttentionParams& p, int64_t b) {
  SequenceInfo s;
  if (p.is_varlen) {
    s.q_start = p.cu_seqlens_q[b];
    s.k_start = p.cu_seqlens_k[b];
    s.seqlen_q = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
    s.seqlen_k = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
  } else {
    s.seqlen_q = p.seqlen_q;
    s.seqlen_k = p.seqlen_k;
  }
  if (p.seqused_k != nullptr) {
    // Clamped: on CUDA tensors the values are not checked on the host (the CPU checks them).
    const int64_t used = p.seqused_k[b];
    s.seqlen_k = used < 0 ? 0 : (used < s.seqlen_k ? used : s.seqlen_k);
  }
  if (p.leftpad_k != nullptr) {
    // Keys [pad, seqlen_k) of the sequence's rows (clamped as seqused_k).
    const int64_t pad = p.leftpad_k[b] < 0 ? 0 : (p.leftpad_k[b] < s.seqlen_k ? p.leftpad_k[b] : s.seqlen_k);
    s.k_start += pad;
    s.seqlen_k -= pad;
  }
  return s;
}

// Rows of k, and of dK and dV, that sequence b holds: seqused_k does not shorten them (the rows
// past it get zero gradients).
FLASHATTN_HOST_DEVICE int64_t key_rows(const AttentionParams& p, int64_t b) {
  return p.is_varlen ? int64_t{p.cu_seqlens_k[b + 1]} - p.cu_seqlens_k[b] : p.seqlen_k;
}

// Visible keys of query row i: [first, last] (empty when first > last), bottom-right aligned.
struct KeyRange {
  int64_t first;
  int64_t last;
};

FLASHATTN_HOST_DEVICE KeyRange visible_keys(const AttentionParams& p, int64_t i, int64_t seqlen_q,
                             int64_t seqlen_k) {
  const int64_t diag = i + seqlen_k - seqlen_q;
  KeyRange r{0, seqlen_k - 1};
  if (p.window_left >= 0 && diag - p.window_left > r.first) r.first = diag - p.window_left;
  if (p.window_right >= 0 && diag + p.window_right < r.last) r.last = diag + p.window_right;
  return r;
}

}  // namespace flashattn::detail
