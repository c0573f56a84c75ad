// Tile tuning harness for the sm80 forward kernel (llm.c style): instantiates the production
// kernel (src/cuda/sm80/flash_fwd_kernel.cuh, included, never copied) with several tile shapes,
// checks each against the production tile's output on the same random inputs, and times them with
// CUDA events in turns (bench/tune_common.cuh).
//
// Versions and what they measured live in docs/tuning.md.
// build: nvcc -std=c++17 -O3 -arch=sm_90a -Iinclude -Isrc bench/tune_fwd.cu -o tune_fwd
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/sm80/flash_fwd_kernel.cuh"
#include "tune_common.cuh"

using namespace flashattn;
using namespace flashattn::detail;
using namespace flashattn::detail::cuda;

template <class Tile>
void launch(const AttentionParams& p) {
  auto kernel = flash_fwd_kernel<__nv_bfloat16, Tile, false, /*kDecode=*/false>;
  const size_t smem = Tile::kSmemElems * 2;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  dim3 grid(unsigned((p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM), unsigned(p.heads_q), unsigned(p.batch));
  kernel<<<grid, Tile::kThreads, smem>>>(p);
  CHECK(cudaGetLastError());
}

// kSwizzle: the swizzled shared rows (cuda/common/smem_layout.h) instead of padded ones.
template <int D, int M, int N, int W, bool kSwizzle = false>
Variant variant(const char* name) {
  return Variant{name, &launch<FwdTile<D, M, N, W, /*kKeyWarps=*/1, kSwizzle>>};
}

// tune_fwd [all|prod|swizzle]: every tile shape; only the production tile of each head dim (for
// A/B runs of two kernel versions built from two source trees); or the production tile with
// padded and with swizzled shared rows (the decode kernel's layout at d 64 and 128).
int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  if (mode == "swizzle") {
    sweep<256>({variant<256, 64, 64, 4>("64x64 w4 (prod)"),
                variant<256, 64, 64, 4, true>("64x64 w4 swizzled")});
    sweep<128>({variant<128, 128, 64, 4>("128x64 w4 (prod)"),
                variant<128, 128, 64, 4, true>("128x64 w4 swizzled")});
    sweep<64>({variant<64, 128, 128, 4>("128x128 w4 (prod)"),
               variant<64, 128, 128, 4, true>("128x128 w4 swizzled")});
    return 0;
  }
  const bool prod_only = mode == "prod";
  auto pick = [&](std::vector<Variant> v) {
    if (prod_only) v.resize(1);
    return v;
  };
  sweep<256>(pick({variant<256, 64, 64, 4>("64x64 w4 (prod)"), variant<256, 128, 64, 8>("128x64 w8"),
                   variant<256, 128, 32, 8>("128x32 w8"), variant<256, 64, 32, 4>("64x32 w4")}));
  sweep<128>(pick({variant<128, 128, 64, 4>("128x64 w4 (prod)"), variant<128, 128, 32, 4>("128x32 w4"),
                   variant<128, 128, 64, 8>("128x64 w8"), variant<128, 128, 128, 8>("128x128 w8"),
                   variant<128, 64, 64, 4>("64x64 w4")}));
  sweep<64>(pick({variant<64, 128, 128, 4>("128x128 w4 (prod)"), variant<64, 128, 64, 4>("128x64 w4"),
                  variant<64, 128, 128, 8>("128x128 w8"), variant<64, 64, 128, 4>("64x128 w4")}));
  return 0;
}
