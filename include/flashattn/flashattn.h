// flashattn: exact attention, FlashAttention-2 algorithm, C++ API.
//
//   O   = softmax(scale · Q Kᵀ [→ softcap] + alibi_bias, masked) · V   (dropout on the probabilities)
//   LSE = log Σ_j exp(scale · Q Kᵀ [→ softcap] + alibi_bias)            (over visible keys, fp32)
//
// A row that sees no key (masked out, or an empty cache) gets O = 0 and LSE = −inf. A NaN in q, k
// or v makes NaN every row it reaches, O and LSE, and the gradients that depend on them, as plain
// attention does (CPU and CUDA alike; flashattn::combine keeps a NaN partial LSE too).
//
// dtypes: fp16 and bf16 (CPU and CUDA) and fp32 (CPU) accumulate in fp32; fp64 (CPU) computes in
// fp64 throughout and its LSE is fp64 too: the float64 path is a reference for gradient checks.
//
// All tensors are non-owning strided views: the caller owns the memory (outputs included), the
// library never allocates for the result. Errors are thrown as flashattn::Error, whose message
// names the argument, what was given and what is allowed; nothing is written before every
// argument has been checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>

#include "flashattn/version.h"

namespace flashattn {

// The one error type of the library.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error about a tensor's layout alone: the call would succeed on a packed copy of the tensor
// (a last dimension that is not contiguous; for the CUDA kernels, a data pointer that is not
// 16-byte aligned, outer strides that are not multiples of 8 elements, a head dim that is not a
// multiple of 8 or head_dim_v != head_dim). Nothing has been written when it is thrown.
class LayoutError : public Error {
 public:
  using Error::Error;
};

// New values are appended: the numbers are those of the C ABI (flashattn_c.h).
enum class DType : uint8_t { f16, bf16, f32, i32, f64 };
enum class DeviceType : uint8_t { cpu, cuda };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU
  friend bool operator==(const Device& a, const Device& b) {
    return a.type == b.type && a.index == b.index;
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

inline constexpr int kMaxRank = 4;

// A strided view: shape and strides in elements (not bytes), as in DLPack and PyTorch.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
  Device device{};

  int64_t size(int dim) const { return shape[dim]; }
  int64_t numel() const;
  bool defined() const { return rank > 0; }
};

// A view of row-major (C-contiguous) memory.
Tensor contiguous_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                       Device device = {});
// A view with explicit strides (in elements).
Tensor strided_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                    std::initializer_list<int64_t> strides, Device device = {});

// Device scratch memory for the CUDA backward, and for a CUDA forward that splits the keys (the
// CPU needs none). Give a buffer, or a callback that returns one, or both (the buffer when it is
// large enough, else the callback), or neither: then the library takes it from a stream-ordered
// memory pool of its own, one per device, that keeps what it has held for the next call
// (release_workspace_pool() hands it back). The device's default pool is never used or changed.
struct Workspace {
  // A device buffer of at least backward_workspace_size() (forward_workspace_size()) bytes,
  // 16-byte aligned, on the tensors' device, that nothing else touches until the work the call
  // enqueues on its stream has run. A smaller one is an error, unless `allocate` is given too.
  void* data = nullptr;
  size_t bytes = 0;
  // Forward only: data was zero-filled when allocated and has been the scratch of nothing but this
  // library's forward calls since (a buffer kept for the decode steps of one stream, say). A
  // short split forward (K and V up to 32 MiB, and few enough tiles and splits) then merges its
  // splits in its one kernel, with counters at the start of the buffer that it leaves zero,
  // rather than in a second kernel: one launch a decode step, not two. The backward refuses it
  // (its scratch starts where the counters are).
  bool zeroed = false;
  // Or: called once per call that needs scratch, on the calling thread, with the number of bytes
  // (> 0); returns such a buffer (null: the call fails with an error). The library never frees
  // it: the memory belongs to the callback's owner, who may reuse it for work enqueued later on
  // the same stream (as PyTorch's caching allocator does).
  void* (*allocate)(size_t bytes, void* context) = nullptr;
  void* context = nullptr;
};

