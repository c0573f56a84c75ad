// Shared-memory tiles of the sm80 kernels: global → shared copies with cp.async, and one warp's
// share of a matrix product whose operands both sit in shared memory.
#pragma once

#include <cstdint>

#include "cuda/common/mma.cuh"
#include "cuda/common/smem_layout.h"

namespace flashattn::detail::cuda {

// x, through a move the compiler cannot see through: a value derived from it each main-loop step
// is computed there, not hoisted out of the loop. The swizzled column of each unrolled fragment
// read (col ^ key) would otherwise be hoisted, one register each (the 32-row decode tile at d 128
// spilled 176 bytes, not 40).
__device__ __forceinline__ int opaque(int x) {
  int y;
  asm volatile("mov.b32 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}

// A (kRows × kCols) tile whose rows are not evenly strided (a paged cache, packed query heads)
// → shared memory (smem_index<kPitch, kSwizzle>), 16 bytes a thread per step: row r
// (< rows_valid) starts at row_ptr(r). Rows ≥ rows_valid and columns ≥ cols_valid are
// zero-filled and row_ptr is not called for them (their copies name `any`, a valid address, and
// read nothing).
template <int kThreads, int kRows, int kCols, int kPitch, bool kSwizzle = false, class T,
          class RowPtr>
__device__ __forceinline__ void load_rows_async_indexed(T* smem, RowPtr row_ptr, const T* any,
                                                        int rows_valid, int cols_valid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    const int c = static_cast<int>(threadIdx.x) + i * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    const int row = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool valid = row < rows_valid && col < cols_valid;
    const T* src = valid ? row_ptr(row) + col : any;
    cp_async_16(smem + smem_index<kPitch, kSwizzle>(row, col), src, valid);
  }
}

// A (kRows × kCols) tile of a row-major operand (row stride in elements) → shared memory
// (smem_index<kPitch, kSwizzle>), 16 bytes a thread per step; rows ≥ rows_valid and columns
// ≥ cols_valid are zero-filled. kCols is a multiple of 8.
template <int kThreads, int kRows, int kCols, int kPitch, bool kSwizzle = false, class T>
__device__ __forceinline__ void load_rows_async(T* smem, const T* gmem, int64_t row_stride,
                                                int64_t rows_valid, int cols_valid) {
  constexpr int kChunksPerRow = kCols / 8;
  if constexpr (kThreads % kChunksPerRow == 0) {
    // Each thread keeps one column and walks rows: one pointer live, not one per row.
    constexpr int kRowStep = kThreads / kChunksPerRow;
    const int row0 = static_cast<int>(threadIdx.x) / kChunksPerRow;
    const int col = (static_cast<int>(threadIdx.x) % kChunksPerRow) * 8;
    const T* src = gmem + row0 * row_stride + col;
    const int64_t step = kRowStep * row_stride;
#pragma unroll
    for (int i = 0; i < (kRows + kRowStep - 1) / kRowStep; ++i) {
      const int row = row0 + i * kRowStep;
      if (kRows % kRowStep != 0 && row >= kRows) break;
      const bool valid = row < rows_valid && col < cols_valid;
      cp_async_16(smem + smem_index<kPitch, kSwizzle>(row, col), valid ? src : gmem, valid);
      src += step;
    }
  } else {
    load_rows_async_indexed<kThreads, kRows, kCols, kPitch, kSwizzle>(
        smem, [=](int row) { return gmem + row * row_stride; }, gmem,
        static_cast<int>(rows_valid < kRows ? rows_valid : kRows), cols_valid);
  }
}

// acc (kMTiles·16 × kNTiles·8, fp32 fragments) += A (kMTiles·16 × kK) · B (kK × kNTiles·8), both
// operands in shared memory, as one warp's share of a larger product. Pointers are at the
// warp's origin of each operand. Storage order:
//   kATrans = false: A stored [m][k] (row pitch a_pitch);  true: A stored [k][m], read transposed.
//   kBTrans = false: B stored [n][k] (a K or V tile);      true: B stored [k][n], read transposed.
template <class T, int kMTiles, int kNTiles, int kK, bool kATrans, bool kBTrans>
__device__ __forceinline__ void warp_gemm_smem(float (&acc)[kMTiles][kNTiles][4], const T* sA,
                                               int a_pitch, const T* sB, int b_pitch) {
  static_assert(kNTiles % 2 == 0 && kK % 16 == 0, "x4 ldmatrix covers two n8 tiles and one k16");
  const int lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    uint32_t a[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      if constexpr (kATrans) {
        ldmatrix_x4_trans(a[mt], sA + (kk * 16 + (lane / 16) * 8 + lane % 8) * a_pitch + mt * 16 +
                                     ((lane / 8) % 2) * 8);
      } else {
        ldmatrix_x4(a[mt], sA + (mt * 16 + lane % 16) * a_pitch + kk * 16 + (lane / 16) * 8);
      }
    }
#pragma unroll
    for (int np = 0; np < kNTiles / 2; ++np) {
      uint32_t bf[4];
      if constexpr (kBTrans) {
        ldmatrix_x4_trans(bf, sB + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * b_pitch +
                                  np * 16 + (lane / 16) * 8);
      } else {
        ldmatrix_x4(bf, sB + (np * 16 + (lane / 16) * 8 + lane % 8) * b_pitch + kk * 16 +
                            ((lane / 8) % 2) * 8);
      }
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        mma_16816<T>(acc[mt][2 * np], a[mt], bf[0], bf[1]);
        mma_16816<T>(acc[mt][2 * np + 1], a[mt], bf[2], bf[3]);
      }
    }
  }
}

template <int kMTiles, int kNTiles>
__device__ __forceinline__ void zero_fragments(float (&acc)[kMTiles][kNTiles][4]) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
    }
  }
}

}  // namespace flashattn::detail::cuda
