// Variable-length batches (cu_seqlens_q/k, packed rows): forward and backward against the
// reference, including empty sequences, seqused_k, rows after the last sequence, max_seqlen bounds
// and non-contiguous layouts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cases.h"
#include "harness.h"
#include "shared_cases.h"

namespace fa_test {
namespace {

std::vector<Case> varlen_cases() { return for_dtypes(varlen_grid()); }

class VarlenForward : public ::testing::TestWithParam<Case> {};
TEST_P(VarlenForward, MatchesReference) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Varlen, VarlenForward, ::testing::ValuesIn(varlen_cases()), CaseName());

class VarlenBackward : public ::testing::TestWithParam<Case> {};
TEST_P(VarlenBackward, MatchesReference) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Varlen, VarlenBackward, ::testing::ValuesIn(varlen_cases()), CaseName());

// A batch of only empty sequences, and a batch of zero sequences: nothing to do, no error, no NaN.
TEST(VarlenEdge, AllSequencesEmpty) {
  Case c;
  c.lens_q = {0, 0, 0};
  c.lens_k = {0, 4, 0};
  c.heads_q = 2;
  c.heads_kv = 2;
  c.head_dim = 16;
  check_forward(c);
  check_backward(c);
}

TEST(VarlenEdge, ZeroSequences) {
  // Built by hand (a Case with no lengths is a padded batch): batch 0, cu_seqlens = {0}.
  std::vector<int32_t> cu = {0};
  Buf q = Buf::contiguous(DType::f32, {0, 2, 16}), k = Buf::contiguous(DType::f32, {0, 1, 16}),
      v = Buf::contiguous(DType::f32, {0, 1, 16}), out = Buf::contiguous(DType::f32, {0, 2, 16}),
      lse = Buf::contiguous(DType::f32, {2, 0});
  flashattn::Options o;
  o.cu_seqlens_q = flashattn::contiguous_view(cu.data(), DType::i32, {1});
  o.cu_seqlens_k = flashattn::contiguous_view(cu.data(), DType::i32, {1});
  EXPECT_NO_THROW(flashattn::forward(q.tensor(), k.tensor(), v.tensor(), out.tensor(), lse.tensor(), o));
  // Nothing may be written: the storage (one element allocated for a non-null pointer) stays poisoned.
  EXPECT_TRUE(out.is_poison_at(0));
  EXPECT_TRUE(lse.is_poison_at(0));
}

// cu_seqlens = {0} over tensors that do have rows: every row is after the last sequence, so the
// forward writes out = 0 and lse = −inf there, and the backward dq, dk, dv = 0 (not stale memory).
TEST(VarlenEdge, ZeroSequencesOverRows) {
  std::vector<int32_t> cu = {0};
  std::mt19937_64 rng(5);
  Buf q = Buf::contiguous(DType::f32, {3, 2, 16}), k = Buf::contiguous(DType::f32, {4, 1, 16}),
      v = Buf::contiguous(DType::f32, {4, 1, 8}), out = Buf::contiguous(DType::f32, {3, 2, 8}),
      lse = Buf::contiguous(DType::f32, {2, 3}), dout = Buf::contiguous(DType::f32, {3, 2, 8});
  for (Buf* b : {&q, &k, &v, &dout}) b->fill_normal(rng);
  out.poison();
  lse.poison();
  flashattn::Options o;
  o.cu_seqlens_q = flashattn::contiguous_view(cu.data(), DType::i32, {1});
  o.cu_seqlens_k = flashattn::contiguous_view(cu.data(), DType::i32, {1});
  flashattn::forward(q.tensor(), k.tensor(), v.tensor(), out.tensor(), lse.tensor(), o);
  for (double x : out.values()) EXPECT_EQ(x, 0.0);
  for (double x : lse.values()) EXPECT_EQ(x, -INFINITY);
  Buf dq = Buf::contiguous(DType::f32, {3, 2, 16}), dk = Buf::contiguous(DType::f32, {4, 1, 16}),
      dv = Buf::contiguous(DType::f32, {4, 1, 8});
  for (Buf* b : {&dq, &dk, &dv}) b->poison();
  flashattn::backward(dout.tensor(), q.tensor(), k.tensor(), v.tensor(), out.tensor(), lse.tensor(),
                      dq.tensor(), dk.tensor(), dv.tensor(), o);
  for (const Buf* b : {&dq, &dk, &dv}) {
    for (double x : b->values()) EXPECT_EQ(x, 0.0);
  }
}

}  // namespace
}  // namespace fa_test