// Everything that is not a tensor of the attention itself.
//
// Shapes, padded batch:  q (batch, seqlen_q, heads_q, head_dim)
//                        k (batch, seqlen_k, heads_kv, head_dim), v (…, head_dim_v)
//                        out (batch, seqlen_q, heads_q, head_dim_v), lse (batch, heads_q, seqlen_q)
//                        lse is fp32, or fp64 for fp64 inputs
// Shapes, varlen (cu_seqlens_q and cu_seqlens_k given):
//                        q (total_q, heads_q, head_dim), k/v (total_k, heads_kv, head_dim[_v])
//                        out (total_q, heads_q, head_dim_v), lse (heads_q, total_q)
//                        Rows past the last sequence (from cu_seqlens_q[batch] in q, out, dq;
//                        from cu_seqlens_k[batch] in k, dk, dv) belong to none: out, dq, dk, dv
//                        are written 0 there and lse −inf.
// Each field has a twin in the C ABI (flashattn_options, flashattn_c.h; tests/test_c_api.cpp
// checks them one by one) and in the Python module (CallOptions, python/flashattn/_ext.cpp): a
// new option goes into all three.
struct Options {
  // Multiplies Q Kᵀ; unset means 1/√head_dim. A double, so that fp64 inputs get it unrounded
  // (the other dtypes use it rounded to float).
  std::optional<double> softmax_scale;
  // Query i sees key j iff j ≤ i + seqlen_k − seqlen_q (bottom-right aligned). Same as
  // window_right = 0; may be combined with window_left.
  bool causal = false;
  // Sliding window, bottom-right aligned: query i sees key j iff
  //   i + seqlen_k − seqlen_q − window_left ≤ j ≤ i + seqlen_k − seqlen_q + window_right.
  // −1 means unbounded on that side.
  int window_left = -1;
  int window_right = -1;
  // scores → softcap · tanh(scores / softcap), applied to scale·QKᵀ before bias and mask; 0 = off.
  float softcap = 0.0f;
  // fp32, shape (heads_q) or (batch, heads_q): adds −slope · |i + seqlen_k − seqlen_q − j|.
  std::optional<Tensor> alibi_slopes;
  // Dropout on the probabilities; the mask is a pure function of (seed, offset, batch index,
  // query head, row, column): see docs/dropout.md and dropout_keep() below.
  float dropout_p = 0.0f;
  uint64_t dropout_seed = 0;
  uint64_t dropout_offset = 0;
  // Varlen: int32 prefix sums of length batch+1 (both or neither).
  std::optional<Tensor> cu_seqlens_q;
  std::optional<Tensor> cu_seqlens_k;
  // int32 (batch): number of keys used by each sequence (≤ its seqlen_k), e.g. a KV cache fill.
  // Checked on the CPU; on CUDA tensors never read on the host (each value is clamped to
  // [0, seqlen_k] on the device).
  std::optional<Tensor> seqused_k;
  // int32 (batch), forward only, not with a paged cache: sequence b's keys are rows
  // [leftpad_k[b], seqlen_k) of its k and v (seqlen_k after seqused_k), a left-padded KV cache
  // (FlashAttention-2's cache_leftpad). Causal and window masks align to the keys that remain.
  // Checked on the CPU; clamped into [0, seqlen_k] on CUDA.
  std::optional<Tensor> leftpad_k;
  // int32 (batch, max_pages_per_seq): k and v are a paged cache, (num_pages, page_size, heads_kv,
  // head_dim) with any page_size ≥ 1, and row j of sequence b is row j % page_size of page
  // block_table[b][j / page_size]. Padded batches: seqlen_k is then max_pages_per_seq · page_size
  // (seqused_k says how many rows each sequence uses). Varlen batches (a prefill over a paged
  // cache): sequence b has cu_seqlens_k[b + 1] − cu_seqlens_k[b] keys, at most the table's
  // capacity, from row 0 of its pages. Forward only, without dropout on CUDA. The CPU checks
  // every entry; on CUDA tensors the table is not read on the host and an entry outside
  // [0, num_pages) is clamped into it on the device.
  std::optional<Tensor> block_table;
  // Forward: split the keys of each sequence this many ways, each split on its own thread blocks,
  // then merge the partial results (split-KV, for decode steps that would not fill the GPU).
  // 0 = the library decides (it splits only for few query rows: a decode step); 1 = no split;
  // n > 1 = n splits (fewer when there are fewer blocks of keys). Needs dropout_p = 0 and a
  // padded batch. The result does not depend on it beyond rounding, and is bit-identical run to
  // run for a given value. The CPU implementation ignores it. CUDA scratch: see Workspace.
  int num_splits = 0;
  // Varlen only: upper bounds of the per-sequence lengths; 0 = derive them from cu_seqlens. On
  // CUDA tensors, with both given, they are trusted and cu_seqlens is not read on the host (no
  // copy, no synchronisation: as FlashAttention-2); with either one 0, cu_seqlens_q and _k are
  // copied to the host and checked, which waits for the stream (and under CUDA graph capture,
  // where that cannot be done, both are required).
  int64_t max_seqlen_q = 0;
  int64_t max_seqlen_k = 0;
  // Backward: bit-identical gradients run to run (the CPU implementation always is).
  bool deterministic = false;
  // CPU worker threads; 0 = std::thread::hardware_concurrency().
  int num_threads = 0;
  // cudaStream_t for CUDA tensors; null = the default stream.
  void* stream = nullptr;
  // Scratch of the CUDA backward and of a split forward; see Workspace.
  Workspace workspace;
};

