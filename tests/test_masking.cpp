// Fully masked rows (O = 0, LSE = −inf, zero gradients, never NaN) and large-magnitude logits.
#include <gtest/gtest.h>

#include <cmath>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

// Cases in which some query rows (or all) see no key.
std::vector<Case> masked_cases() {
  std::vector<Case> v;
  auto base = [](const std::string& label, int64_t sq, int64_t sk) {
    Case c;
    c.label = label;
    c.batch = 2;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 32;
    return c;
  };
  Case c = base("causalqlonger", 97, 64);  // rows 0..32 are above the bottom-right diagonal
  c.causal = true;
  v.push_back(c);
  c = base("window00", 50, 30);  // window (0, 0): only the diagonal, which misses 20 rows
  c.window_left = 0;
  c.window_right = 0;
  v.push_back(c);
  c = base("windowright", 40, 10);  // j ≤ i − 30 + 2: rows 0..27 see nothing
  c.window_right = 2;
  c.alibi = Alibi::heads;
  v.push_back(c);
  c = base("windowused", 10, 40);
  c.window_left = 3;
  c.window_right = 1;
  // Sequence 0 uses 5 keys: row i sees i − 8 ≤ j ≤ i − 4 (alignment on the used length), so
  // rows 0..3 see nothing; sequence 1 (40 keys) sees i + 27 ≤ j ≤ i + 31.
  c.seqused_k = {5, 40};
  v.push_back(c);
  c = base("sequsedzero", 33, 40);
  c.seqused_k = {0, 25};
  v.push_back(c);
  c = base("seqlenkzero", 17, 0);
  v.push_back(c);
  c = base("seqlenkzerocausal", 17, 0);
  c.causal = true;
  c.dropout_p = 0.5f;
  v.push_back(c);
  c = base("causalsoftcapdrop", 70, 20);
  c.causal = true;
  c.softcap = 5.0f;
  c.dropout_p = 0.25f;
  v.push_back(c);
  Case vl;
  vl.label = "varlenkzero";
  vl.lens_q = {9, 12, 4};
  vl.lens_k = {0, 20, 3};
  vl.heads_q = 2;
  vl.heads_kv = 1;
  vl.head_dim = 32;
  vl.causal = true;
  v.push_back(vl);
  return for_dtypes(v);
}

// The case really has fully masked rows (else the test would not test them).
void expect_has_empty_rows(const Case& c) {
  Problem p(c);
  const RefForward r = reference_forward(p.spec(), p.q_values(), p.k_values(), p.v_values());
  int64_t n = 0;
  for (char e : r.row_empty) n += e;
  EXPECT_GT(n, 0) << "the case has no fully masked row";
}

class FullyMaskedForward : public ::testing::TestWithParam<Case> {};
TEST_P(FullyMaskedForward, ZeroOutputMinusInfLse) {
  expect_has_empty_rows(GetParam());
  check_forward(GetParam());  // includes: O rows exactly 0, LSE exactly −inf, all else finite
}
INSTANTIATE_TEST_SUITE_P(Masks, FullyMaskedForward, ::testing::ValuesIn(masked_cases()), CaseName());

class FullyMaskedBackward : public ::testing::TestWithParam<Case> {};
TEST_P(FullyMaskedBackward, ZeroGradients) {
  check_backward(GetParam());  // includes: dq rows of masked rows exactly 0, dk/dv finite
}
INSTANTIATE_TEST_SUITE_P(Masks, FullyMaskedBackward, ::testing::ValuesIn(masked_cases()), CaseName());

// ---- Large logits ------------------------------------------------------------------------------
// q, k ~ normal(0, 100²) with head_dim 64 and scale 1/8: |scores| ~ 1e4, so exp overflows unless
// the maximum is subtracted.

std::vector<Case> large_cases() {
  std::vector<Case> v;
  auto base = [](const std::string& label) {
    Case c;
    c.label = label;
    c.batch = 1;
    c.seqlen_q = 80;
    c.seqlen_k = 97;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 64;
    c.qk_scale = 100.0;
    return c;
  };
  v.push_back(base("large"));
  Case c = base("large");
  c.causal = true;
  v.push_back(c);
  c = base("large");
  c.softcap = 50.0f;
  v.push_back(c);
  c = base("large");
  c.alibi = Alibi::heads;
  c.dropout_p = 0.2f;
  v.push_back(c);
  return v;
}

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

void check_large_forward(const Case& c) {
  if (c.dtype == DType::f32) {
    check_forward(c);
    return;
  }
  Problem p(c);
  const ForwardRun f = run_forward(p);
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

void check_large_backward(const Case& c) {
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(99);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);
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

std::vector<Case> large_all_cases() {
  std::vector<Case> v;
  for (DType d : all_dtypes()) {
    for (Case c : large_cases()) {
      c.dtype = d;
      if (d == DType::f16) c.qk_scale = 20.0;  // keep fp16 q·k products in range
      v.push_back(c);
    }
  }
  return v;
}

class LargeLogits : public ::testing::TestWithParam<Case> {};
TEST_P(LargeLogits, Forward) { check_large_forward(GetParam()); }
TEST_P(LargeLogits, Backward) { check_large_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Large, LargeLogits, ::testing::ValuesIn(large_all_cases()), CaseName());

}  // namespace
}  // namespace fa_test
