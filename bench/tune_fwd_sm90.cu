// Tile tuning harness for the sm90 forward kernel, as bench/tune_fwd.cu is for the sm80 one:
// instantiates the production kernel (src/cuda/sm90/flash_fwd_kernel.cuh) with several tile
// shapes, checks each against the first variant's output on the same random inputs (one call
// each into a poisoned output), and times them with CUDA events (median of 11 trials of 5 calls,
// the variants taking turns within a trial; inputs ≥ 64 MiB, larger than L2). Needs an sm_90
// GPU.
//
// Versions and what they measured live in docs/tuning.md.
// build: nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc \
//          bench/tune_fwd_sm90.cu src/cuda/sm90/tensor_map.cu -o tune_fwd_sm90
#include <string>
#include <vector>

#include "cuda/sm90/flash_fwd_kernel.cuh"
#include "tune_fwd_sm90.h"

template <class Tile>
void launch_ws(const AttentionParams& p) {
  launch_tiles<Tile, Grid::k3d>(sm90::flash_fwd_kernel<__nv_bfloat16, Tile, false>, p);
}

// Warp-specialised: N keys a step, S stages, P = ping-pong, C consumer warpgroups.
template <int D, int N, int S, bool P, int C = 2>
Variant ws(const char* name) {
  return Variant{name, &launch_ws<sm90::FwdTile<D, N, S, P, C>>};
}

// The production tile of head dim D (sm90::FwdTileFor).
template <int D>
Variant prod() {
  return Variant{"prod", &launch_ws<sm90::FwdTileFor<D, false>>};
}

// tune_fwd_sm90 [all|prod] [64|128|256]: every variant, or only the production tile, of every
// head dim or of one.
int main(int argc, char** argv) {
  const bool prod_only = argc > 1 && std::string(argv[1]) == "prod";
  auto pick = [&](std::vector<Variant> v) {
    if (prod_only) v.resize(1);
    return v;
  };
  // The first variant of each head dim is the production tile; the rest are the shapes
  // docs/tuning.md compares it with (N keys a step, S stages, ovl: S(i + 1) with P V(i), as every
  // variant now; pp: ping-pong between the consumers).
  const std::string only = argc > 2 ? argv[2] : "";
  if (only.empty() || only == "64")
    sweep<64>(pick({prod<64>(), ws<64, 128, 2, false, 1>("wg1 2/SM n128 s2 ovl")}));
  if (only.empty() || only == "128")
    sweep<128>(pick({prod<128>(), ws<128, 128, 2, false>("n128 s2 ovl")}));
  if (only.empty() || only == "256")
    sweep<256>(pick({prod<256>(), ws<256, 80, 2, true>("n80 s2 ovl pp"),
                     ws<256, 80, 2, false>("n80 s2 ovl")}));
  return 0;
}
