// common/block_schedule.h against brute force over small shapes, every window kind and the
// Hopper backward's block sizes. The GPU kernels lean on two properties that a GPU test only
// samples:
//   - query_blocks_seeing(n) is exactly the set of query blocks with a (row, key) pair that the
//     window lets through, with a key of block n (fewer would drop gradient terms);
//   - the key blocks whose span holds a query block are a contiguous run that ends at
//     last_key_block_seen (the deterministic dQ turns: a key block waits for the ones above it
//     in that run; a gap or a wrong end would leave a turn that never comes, and a hang);
//   - the deterministic grid (det_grid_shape, det_block) runs every (pair, key block) once, and
//     every key block after the ones above it of its pair (a block waits for those; one launched
//     after a block that waits for it could hang the GPU once the grid outgrows a wave).
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/block_schedule.h"

namespace flashattn::detail {
namespace {

bool visible(int64_t i, int64_t j, int64_t seqlen_q, int64_t seqlen_k, int64_t left,
             int64_t right) {
  const int64_t diag_j = i + seqlen_k - seqlen_q;
  return (left < 0 || j >= diag_j - left) && (right < 0 || j <= diag_j + right);
}

struct Shape {
  int64_t seqlen_q, seqlen_k, left, right;
  int block_m, block_n;
  std::string name() const {
    return "q" + std::to_string(seqlen_q) + "_k" + std::to_string(seqlen_k) + "_wl" +
           std::to_string(left) + "_wr" + std::to_string(right) + "_m" + std::to_string(block_m) +
           "_n" + std::to_string(block_n);
  }
};

std::vector<Shape> shapes() {
  std::vector<Shape> v;
  const int64_t lens[] = {1, 5, 63, 64, 65, 97, 128, 129, 200, 385};
  const int64_t windows[] = {-1, 0, 1, 7, 63, 64, 100, 300};
  const int blocks[][2] = {{64, 128}, {64, 64}};
  for (int64_t sq : lens) {
    for (int64_t sk : lens) {
      for (int64_t wl : windows) {
        for (int64_t wr : windows) {
          for (const auto& bl : blocks) v.push_back({sq, sk, wl, wr, bl[0], bl[1]});
        }
      }
    }
  }
  return v;
}

TEST(BlockSchedule, SpansAreExactAndTurnsContiguous) {
  int checked = 0;
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(s.name());
    const int64_t m_blocks = (s.seqlen_q + s.block_m - 1) / s.block_m;
    const int64_t n_blocks = (s.seqlen_k + s.block_n - 1) / s.block_n;
    // holders[m]: the key blocks whose span holds query block m.
    std::vector<std::vector<int64_t>> holders(static_cast<size_t>(m_blocks));
    for (int64_t n = 0; n < n_blocks; ++n) {
      std::set<int64_t> expected;
      for (int64_t i = 0; i < s.seqlen_q; ++i) {
        for (int64_t j = n * s.block_n; j < std::min(s.seqlen_k, (n + 1) * s.block_n); ++j) {
          if (visible(i, j, s.seqlen_q, s.seqlen_k, s.left, s.right))
            expected.insert(i / s.block_m);
        }
      }
      const BlockSpan span = query_blocks_seeing(s.seqlen_q, s.seqlen_k, s.left, s.right,
                                                 n * s.block_n, s.block_m, s.block_n);
      std::set<int64_t> got;
      for (int64_t m = span.begin; m < span.end; ++m) {
        got.insert(m);
        ASSERT_GE(m, 0);
        ASSERT_LT(m, m_blocks);
        holders[static_cast<size_t>(m)].push_back(n);
      }
      ASSERT_EQ(got, expected) << "key block " << n;
    }
    for (int64_t m = 0; m < m_blocks; ++m) {
      const auto& h = holders[static_cast<size_t>(m)];
      if (h.empty()) continue;
      const int64_t last =
          last_key_block_seen(s.seqlen_q, s.seqlen_k, s.right, m * s.block_m, s.block_m, s.block_n);
      ASSERT_EQ(h.back(), last) << "query block " << m;
      for (size_t r = 0; r < h.size(); ++r) {
        ASSERT_EQ(h[h.size() - 1 - r], last - static_cast<int64_t>(r))
            << "query block " << m << ", rank " << r;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);  // the grid is not vacuous
}

TEST(BlockSchedule, DeterministicGridLaunchesTheBlockAboveFirst) {
  int grids = 0;
  for (int64_t pairs : {1, 2, 7, 8, 9, 16, 17, 100}) {
    for (int64_t n_blocks : {1, 2, 3, 13, 64}) {
      for (int64_t group : {1, 3, 8}) {
        SCOPED_TRACE("pairs " + std::to_string(pairs) + ", key blocks " + std::to_string(n_blocks) +
                     ", group " + std::to_string(group));
        const DetGridShape g = det_grid_shape(pairs, n_blocks, group);
        ASSERT_GE(g.x, 1);
        ASSERT_LE(g.x, group);
        ASSERT_EQ(g.y, n_blocks);
        ASSERT_TRUE(det_grid_fits(g));
        // Launch position (x fastest, then y, then z) of every (pair, key block).
        std::map<std::pair<int64_t, int64_t>, int64_t> position;
        int64_t linear = 0;
        for (int64_t z = 0; z < g.z; ++z) {
          for (int64_t y = 0; y < g.y; ++y) {
            for (int64_t x = 0; x < g.x; ++x, ++linear) {
              const DetBlock d = det_block(static_cast<uint32_t>(x), static_cast<uint32_t>(y),
                                           static_cast<uint32_t>(z), static_cast<uint32_t>(g.x),
                                           static_cast<uint32_t>(g.y));
              ASSERT_GE(d.pair, 0);
              if (d.pair >= pairs) continue;  // the last group's tail
              ASSERT_GE(d.n_block, 0);
              ASSERT_LT(d.n_block, n_blocks);
              ASSERT_TRUE(
                  position.emplace(std::make_pair(d.pair, int64_t{d.n_block}), linear).second)
                  << "pair " << d.pair << ", key block " << d.n_block << " twice";
            }
          }
        }
        ASSERT_EQ(static_cast<int64_t>(position.size()), pairs * n_blocks);
        for (const auto& [key, at] : position) {
          if (key.second + 1 < n_blocks) {
            ASSERT_LT(position.at({key.first, key.second + 1}), at)
                << "pair " << key.first << ": key block " << key.second + 1
                << " is launched after key block " << key.second;
          }
        }
        ++grids;
      }
    }
  }
  EXPECT_EQ(grids, 120);
}

// Pairs a group: about two waves of blocks, 1 to kDetPairGroup, and never so few that the groups
// overflow the grid's z.
TEST(BlockSchedule, DeterministicPairGroup) {
  EXPECT_EQ(det_pair_group(16, 32, 132), 8);   // d = 128, 4k: 264 / 32 = 8
  EXPECT_EQ(det_pair_group(16, 64, 132), 4);   // d = 256, 4k
  EXPECT_EQ(det_pair_group(16, 128, 132), 2);  // d = 128, 16k
  EXPECT_EQ(det_pair_group(8, 256, 132), 1);   // d = 256, 16k
  EXPECT_EQ(det_pair_group(8, 4096, 132), 1);
  EXPECT_EQ(det_pair_group(8, 1, 132), kDetPairGroup);
  EXPECT_EQ(det_pair_group(8, 0, 132), kDetPairGroup);
  // Many pairs, long sequences: as many a group as the grid needs.
  EXPECT_EQ(det_pair_group(65535, 4096, 132), 1);
  EXPECT_EQ(det_pair_group(65536, 4096, 132), 2);
  EXPECT_EQ(det_pair_group(3 * 65535 + 1, 4096, 132), 4);
  EXPECT_TRUE(det_grid_fits(det_grid_shape(8 * 65535, 4096, det_pair_group(8 * 65535, 4096, 132))));
  EXPECT_FALSE(
      det_grid_fits(det_grid_shape(8 * 65535 + 1, 4096, det_pair_group(8 * 65535 + 1, 4096, 132))));
  for (int64_t pairs : {1, 100, 65535, 65536, 200000, 524280}) {
    for (int64_t n_blocks : {1, 7, 33, 132, 264, 1000, 65535}) {
      const int64_t g = det_pair_group(pairs, n_blocks, 132);
      EXPECT_GE(g, 1);
      EXPECT_LE(g, kDetPairGroup);
      EXPECT_TRUE(det_grid_fits(det_grid_shape(pairs, n_blocks, g)))
          << pairs << " pairs, " << n_blocks << " key blocks, group " << g;
    }
  }
}

// CUDA's grid limits: the key blocks (y) and the pair groups (z) at most 65535 each.
TEST(BlockSchedule, DeterministicGridLimits) {
  EXPECT_TRUE(det_grid_fits(det_grid_shape(8 * 65535, 65535, 8)));
  EXPECT_FALSE(det_grid_fits(det_grid_shape(8 * 65535 + 1, 1, 8)));
  EXPECT_FALSE(det_grid_fits(det_grid_shape(65536, 1, 1)));
  EXPECT_FALSE(det_grid_fits(det_grid_shape(1, 65536, 8)));
}

// Past the end of the keys, or with no query rows, a key block visits nothing.
TEST(BlockSchedule, EmptyOutsideTheSequences) {
  BlockSpan s = query_blocks_seeing(100, 64, -1, -1, 64, 64, 64);
  EXPECT_EQ(s.begin, s.end);
  s = query_blocks_seeing(0, 64, -1, 0, 0, 64, 64);
  EXPECT_EQ(s.begin, s.end);
  // Causal with more queries than keys: the first rows see no key at all.
  s = query_blocks_seeing(300, 100, -1, 0, 0, 64, 128);
  EXPECT_EQ(s.begin, 200 / 64);
  EXPECT_EQ(s.end, (300 + 63) / 64);
}

}  // namespace
}  // namespace flashattn::detail
