// The causal/local window in block terms, shared by the sm80 and sm90 kernels: which key blocks a
// query block sees, and what a warp needs to mask its S fragments of one (query block, key block)
// pair.
// Windows are bottom-right aligned: key j is on row i's diagonal at j = i + seqlen_k − seqlen_q.
#pragma once

#include <cstdint>

#include "common/params.h"

namespace flashattn::detail::cuda {

// The key blocks [first, end) of kBlockN keys that some row of the query rows [m0, m0 + block_m)
// sees under the causal/local window (bottom-right aligned).
struct BlockRange {
  int first;
  int end;
};

__device__ __forceinline__ BlockRange visible_key_blocks(const AttentionParams& p,
                                                         const SequenceInfo& seq, int64_t m0,
                                                         int block_m, int block_n) {
  const int64_t diag = seq.seqlen_k - seq.seqlen_q;
  const int64_t m_last = min(m0 + block_m, seq.seqlen_q) - 1;
  int64_t n_end = seq.seqlen_k, n_begin = 0;
  if (p.window_right >= 0) n_end = min(n_end, m_last + diag + p.window_right + 1);
  if (p.window_left >= 0) n_begin = max(int64_t{0}, m0 + diag - p.window_left);
  const int first = static_cast<int>(n_begin / block_n);
  return {first, n_end > n_begin ? static_cast<int>((n_end + block_n - 1) / block_n) : first};
}

// Where a warp's S fragments sit in the (query block × key block) tile, and what the mask needs.
struct ScoreGeometry {
  int row0;        // first row of the warp's fragments, relative to m0
  int col0;        // first column, relative to n0
  int diag_local;  // column (relative to n0) of the diagonal of row m0
  int keys_local;  // seqlen_k − n0, clamped
  int left, right; // window bounds, "unbounded" clamped out of reach
  bool need_mask;
};

__device__ __forceinline__ ScoreGeometry score_geometry(const AttentionParams& p,
                                                        const SequenceInfo& seq, int64_t m0,
                                                        int64_t n0, int block_m, int block_n,
                                                        int row0, int col0) {
  constexpr int64_t kFar = int64_t{1} << 30;
  auto clamp32 = [](int64_t x) { return static_cast<int>(max(-kFar, min(kFar, x))); };
  const int64_t diag = seq.seqlen_k - seq.seqlen_q;
  const int64_t m_last = min(m0 + block_m, seq.seqlen_q) - 1;
  ScoreGeometry g;
  g.row0 = row0;
  g.col0 = col0;
  g.diag_local = clamp32(m0 + diag - n0);
  g.keys_local = clamp32(seq.seqlen_k - n0);
  g.right = p.window_right >= 0 ? clamp32(p.window_right) : static_cast<int>(kFar);
  g.left = p.window_left >= 0 ? clamp32(p.window_left) : static_cast<int>(kFar);
  g.need_mask = n0 + block_n > seq.seqlen_k ||
                (p.window_right >= 0 && n0 + block_n - 1 > m0 + diag + p.window_right) ||
                (p.window_left >= 0 && n0 < m_last + diag - p.window_left);
  return g;
}

}  // namespace flashattn::detail::cuda
