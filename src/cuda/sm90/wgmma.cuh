// Warpgroup-level building blocks of the sm90 kernels: the 128-byte-swizzled shared-memory tile
// layout that wgmma reads, its matrix descriptors, the cp.async loader that writes it, and the
// fence / commit / wait of the asynchronous tensor-core instructions (PTX ISA, "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate"). Compiled for every target; the instructions
// themselves exist only in the sm_90a pass (__CUDA_ARCH_FEAT_SM90_ALL).
//
// Tile layout ("Swizzled128"): a (rows × cols) tile of 16-bit elements, cols a multiple of 64, is
// stored as cols / 64 column blocks of (rows × 64) elements, one 128-byte line a row. Inside each
// block the 16-byte chunk c of row r sits at chunk c ^ (r % 8): eight consecutive rows then cover
// all 32 banks for any chunk, and 8-row groups (1024 bytes) are the swizzle atoms wgmma expects.
// A tile must start on a 1024-byte boundary.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/mma.cuh"
#include "cuda/sm90/wgmma_ops.cuh"

namespace flashattn::detail::cuda::sm90 {

constexpr int kWarpgroupThreads = 128;

// Byte offset of element (row, col) in a Swizzled128 tile of kRows rows; col a multiple of 8.
template <int kRows>
__device__ __forceinline__ uint32_t swizzled_offset(int row, int col) {
  const int block = col / 64, chunk = (col % 64) / 8;
  return static_cast<uint32_t>(block * kRows * 128 + row * 128 + ((chunk ^ (row % 8)) * 16));
}

// A (kRows × kCols) tile of a row-major operand → Swizzled128 shared memory, 16 bytes a thread per
// step; rows ≥ rows_valid and columns ≥ cols_valid are zero-filled.
template <int kThreads, int kRows, int kCols, class T>
__device__ __forceinline__ void load_swizzled_async(T* smem, const T* gmem, int64_t row_stride,
                                                    int64_t rows_valid, int cols_valid) {
  constexpr int kChunksPerRow = kCols / 8;
  static_assert(kCols % 64 == 0 && kThreads % kChunksPerRow == 0, "whole rows per step");
  constexpr int kRowStep = kThreads / kChunksPerRow;
  static_assert(kRowStep % 8 == 0, "a thread keeps its swizzle phase");
  const int row0 = static_cast<int>(threadIdx.x) / kChunksPerRow;
  const int col = (static_cast<int>(threadIdx.x) % kChunksPerRow) * 8;
  unsigned char* dst = reinterpret_cast<unsigned char*>(smem) + swizzled_offset<kRows>(row0, col);
  const T* src = gmem + row0 * row_stride + col;
#pragma unroll
  for (int i = 0; i < (kRows + kRowStep - 1) / kRowStep; ++i) {
    const int row = row0 + i * kRowStep;
    if (kRows % kRowStep != 0 && row >= kRows) break;
    const bool valid = row < rows_valid && col < cols_valid;
    cp_async_16(dst + i * kRowStep * 128, valid ? src : gmem, valid);
    src += kRowStep * row_stride;
  }
}

// Matrix descriptor of a Swizzled128 operand (PTX ISA, "Matrix Descriptor Format"): start address,
// leading and stride byte offsets (16-byte units), swizzle mode 1 = 128 bytes.
//   K-major (A, or B stored [n][k]): 8-row groups 1024 bytes apart; the leading offset is unused.
//   N-major (B stored [k][n], read transposed): 8-row groups of k 1024 bytes apart (stride), and
//   64-column blocks of n block_bytes apart (leading).
__device__ __forceinline__ uint64_t make_desc(const void* smem, uint32_t leading_bytes) {
  const uint64_t addr = smem_address(smem);
  return ((addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(leading_bytes >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Pins accumulator registers at this point of the program: the compiler may not move their reads
// or writes across it, so none touches a register that an in-flight wgmma still owns.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int M, int N>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[M][N]) {
#pragma unroll
  for (int i = 0; i < M; ++i) {
#pragma unroll
    for (int j = 0; j < N; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  }
}

// Shared memory written by ordinary stores or cp.async, read next by wgmma (the async proxy):
// each writing thread fences before the barrier that publishes the tile.
__device__ __forceinline__ void fence_async_shared() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

}  // namespace flashattn::detail::cuda::sm90
