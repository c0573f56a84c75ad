// float64 inputs (CPU only): computed in float64 throughout, with a float64 LSE. The rule of
// DESIGN §4 still applies, but "plain" is then the float64 reference itself, so the bound is eps
// alone (rule_eps: 2^-40 of the summands' size): any rounding to fp32 on the way would fail.
// float64 is what torch.autograd.gradcheck needs; test_gradcheck.cpp checks its gradients
// against finite differences.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

// The fp32 cases of a grid, as float64.
std::vector<Case> as_f64(const std::vector<Case>& cases) {
  std::vector<Case> out;
  for (Case c : cases) {
    if (c.dtype != DType::f32) continue;
    c.dtype = DType::f64;
    out.push_back(c);
  }
  return out;
}

// A few shapes (seqlen_q ≠ seqlen_k both ways, one and several key blocks), a varlen batch with
// empty sequences and seqused_k, and every option of option_cases().
std::vector<Case> f64_cases() {
  std::vector<Case> v;
  for (auto [sq, sk] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {97, 128}, {128, 97}, {1, 257}}) {
    Case c;
    c.batch = 2;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 40;
    c.causal = sq != 1;
    c.seed = static_cast<uint64_t>(sq * 1000 + sk);
    c.dtype = DType::f32;
    v.push_back(c);
  }
  Case c;
  c.label = "varlen";
  c.lens_q = {5, 0, 33, 20};
  c.lens_k = {7, 3, 70, 0};
  c.seqused_k = {7, 1, 66, 0};
  c.extra_q_rows = 2;
  c.heads_q = 4;
  c.heads_kv = 1;
  c.head_dim = 32;
  c.causal = true;
  v.push_back(c);
  for (const Case& o : option_cases()) v.push_back(o);
  return as_f64(v);
}

class Float64Forward : public ::testing::TestWithParam<Case> {};
TEST_P(Float64Forward, MatchesReference) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(F64, Float64Forward, ::testing::ValuesIn(f64_cases()), CaseName());

class Float64Backward : public ::testing::TestWithParam<Case> {};
TEST_P(Float64Backward, MatchesReference) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(F64, Float64Backward, ::testing::ValuesIn(f64_cases()), CaseName());

// The LSE of float64 inputs is float64; a float32 one is refused, naming 'lse'.
TEST(Float64Lse, Float32LseIsRefused) {
  Case c;
  c.dtype = DType::f64;
  c.seqlen_q = 3;
  c.seqlen_k = 4;
  Problem p(c);
  Buf out = p.make_out();
  Buf lse = Buf::contiguous(DType::f32, {1, 1, 3});
  try {
    flashattn::forward(p.q.tensor(), p.k.tensor(), p.v.tensor(), out.tensor(), lse.tensor(),
                       p.opts);
    ADD_FAILURE() << "a float32 lse for float64 inputs was accepted";
  } catch (const flashattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'lse'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fa_test
