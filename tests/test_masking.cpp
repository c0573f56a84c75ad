// Fully masked rows (O = 0, LSE = −inf, zero gradients, never NaN) and large-magnitude logits.
#include <gtest/gtest.h>

#include <cmath>

#include "cases.h"
#include "harness.h"
#include "shared_cases.h"
#include "yardsticks.h"

namespace fa_test {
namespace {

// Cases in which some query rows (or all) see no key (tests/shared_cases.h).
std::vector<Case> masked_cases() { return for_dtypes(masked_grid()); }

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
// the maximum is subtracted (the grid: large_grid in tests/shared_cases.h).


// The yardsticks of these cases: check_large_forward / check_large_backward (tests/yardsticks.h).

std::vector<Case> large_all_cases() {
  std::vector<Case> v;
  for (DType d : all_dtypes()) {
    for (Case c : large_grid()) {
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
