// The sm90 forward harnesses' launch (bench/tune_fwd_sm90.cu: tile shapes of the kernel in the
// tree; bench/ab_fwd_sm90.py: versions of the kernel from git, side by side): tensor maps and the
// grid; the sweep itself is bench/tune_common.cuh's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cuda/sm90/tensor_map.h"
#include "tune_common.cuh"

using namespace flashattn;
using namespace flashattn::detail;
using namespace flashattn::detail::cuda;

// Grid of a launch: one block a tile in a (query block, head, batch) grid (the production
// kernel), in a 1D grid (a kernel that walks tiles by blockIdx.x), or a persistent 1D grid of
// kMinBlocks blocks an SM.
enum class Grid { k3d, kTiles, kPersistent };

template <class Tile, Grid kGrid, class Kernel>
void launch_tiles(Kernel kernel, const AttentionParams& p) {
  const int smem = int(Tile::kSmemBytes);
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  sm90::FwdTensorMaps maps;
  if (!sm90::encode_fwd_tensor_maps(p, Tile::kBlockM, Tile::kBlockN, &maps)) {
    std::printf("tensor maps refused\n");
    std::exit(1);
  }
  const long long m_blocks = (p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM;
  const long long tiles = m_blocks * p.heads_q * p.batch;
  static int sms = 0;
  if (sms == 0) CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  if (kGrid == Grid::k3d) {
    const dim3 grid(unsigned(m_blocks), unsigned(p.heads_q), unsigned(p.batch));
    kernel<<<grid, Tile::kThreads, smem>>>(p, maps);
  } else {
    const long long grid =
        kGrid == Grid::kPersistent ? std::min<long long>(tiles, sms * Tile::kMinBlocks) : tiles;
    kernel<<<unsigned(grid), Tile::kThreads, smem>>>(p, maps);
  }
  CHECK(cudaGetLastError());
}
