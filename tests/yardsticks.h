// Judging helpers that a CPU test file and the GPU tests (tests/gpu) both use, kept once here so
// that the GPU tests judge by the same yardstick as the CPU ones. The runners default to the CPU
// library (run_forward, run_backward); the GPU tests pass gpu::run_forward_gpu / run_backward_gpu.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "harness.h"

namespace fa_test {

// ---- Large logits (test_masking.cpp, gpu/test_backward_gpu.cpp) --------------------------------
//
// The forward uses the rule as everywhere (fp32: plain in fp32; fp16/bf16: see below).
//
// The backward takes the saved O (in the dtype) and LSE (fp32) as inputs and recomputes
// P = exp(S − LSE). With |S| ~ 1e4 the fp32 LSE is off by up to ulp(1e4)/2 ≈ 5e-4, i.e. P by a
// relative 5e-4, and D = rowsum(dO ∘ O) carries the rounding of O: errors that no naive
// computation (which never stores LSE or O) makes, but which every implementation of this API
// makes. The yardstick of the backward is therefore the naive computation in fp32 *given the
// saved tensors* (RefSpec::saved_lse_f32, saved_out), and eps includes the fp32 resolution of the
// scores (see check_large_backward): max|ours − ref| ≤ 2·max|that − ref| + eps.
//
// fp16/bf16: a naive computation in the dtype overflows (fp16: scores > 65504) or loses the
// scores entirely (bf16: ulp(1e4) = 64), so the rule's "plain" would be vacuous. The library
// accumulates in fp32, so the yardstick is the naive computation in fp32 on the same inputs, plus
// one rounding of the result to the dtype (eps = u·max|ref|; backward: 2u for the rounding of O).

inline void check_large_forward(const Case& c, ForwardRunner run = run_forward) {
  if (c.dtype == DType::f32) {
    check_forward(c, run);
    return;
  }
  Problem p(c);
  const ForwardRun f = run(p);
  const RefSpec s = p.spec();
  const auto qv = p.q_values(), kv = p.k_values(), vv = p.v_values();
  const RefForward ref = reference_forward(s, qv, kv, vv);
  const RefForward plain32 = plain_forward(s, Precision::f32, qv, kv, vv);
  const auto out = p.rows_values(f.out, s.total_q());
  double m = 1;
  for (double x : ref.out) m = std::max(m, std::fabs(x));
  EXPECT_TRUE(within_rule("out", out, ref.out, plain32.out, 2.0, unit_roundoff(c.dtype) * m));
  EXPECT_TRUE(within_rule("lse", p.lse_values(f.lse), ref.lse, plain32.lse, 2.0,
                          rule_eps(DType::f32, ref.lse)));
}

inline void check_large_backward(const Case& c, BackwardRunner run = run_backward,
                                 ForwardRunner forward = run_forward) {
  Problem p(c);
  const ForwardRun f = forward(p);
  std::mt19937_64 rng(99);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run(p, f, dout);
  const RefSpec s = p.spec();
  RefSpec saved = s;
  saved.saved_lse_f32 = true;
  saved.saved_out = precision_of(c.dtype);
  const auto qv = p.q_values(), kv = p.k_values(), vv = p.v_values();
  const auto dov = p.rows_values(dout, s.total_q());
  const RefGrads ref = reference_backward(s, qv, kv, vv, dov);
  const RefGrads yard = plain_backward(saved, Precision::f32, qv, kv, vv, dov);
  // Resolution of fp32 at the largest |score|: a stored fp32 LSE, and scores computed in fp32,
  // are only known to this absolute accuracy, so P = exp(S − LSE) only to this relative one. The
  // naive yardstick can be exact where the softmax is one-hot (P = exp(0) = 1), the library's
  // recomputation cannot (it works in log2 units, as FlashAttention-2 does): allow two of them.
  double max_score = 0;
  for (int64_t i = 0; i < s.total_q(); ++i) {
    for (int64_t h = 0; h < c.heads_q; ++h) {
      const int64_t hk = h / (c.heads_q / c.heads_kv);
      for (int64_t j = 0; j < s.total_k(); ++j) {
        double dot = 0;
        for (int64_t d = 0; d < c.head_dim; ++d) {
          dot += qv[(i * c.heads_q + h) * c.head_dim + d] * kv[(j * c.heads_kv + hk) * c.head_dim + d];
        }
        max_score = std::max(max_score, std::fabs(dot * s.scale));
      }
    }
  }
  int e;
  std::frexp(max_score, &e);
  const double score_ulp = std::ldexp(1.0, e - 24);
  auto eps = [&](const std::vector<double>& mag) {  // mag: sizes of the summands
    double m = 1;
    for (double x : mag) m = std::max(m, std::fabs(x));
    return (2 * score_ulp + (c.dtype == DType::f32 ? 0.0 : 2 * unit_roundoff(c.dtype))) * m +
           rule_eps(DType::f32, mag);
  };
  EXPECT_TRUE(within_rule("dq", p.rows_values(g.dq, s.total_q()), ref.dq, yard.dq, kGradFactor, eps(ref.dq_mag)));
  EXPECT_TRUE(within_rule("dk", p.rows_values(g.dk, s.total_k()), ref.dk, yard.dk, kGradFactor, eps(ref.dk_mag)));
  EXPECT_TRUE(within_rule("dv", p.rows_values(g.dv, s.total_k()), ref.dv, yard.dv, kGradFactor, eps(ref.dv_mag)));
}

}  // namespace fa_test