// out (and lse, if defined) are written. lse is optional for inference; backward needs it.
void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
             const Tensor& lse, const Options& options);

// Gradients of the forward with the same options. dq, dk, dv have the shapes of q, k, v.
// With MQA/GQA, dk/dv are summed over the query heads of each kv head, in place in dk/dv
// (no heads_q-sized copies).
void backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
              const Tensor& dv, const Options& options);

// Bytes of device scratch that forward() with these arguments needs: 0 on the CPU and where the
// forward does not split the keys (Options::num_splits). The same checks as forward().
size_t forward_workspace_size(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Options& options);

// Bytes of device scratch that backward() with these arguments needs (0 on the CPU); the same
// checks as backward(). For a varlen batch whose max_seqlen_q/k are not given, it reads
// cu_seqlens on the host as backward() does.
size_t backward_workspace_size(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Options& options);

// Merges attention computed over disjoint sets of keys (a prefix cache and the rest, several
// devices, the splits of a split forward): split s gave out_s and its lse_s, each normalised over
// its own keys; attention over their union is
//   lse = log Σ_s exp(lse_s),   out = Σ_s exp(lse_s − lse) · out_s,
// with lse = −inf and out = 0 for a row that no split saw a key of. Rows are flattened (a padded
// batch's b · seqlen_q + i, or a varlen batch's token index), as in the varlen forward:
//   out_partial fp32 (splits, rows, heads, head_dim), lse_partial fp32 (splits, heads, rows),
//   out (rows, heads, head_dim) fp16, bf16 or fp32, lse fp32 (heads, rows) or undefined.
// Only options.stream and options.num_threads are read.
void combine(const Tensor& out_partial, const Tensor& lse_partial, const Tensor& out,
             const Tensor& lse, const Options& options = {});

// Hands the memory held by the library's own workspace pools (one per device that has run a
// call that needed scratch without a workspace) back to the driver, once the work queued on it has run.
void release_workspace_pool();

// ---- Dropout ----------------------------------------------------------------------------------
// The mask, element by element, exactly as every implementation (CPU and GPU) draws it. Keeps
// (b, h, i, j) iff dropout_uint16(...) < dropout_keep_threshold(p). Kept values are scaled by
// 1 / (1 − p). See docs/dropout.md for the derivation from Philox4x32-10.
uint32_t dropout_keep_threshold(float dropout_p);
uint16_t dropout_uint16(uint64_t seed, uint64_t offset, int64_t batch_idx, int64_t head_idx,
                        int64_t heads_q, int64_t row, int64_t col);
bool dropout_keep(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch_idx,
                  int64_t head_idx, int64_t heads_q, int64_t row, int64_t col);
// How far a caller must advance dropout_offset after a call so that the next call draws
// independent numbers: one Philox counter block per (batch, query head).
uint64_t dropout_offset_increment(int64_t batch, int64_t heads_q);

// Philox4x32-10 (Salmon et al., SC'11): counter (4 × u32), key (2 × u32) → 4 × u32.
struct Philox4x32Out {
  uint32_t x[4];
};
Philox4x32Out philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                            uint32_t k1);

// ---- Build information ------------------------------------------------------------------------
bool cuda_compiled();        // the library was built with CUDA kernels
int cuda_device_count();     // 0 without CUDA or without a GPU

}  // namespace flashattn
