// Tensor-map encoding for the sm90 forward (tensor_map.h). cuTensorMapEncodeTiled is a driver
// function: it is taken once through the runtime's driver entry point, so the library does not
// link libcuda itself.
#include "cuda/sm90/tensor_map.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/dispatch.h"
#include "flashattn/flashattn.h"

namespace flashattn::detail::cuda::sm90 {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_function() {
  static const EncodeTiled fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // leave no sticky error behind for the next call to report
      return static_cast<EncodeTiled>(nullptr);
    }
    return reinterpret_cast<EncodeTiled>(f);
  }();
  return fn;
}

// One operand: data, its strides (elements), its row count and head count.
bool encode(EncodeTiled fn, CUtensorMapDataType type, const void* data, const OperandStrides& s,
            int64_t head_dim, int64_t rows, int64_t heads, int64_t batch, int box_rows,
            CUtensorMap* map) {
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  // A dimension of one element may carry any stride; such a dimension gets the span of the
  // dimensions inside it.
  const cuuint64_t row_bytes = (static_cast<cuuint64_t>(head_dim) * 2 + 15) / 16 * 16;
  const cuuint64_t row_stride = rows == 1 ? row_bytes : static_cast<cuuint64_t>(s.row) * 2;
  const cuuint64_t head_stride = heads == 1 ? row_stride * rows : static_cast<cuuint64_t>(s.head) * 2;
  const cuuint64_t batch_stride = batch == 1 ? head_stride * heads : static_cast<cuuint64_t>(s.batch) * 2;
  const cuuint64_t strides[3] = {row_stride, head_stride, batch_stride};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return fn(map, type, 4, const_cast<void*>(data), dims, strides, box, unit,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

// FLASHATTN_TEST_REQUIRE_TMA=1 (set by tools/gpu_check.sh for the native Hopper run): a layout
// the driver refuses is an error instead of a quiet fall back to the sm80 kernel, so that the
// tests show which calls the sm90 kernel did not serve.
static bool refused(const char* what) {
  static const bool strict = env_flag("FLASHATTN_TEST_REQUIRE_TMA");
  if (strict) {
    throw ::flashattn::Error(std::string("flashattn: the driver refused the TMA tensor map of ") + what +
                " (FLASHATTN_TEST_REQUIRE_TMA is set)");
  }
  return false;
}

bool encode_fwd_tensor_maps(const AttentionParams& p, int box_rows_q, int box_rows_kv,
                            FwdTensorMaps* maps) {
  const EncodeTiled fn = encode_function();
  if (fn == nullptr) return refused("q, k and v (no cuTensorMapEncodeTiled in the driver)");
  const CUtensorMapDataType type =
      p.dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const int64_t batch = p.is_varlen ? 1 : p.batch;
  const int64_t rows_q = p.is_varlen ? p.total_q : p.seqlen_q;
  const int64_t rows_k = p.is_varlen ? p.total_k : p.seqlen_k;
  // The driver takes no empty dimension (a call without keys; the sm80 kernel writes its zeros).
  if (rows_q == 0 || rows_k == 0) return false;
  // A broadcast (stride-0) dimension has no tensor map: not a refusal.
  auto broadcast = [](const OperandStrides& s, int64_t rows, int64_t heads, int64_t batch) {
    return (s.row == 0 && rows > 1) || (s.head == 0 && heads > 1) || (s.batch == 0 && batch > 1);
  };
  if (broadcast(p.q_stride, rows_q, p.heads_q, batch) ||
      broadcast(p.k_stride, rows_k, p.heads_kv, batch) ||
      broadcast(p.v_stride, rows_k, p.heads_kv, batch)) {
    return false;
  }
  if (!encode(fn, type, p.q, p.q_stride, p.head_dim, rows_q, p.heads_q, batch, box_rows_q,
              &maps->q)) {
    return refused("q");
  }
  if (!encode(fn, type, p.k, p.k_stride, p.head_dim, rows_k, p.heads_kv, batch, box_rows_kv,
              &maps->k)) {
    return refused("k");
  }
  if (!encode(fn, type, p.v, p.v_stride, p.head_dim_v, rows_k, p.heads_kv, batch, box_rows_kv,
              &maps->v)) {
    return refused("v");
  }
  return true;
}

}  // namespace flashattn::detail::cuda::sm90
