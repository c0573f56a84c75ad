// The Ampere kernels' tiles against the shared memory of the GPUs the README names: each head
// dim's chain (src/cuda/sm80/fwd_tile.h, bwd_tile.h) must hold a tile that fits an A100 (166,912
// bytes a block) and an sm_86/89/120 part (101,376), except where the README says the call is
// refused there (tests/gpu_support.h). The GPU suite runs the same calls under these limits emulated; this test keeps
// the tile tables and the README's list of refusals from drifting apart without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/sm80/bwd_tile.h"
#include "cuda/sm80/fwd_tile.h"
#include "gpu_support.h"

namespace {

using namespace flashattn::detail::cuda;

constexpr long long kA100 = fa_test::kA100SmemLimit, kSm86 = fa_test::kSm86SmemLimit;
constexpr size_t kElem = 2;  // fp16 and bf16

template <class... Tiles>
long long smallest_bwd(TileChain<Tiles...>) {
  return std::min({static_cast<long long>(Tiles::template smem_bytes<uint16_t>())...});
}

template <class... Tiles>
long long smallest_fwd(TileChain<Tiles...>) {
  return std::min({static_cast<long long>(Tiles::kSmemElems * kElem)...});
}

// Tiles of a chain come largest first, so that the launcher's first fit is the largest fit.
template <class Last>
bool descending_bwd(TileChain<Last>) {
  return true;
}
template <class First, class Second, class... Rest>
bool descending_bwd(TileChain<First, Second, Rest...>) {
  return First::template smem_bytes<uint16_t>() > Second::template smem_bytes<uint16_t>() &&
         descending_bwd(TileChain<Second, Rest...>{});
}

template <int kHeadDim>
void check_head_dim() {
  SCOPED_TRACE("head dim " + std::to_string(kHeadDim));
  const long long bwd = smallest_bwd(typename BwdTiles<kHeadDim>::type{});
  const long long dq = static_cast<long long>(DqTile<kHeadDim>::kSmemElems * kElem);
  EXPECT_TRUE(descending_bwd(typename BwdTiles<kHeadDim>::type{}));
  for (bool mods : {false, true}) {
    const long long fwd = mods ? smallest_fwd(typename FwdTiles<kHeadDim, true>::type{})
                               : smallest_fwd(typename FwdTiles<kHeadDim, false>::type{});
    EXPECT_LE(fwd, kSm86) << "every forward runs on a 99 KB part";
  }
  // A100: every backward; the deterministic one (the dQ kernel) up to d 192.
  EXPECT_LE(bwd, kA100);
  EXPECT_EQ(dq <= kA100, kHeadDim <= 192);
  // sm_86/89/120: every backward but d 256; the deterministic one up to d 96.
  EXPECT_EQ(bwd <= kSm86, kHeadDim != 256);
  EXPECT_EQ(dq <= kSm86, kHeadDim <= 96);
  // The rule the GPU suite asserts call by call (tests/gpu_support.h) says the same.
  for (long long limit : {kA100, kSm86}) {
    EXPECT_EQ(bwd <= limit, !fa_test::backward_refused(limit, kHeadDim, false)) << limit;
    EXPECT_EQ(bwd <= limit && dq <= limit, !fa_test::backward_refused(limit, kHeadDim, true))
        << limit;
  }
}

TEST(TileLimits, EveryHeadDimFitsTheGpusTheReadmeNames) {
  check_head_dim<32>();
  check_head_dim<64>();
  check_head_dim<96>();
  check_head_dim<128>();
  check_head_dim<160>();
  check_head_dim<192>();
  check_head_dim<224>();
  check_head_dim<256>();
}

}  // namespace
