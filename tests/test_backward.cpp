// Backward (dq, dk, dv) against the float64 reference's gradients of sum(dO·O) under the
// tolerance rule, over the shape grids and every option of the forward.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

class BackwardShapes : public ::testing::TestWithParam<Case> {};
TEST_P(BackwardShapes, MatchesReference) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Seqlens, BackwardShapes, ::testing::ValuesIn(shape_cases(true)), CaseName());
INSTANTIATE_TEST_SUITE_P(HeadDims, BackwardShapes, ::testing::ValuesIn(head_dim_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Heads, BackwardShapes, ::testing::ValuesIn(heads_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Long, BackwardShapes, ::testing::ValuesIn(long_cases(true)), CaseName());

class BackwardOptions : public ::testing::TestWithParam<Case> {};
TEST_P(BackwardOptions, MatchesReference) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Options, BackwardOptions, ::testing::ValuesIn(option_cases()), CaseName());

}  // namespace
}  // namespace fa_test
