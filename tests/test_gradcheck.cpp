// Finite differences on tiny problems, in float64: central differences of the reference loss
// sum(dO·O) validate both the reference's analytic backward (the oracle itself) and the library's
// dq, dk, dv (fp32 inputs, and float64 inputs held to the oracle's own tolerance).
#include <gtest/gtest.h>

#include <cmath>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

std::vector<Case> tiny_cases() {
  std::vector<Case> v;
  auto base = [](const std::string& label) {
    Case c;
    c.label = label;
    c.batch = 1;
    c.seqlen_q = 4;
    c.seqlen_k = 5;
    c.heads_q = 2;
    c.heads_kv = 2;
    c.head_dim = 4;
    return c;
  };
  v.push_back(base("plain"));
  Case c = base("causal");
  c.causal = true;
  c.seqlen_q = 5;
  c.seqlen_k = 3;  // includes fully masked rows
  v.push_back(c);
  c = base("softcap");
  c.softcap = 1.5f;
  c.qk_scale = 1.5;
  v.push_back(c);
  c = base("alibi");
  c.alibi = Alibi::heads;
  c.batch = 2;
  v.push_back(c);
  c = base("gqa");
  c.heads_q = 4;
  c.heads_kv = 1;
  c.head_dim_v = 3;
  v.push_back(c);
  c = base("window");
  c.window_left = 1;
  c.window_right = 1;
  c.scale = 0.8f;
  v.push_back(c);
  c = base("dropout");
  c.dropout_p = 0.3f;
  c.batch = 2;
  v.push_back(c);
  c = base("varlen");
  c.lens_q = {3, 0, 4};
  c.lens_k = {5, 2, 3};
  c.seqused_k = {4, 2, 1};
  c.causal = true;
  v.push_back(c);
  c = base("all");
  c.heads_q = 4;
  c.heads_kv = 2;
  c.causal = true;
  c.window_left = 2;
  c.softcap = 2.0f;
  c.alibi = Alibi::batch_heads;
  c.dropout_p = 0.25f;
  c.batch = 2;
  v.push_back(c);
  return v;  // fp32: the library's fp32 result is compared with float64 differences
}

std::vector<Case> tiny_f64_cases() {
  std::vector<Case> v = tiny_cases();
  for (Case& c : v) c.dtype = DType::f64;
  return v;
}

// Central differences of loss(x) = sum(dO · O(x)) with respect to every element of q, k or v.
std::vector<double> finite_differences(const RefSpec& s, std::vector<double> q, std::vector<double> k,
                                       std::vector<double> v, const std::vector<double>& dout,
                                       int which) {
  std::vector<double>& x = which == 0 ? q : which == 1 ? k : v;
  std::vector<double> g(x.size());
  const double h = 1e-5;
  for (size_t e = 0; e < x.size(); ++e) {
    const double x0 = x[e];
    x[e] = x0 + h;
    const double lp = reference_loss(s, q, k, v, dout);
    x[e] = x0 - h;
    const double lm = reference_loss(s, q, k, v, dout);
    x[e] = x0;
    g[e] = (lp - lm) / (2 * h);
  }
  return g;
}

double scale_of(const std::vector<double>& g) {
  double m = 1;
  for (double x : g) m = std::max(m, std::fabs(x));
  return m;
}

class GradCheck : public ::testing::TestWithParam<Case> {};

TEST_P(GradCheck, ReferenceAndLibraryMatchFiniteDifferences) {
  const Case& c = GetParam();
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(c.seed + 5);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);
  const RefSpec s = p.spec();
  const auto qv = p.q_values(), kv = p.k_values(), vv = p.v_values();
  const auto dov = p.rows_values(dout, s.total_q());
  const RefGrads analytic = reference_backward(s, qv, kv, vv, dov);
  const std::vector<double>* an[3] = {&analytic.dq, &analytic.dk, &analytic.dv};
  const std::vector<double> lib[3] = {p.rows_values(g.dq, s.total_q()),
                                      p.rows_values(g.dk, s.total_k()),
                                      p.rows_values(g.dv, s.total_k())};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int w = 0; w < 3; ++w) {
    const std::vector<double> fd = finite_differences(s, qv, kv, vv, dov, w);
    const double m = scale_of(fd);
    // The oracle: float64 analytic vs central differences (truncation ~h², rounding ~1e-16/h).
    EXPECT_TRUE(all_close(std::string("reference ") + names[w], *an[w], fd, 1e-7 * m));
    // The library in fp32: a few hundred fp32 roundings on values of size ≤ m; in float64: as
    // close as the oracle.
    const double tol = c.dtype == DType::f64 ? 1e-7 * m : 2e-5 * m;
    EXPECT_TRUE(all_close(std::string("library ") + names[w], lib[w], fd, tol));
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, GradCheck, ::testing::ValuesIn(tiny_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(TinyF64, GradCheck, ::testing::ValuesIn(tiny_f64_cases()), CaseName());

}  // namespace
}  // namespace fa_test
