// Tensor-map encoding for the sm90 forward (tensor_map.h). cuTensorMapEncodeTiled is a driver
// function: it is taken once through the runtime's driver entry point, so the library does not
// link libcuda itself.
#include "cuda/sm90/tensor_map.h"

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

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
  // A dimension of one element takes any legal stride (varlen's batch, a single head); a
  // broadcast one (stride 0) has no tensor map.
  auto stride = [](int64_t elements, int64_t count) {
    return static_cast<cuuint64_t>(count == 1 ? 16 : elements * 2);
  };
  if ((s.row == 0 && rows > 1) || (s.head == 0 && heads > 1) || (s.batch == 0 && batch > 1)) {
    return false;
  }
  const cuuint64_t strides[3] = {stride(s.row, rows), stride(s.head, heads),
                                 stride(s.batch, batch)};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  return fn(map, type, 4, const_cast<void*>(data), dims, strides, box, unit,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

bool encode_fwd_tensor_maps(const AttentionParams& p, int box_rows_q, int box_rows_kv,
                            FwdTensorMaps* maps) {
  const EncodeTiled fn = encode_function();
  if (fn == nullptr) return false;
  const CUtensorMapDataType type =
      p.dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const int64_t batch = p.is_varlen ? 1 : p.batch;
  const int64_t rows_q = p.is_varlen ? p.total_q : p.seqlen_q;
  const int64_t rows_k = p.is_varlen ? p.total_k : p.seqlen_k;
  return encode(fn, type, p.q, p.q_stride, p.head_dim, rows_q, p.heads_q, batch, box_rows_q,
                &maps->q) &&
         encode(fn, type, p.k, p.k_stride, p.head_dim, rows_k, p.heads_kv, batch, box_rows_kv,
                &maps->k) &&
         encode(fn, type, p.v, p.v_stride, p.head_dim_v, rows_k, p.heads_kv, batch, box_rows_kv,
                &maps->v);
}

}  // namespace flashattn::detail::cuda::sm90
