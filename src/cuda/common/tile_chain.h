// A kernel's tiles for one head dim, largest first, and the pick of the first that fits: the
// Ampere tiles are sized for Hopper's 227 KB of shared memory a block, and an A100 (166,912
// bytes) or an sm_86/89/120 part (101,376) takes a smaller one where it must.
#pragma once

namespace flashattn::detail::cuda {

template <class... Tiles>
struct TileChain {};

// launch(Tile{}) for the first Tile of the chain with fits(Tile{}), or for the last one (whose
// launch then reports that it does not fit).
template <class Tile, class... Rest, class Fits, class Launch>
void launch_first_fitting(TileChain<Tile, Rest...>, Fits&& fits, Launch&& launch) {
  if constexpr (sizeof...(Rest) > 0) {
    if (!fits(Tile{})) return launch_first_fitting(TileChain<Rest...>{}, fits, launch);
  }
  launch(Tile{});
}

}  // namespace flashattn::detail::cuda
