// Forward against the float64 reference under the tolerance rule of DESIGN §4, over the shape,
// head-dim and head-count grids and every option.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

class ForwardShapes : public ::testing::TestWithParam<Case> {};
TEST_P(ForwardShapes, MatchesReference) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Seqlens, ForwardShapes, ::testing::ValuesIn(shape_cases(false)), CaseName());
INSTANTIATE_TEST_SUITE_P(HeadDims, ForwardShapes, ::testing::ValuesIn(head_dim_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Heads, ForwardShapes, ::testing::ValuesIn(heads_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Long, ForwardShapes, ::testing::ValuesIn(long_cases(false)), CaseName());

class ForwardOptions : public ::testing::TestWithParam<Case> {};
TEST_P(ForwardOptions, MatchesReference) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Options, ForwardOptions, ::testing::ValuesIn(option_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Paged, ForwardOptions, ::testing::ValuesIn(paged_cases()), CaseName());

// lse is optional for inference: without it, out is the same, bit for bit.
TEST(ForwardLse, OptionalLseGivesSameOutput) {
  for (DType dt : all_dtypes()) {
    Case c;
    c.dtype = dt;
    c.batch = 2;
    c.seqlen_q = 50;
    c.seqlen_k = 70;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 40;
    c.causal = true;
    c.alibi = Alibi::heads;
    Problem p(c);
    const ForwardRun with = run_forward(p);
    Buf out = p.make_out();
    flashattn::forward(p.q.tensor(), p.k.tensor(), p.v.tensor(), out.tensor(), flashattn::Tensor{},
                       p.opts);
    EXPECT_TRUE(out.bit_equal(with.out)) << dtype_tag(dt);
  }
}

}  // namespace
}  // namespace fa_test
