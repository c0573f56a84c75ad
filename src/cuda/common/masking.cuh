// The causal/local window and the score modifications, the one home of both for the sm80 and sm90
// kernels, forward and backward: which key blocks a query block sees, what a warp needs to mask
// its S fragments of one (query block, key block) pair, which keys one row sees, and what
// softmax_scale, softcap and ALiBi make of one score.
// Windows are bottom-right aligned: key j is on row i's diagonal at j = i + seqlen_k − seqlen_q.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/params.h"
#include "cuda/common/mma.cuh"

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

// Whether some key of the block [n0, n0 + block_n) is hidden from some row of [m0, m0 + block_m)
// (past the keys, or outside the window): most blocks need no mask.
__device__ __forceinline__ bool block_needs_mask(const AttentionParams& p, const SequenceInfo& seq,
                                                 int64_t m0, int64_t n0, int block_m,
                                                 int block_n) {
  const int64_t diag = seq.seqlen_k - seq.seqlen_q;
  const int64_t m_last = min(m0 + block_m, seq.seqlen_q) - 1;
  return n0 + block_n > seq.seqlen_k ||
         (p.window_right >= 0 && n0 + block_n - 1 > m0 + diag + p.window_right) ||
         (p.window_left >= 0 && n0 < m_last + diag - p.window_left);
}

__device__ __forceinline__ ScoreGeometry score_geometry(const AttentionParams& p,
                                                        const SequenceInfo& seq, int64_t m0,
                                                        int64_t n0, int block_m, int block_n,
                                                        int row0, int col0) {
  constexpr int64_t kFar = int64_t{1} << 30;
  auto clamp32 = [](int64_t x) { return static_cast<int>(max(-kFar, min(kFar, x))); };
  const int64_t diag = seq.seqlen_k - seq.seqlen_q;
  ScoreGeometry g;
  g.row0 = row0;
  g.col0 = col0;
  g.diag_local = clamp32(m0 + diag - n0);
  g.keys_local = clamp32(seq.seqlen_k - n0);
  g.right = p.window_right >= 0 ? clamp32(p.window_right) : static_cast<int>(kFar);
  g.left = p.window_left >= 0 ? clamp32(p.window_left) : static_cast<int>(kFar);
  g.need_mask = block_needs_mask(p, seq, m0, n0, block_m, block_n);
  return g;
}

// The keys one row of a step sees: columns [first, last] relative to n0, and the column of the
// row's diagonal (ALiBi's distances are measured from it). row: relative to the geometry's m0.
struct RowWindow {
  int diag, first, last;
  __device__ __forceinline__ bool hides(int j) const { return j < first || j > last; }
};

__device__ __forceinline__ RowWindow row_window(const ScoreGeometry& g, int row) {
  const int diag = g.diag_local + row;
  return {diag, diag - g.left, min(diag + g.right, g.keys_local - 1)};
}

// One score of the score-mods variants, from Q Kᵀ: times softmax_scale, through the softcap
// (softcap · tanh(x / softcap)), minus ALiBi's slope · |dist|, dist = the row's diagonal − the key
// (a float, so that a caller can form it from per-row values and constants: no int-to-float
// conversion an element). dcap: the softcap's derivative (1 without one), which the backward
// multiplies into dS. kSoftcap: whether p has a softcap (callers branch once, outside their
// element loops). tanh y = 1 − 2 / (2^(2y·log2 e) + 1): one exp2 and one reciprocal on the
// special-function unit, absolute error ~1e-7, ±1 exactly at ±inf (tanhf and a division by the
// softcap compile to ~30 instructions and a call an element).
template <bool kSoftcap>
__device__ __forceinline__ float modify_score_with(const AttentionParams& p, float x,
                                                   float alibi_slope, float dist, float& dcap) {
  x *= p.scale;
  dcap = 1.0f;
  if constexpr (kSoftcap) {
    const float e = exp2_approx(x * p.softcap_exp2);
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(e + 1.0f));
    const float tc = fmaf(-2.0f, r, 1.0f);
    x = p.softcap * tc;
    dcap = fmaf(-tc, tc, 1.0f);
  }
  return x - alibi_slope * fabsf(dist);
}

// The same with the softcap decided per element (callers whose loops do not branch on it).
__device__ __forceinline__ float modify_score(const AttentionParams& p, float x, float alibi_slope,
                                              float dist, float& dcap) {
  return p.softcap > 0.0f ? modify_score_with<true>(p, x, alibi_slope, dist, dcap)
                          : modify_score_with<false>(p, x, alibi_slope, dist, dcap);
}

// The same terms with tanhf (within an ulp or two) and an integer distance: the sm80-family
// kernels (sm80 forward and backward, decode). The form above raised their register spills when
// compiled for sm_80 (forward d 128 with score mods 0 → 56 bytes, decode d 128 20 → 28 and
// 44 → 64), which is not yet measured on an Ampere GPU.
__device__ __forceinline__ float modify_score_exact(const AttentionParams& p, float x,
                                                    float alibi_slope, int row_diag, int j,
                                                    float& dcap) {
  x *= p.scale;
  dcap = 1.0f;
  if (p.softcap > 0.0f) {
    const float tc = tanhf(x / p.softcap);
    x = p.softcap * tc;
    dcap = 1.0f - tc * tc;
  }
  return x - alibi_slope * static_cast<float>(abs(row_diag - j));
}

// f(std::true_type{}) where p has a softcap, f(std::false_type{}) otherwise: one branch around a
// caller's element loop, for modify_score_with.
template <class F>
__device__ __forceinline__ void with_softcap(const AttentionParams& p, F&& f) {
  if (p.softcap > 0.0f) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

}  // namespace flashattn::detail::cuda
