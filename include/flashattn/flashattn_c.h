/* flashattn C API: the C++ API behind a C ABI, for FFI (ctypes, cffi, other languages).
 * Tensors are described as in DLPack: data pointer, dtype, shape and strides in elements, device.
 * Every function returns 0 on success; otherwise flashattn_last_error() gives the message
 * (thread-local, valid until the next call on this thread). */
#ifndef FLASHATTN_FLASHATTN_C_H_
#define FLASHATTN_FLASHATTN_C_H_

#include <stddef.h>
#include <stdint.h>

#if defined(FLASHATTN_BUILDING_C_API)
#define FLASHATTN_C_API __attribute__((visibility("default")))
#else
#define FLASHATTN_C_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* float64: CPU only, computed in float64, with a float64 lse. */
enum flashattn_dtype {
  FLASHATTN_F16 = 0,
  FLASHATTN_BF16 = 1,
  FLASHATTN_F32 = 2,
  FLASHATTN_I32 = 3,
  FLASHATTN_F64 = 4
};
enum flashattn_device_type { FLASHATTN_CPU = 0, FLASHATTN_CUDA = 1 };

typedef struct flashattn_tensor {
  void* data;          /* NULL together with rank 0: "not given" */
  int32_t dtype;       /* enum flashattn_dtype */
  int32_t rank;        /* 0..4 */
  int64_t shape[4];
  int64_t strides[4];  /* in elements */
  int32_t device_type; /* enum flashattn_device_type */
  int32_t device_id;
} flashattn_tensor;

/* The options of flashattn::Options (flashattn.h says what each means), field for field. */
typedef struct flashattn_options {
  double softmax_scale; /* NaN (the default): 1/sqrt(head_dim); any other value is the scale */
  int32_t causal;
  int32_t window_left, window_right; /* -1 = unbounded */
  float softcap;                     /* 0 = off */
  float dropout_p;
  uint64_t dropout_seed, dropout_offset;
  int64_t max_seqlen_q, max_seqlen_k; /* varlen; 0 = derive */
  int32_t deterministic;
  int32_t num_threads;
  void* stream; /* cudaStream_t */
  /* Device scratch of the CUDA backward (split forward): a 16-byte aligned buffer of at least
   * flashattn_backward_workspace_size() (flashattn_forward_workspace_size()) bytes, or NULL: the
   * library's own pool. */
  void* workspace;
  uint64_t workspace_bytes;
  /* Or, with workspace NULL or smaller than the call needs: called with the bytes needed (and
   * workspace_context) for a buffer that stays valid until the work queued on the stream is done
   * (flashattn.h, Workspace). */
  void* (*workspace_allocate)(size_t bytes, void* context);
  void* workspace_context;
  /* Forward only. A paged KV cache: k/v (num_pages, page_size, heads_kv, d), any page_size, and
   * block_table int32 (batch, max_pages): row j of sequence b is row j % page_size of page
   * block_table[b][j / page_size]. NULL: k/v are (batch, seqlen_k, heads_kv, d). */
  const struct flashattn_tensor* block_table;
  /* Forward only: splits of the keys on CUDA (0: the library picks, 1: none, n). */
  int32_t num_splits;
  /* Forward only, int32 (batch): sequence b's keys start at row leftpad_k[b] (a left-padded KV
   * cache; not with block_table). NULL: at row 0. */
  const struct flashattn_tensor* leftpad_k;
  /* Forward only. Nonzero: workspace was zero-filled when allocated and has been the scratch of
   * nothing but this library's forward calls since (flashattn.h, Workspace::zeroed). */
  int32_t workspace_zeroed;
} flashattn_options;

/* Defaults: the scale 1/sqrt(head_dim) (softmax_scale NaN), no mask, no dropout, unbounded
 * window, the library's own workspace. Start every flashattn_options from here: a zeroed struct
 * is not the defaults (softmax_scale 0 and a window of 0 on both sides are values). */
FLASHATTN_C_API void flashattn_default_options(flashattn_options* options);

/* Optional tensors (lse, alibi_slopes, cu_seqlens_q/k, seqused_k) may be NULL. */
FLASHATTN_C_API int flashattn_forward(const flashattn_tensor* q, const flashattn_tensor* k,
                      const flashattn_tensor* v, const flashattn_tensor* out,
                      const flashattn_tensor* lse, const flashattn_tensor* alibi_slopes,
                      const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
                      const flashattn_tensor* seqused_k, const flashattn_options* options);

FLASHATTN_C_API int flashattn_backward(const flashattn_tensor* dout, const flashattn_tensor* q,
                       const flashattn_tensor* k, const flashattn_tensor* v,
                       const flashattn_tensor* out, const flashattn_tensor* lse,
                       const flashattn_tensor* dq, const flashattn_tensor* dk,
                       const flashattn_tensor* dv, const flashattn_tensor* alibi_slopes,
                       const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
                       const flashattn_tensor* seqused_k, const flashattn_options* options);

/* The bytes of workspace that flashattn_backward with the same arguments needs, in *bytes. */
FLASHATTN_C_API int flashattn_backward_workspace_size(
    const flashattn_tensor* dout, const flashattn_tensor* q, const flashattn_tensor* k,
    const flashattn_tensor* v, const flashattn_tensor* out, const flashattn_tensor* lse,
    const flashattn_tensor* dq, const flashattn_tensor* dk, const flashattn_tensor* dv,
    const flashattn_tensor* alibi_slopes, const flashattn_tensor* cu_seqlens_q,
    const flashattn_tensor* cu_seqlens_k, const flashattn_tensor* seqused_k,
    const flashattn_options* options, uint64_t* bytes);

/* The bytes of workspace that flashattn_forward with the same arguments needs, in *bytes (0 but
 * for a CUDA forward that splits the keys). */
FLASHATTN_C_API int flashattn_forward_workspace_size(
    const flashattn_tensor* q, const flashattn_tensor* k, const flashattn_tensor* v,
    const flashattn_tensor* out, const flashattn_tensor* lse, const flashattn_tensor* alibi_slopes,
    const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
    const flashattn_tensor* seqused_k, const flashattn_options* options, uint64_t* bytes);

/* Merges attention over disjoint sets of keys (flashattn.h, combine()): out_partial fp32
 * (splits, rows, heads, d), lse_partial fp32 (splits, heads, rows) -> out (rows, heads, d) fp16,
 * bf16 or fp32 and lse fp32 (heads, rows) (may be NULL). Reads options->stream and num_threads
 * (options may be NULL). */
FLASHATTN_C_API int flashattn_combine(const flashattn_tensor* out_partial,
                                      const flashattn_tensor* lse_partial,
                                      const flashattn_tensor* out, const flashattn_tensor* lse,
                                      const flashattn_options* options);

/* Hands the memory of the library's own workspace pools back to the driver. */
FLASHATTN_C_API int flashattn_release_workspace_pool(void);

FLASHATTN_C_API const char* flashattn_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FLASHATTN_FLASHATTN_C_H_ */
