// Memory layouts and threading: non-contiguous inputs (packed qkv slices, head-major, gaps
// holding NaN that must never be read), outputs in strided buffers whose gaps must stay untouched,
// broadcast (stride 0) inputs, and bit-identical results for any num_threads.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"
#include "shared_cases.h"

namespace fa_test {
namespace {

std::vector<Case> layout_cases() {
  std::vector<Case> v;
  for (Layout l : {Layout::gappy, Layout::packed_qkv, Layout::head_major}) {
    for (const Case& c : layout_grid(l)) v.push_back(c);
  }
  return for_dtypes(v);
}

class LayoutForward : public ::testing::TestWithParam<Case> {};
TEST_P(LayoutForward, MatchesReferenceGapsUntouched) { check_forward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Layouts, LayoutForward, ::testing::ValuesIn(layout_cases()), CaseName());

class LayoutBackward : public ::testing::TestWithParam<Case> {};
TEST_P(LayoutBackward, MatchesReferenceGapsUntouched) { check_backward(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Layouts, LayoutBackward, ::testing::ValuesIn(layout_cases()), CaseName());

// The strided output is written exactly on its view: every element of the view is no longer the
// poison, every element of the gaps still is (run_forward checks the gaps; here the view).
TEST(StridedOutput, EveryViewElementWrittenNoGapTouched) {
  Case c;
  c.batch = 2;
  c.seqlen_q = 33;
  c.seqlen_k = 20;
  c.heads_q = 4;
  c.heads_kv = 4;
  c.head_dim = 24;
  c.causal = true;  // rows 0..12 see nothing: O = 0 must still be written
  c.layout = Layout::gappy;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  int64_t poisoned = 0;
  for (int64_t i = 0; i < f.out.numel(); ++i) poisoned += f.out.is_poison_at(f.out.storage_index(i));
  EXPECT_EQ(poisoned, 0);
  for (int64_t i = 0; i < f.lse.numel(); ++i) poisoned += f.lse.is_poison_at(f.lse.storage_index(i));
  EXPECT_EQ(poisoned, 0);
  EXPECT_EQ(f.out.gaps_written(), 0);
  EXPECT_EQ(f.lse.gaps_written(), 0);
}

// k and v broadcast over the batch with batch stride 0 equal the same k/v repeated.
TEST(BroadcastInput, BatchStrideZeroKeysEqualRepeated) {
  for (DType dt : all_dtypes()) {
    const int64_t B = 3, SQ = 20, SK = 37, H = 2, D = 16;
    std::mt19937_64 rng(5);
    Buf q = Buf::contiguous(dt, {B, SQ, H, D});
    q.fill_normal(rng);
    Buf k1 = Buf::contiguous(dt, {1, SK, H, D}), v1 = Buf::contiguous(dt, {1, SK, H, D});
    k1.fill_normal(rng);
    v1.fill_normal(rng);
    const Buf kb = k1.view({B, SK, H, D}, {0, H * D, D, 1}, 0);
    const Buf vb = v1.view({B, SK, H, D}, {0, H * D, D, 1}, 0);
    Buf kr = Buf::contiguous(dt, {B, SK, H, D}), vr = Buf::contiguous(dt, {B, SK, H, D});
    for (int64_t i = 0; i < kr.numel(); ++i) {
      kr.set(i, kb.get(i));
      vr.set(i, vb.get(i));
    }
    flashattn::Options o;
    o.causal = true;
    Buf out_b = Buf::contiguous(dt, {B, SQ, H, D}), out_r = Buf::contiguous(dt, {B, SQ, H, D});
    Buf lse_b = Buf::contiguous(DType::f32, {B, H, SQ}), lse_r = Buf::contiguous(DType::f32, {B, H, SQ});
    flashattn::forward(q.tensor(), kb.tensor(), vb.tensor(), out_b.tensor(), lse_b.tensor(), o);
    flashattn::forward(q.tensor(), kr.tensor(), vr.tensor(), out_r.tensor(), lse_r.tensor(), o);
    EXPECT_TRUE(all_close(std::string("out ") + dtype_tag(dt), out_b.values(), out_r.values(), 0.0));
    EXPECT_TRUE(all_close(std::string("lse ") + dtype_tag(dt), lse_b.values(), lse_r.values(), 0.0));
    // And the repeated one is right (so that the equality is not between two wrong results).
    RefSpec s;
    s.batch = B;
    s.heads_q = s.heads_kv = H;
    s.head_dim = s.head_dim_v = D;
    for (int64_t b = 0; b <= B; ++b) {
      s.cu_q.push_back(b * SQ);
      s.cu_k.push_back(b * SK);
    }
    s.scale = 1.0 / std::sqrt(static_cast<double>(D));
    s.causal = true;
    const RefForward ref = reference_forward(s, q.values(), kr.values(), vr.values());
    const RefForward plain = plain_forward(s, precision_of(dt), q.values(), kr.values(), vr.values());
    EXPECT_TRUE(within_rule("out", out_b.values(), ref.out, plain.out, 2.0, rule_eps(dt, ref.out_mag)));
  }
}

// num_threads: 1, 2, 3, 8 and 0 (all) give bit-identical outputs and gradients (the CPU
// implementation is deterministic for any thread count).
class Threads : public ::testing::TestWithParam<DType> {};
TEST_P(Threads, BitIdenticalForAnyThreadCount) {
  Case c;
  c.dtype = GetParam();
  c.batch = 2;
  c.seqlen_q = 150;
  c.seqlen_k = 130;
  c.heads_q = 6;
  c.heads_kv = 2;
  c.head_dim = 40;
  c.causal = true;
  c.window_left = 70;
  c.dropout_p = 0.15f;
  c.alibi = Alibi::batch_heads;
  std::vector<Buf> outs, lses, dqs, dks, dvs;
  for (int t : {1, 2, 3, 8, 0}) {
    c.num_threads = t;
    Problem p(c);
    const ForwardRun f = run_forward(p);
    std::mt19937_64 rng(3);
    const Buf dout = p.make_dout(rng);
    const BackwardRun g = run_backward(p, f, dout);
    outs.push_back(f.out);
    lses.push_back(f.lse);
    dqs.push_back(g.dq);
    dks.push_back(g.dk);
    dvs.push_back(g.dv);
  }
  for (size_t i = 1; i < outs.size(); ++i) {
    EXPECT_TRUE(outs[i].bit_equal(outs[0])) << "out, run " << i;
    EXPECT_TRUE(lses[i].bit_equal(lses[0])) << "lse, run " << i;
    EXPECT_TRUE(dqs[i].bit_equal(dqs[0])) << "dq, run " << i;
    EXPECT_TRUE(dks[i].bit_equal(dks[0])) << "dk, run " << i;
    EXPECT_TRUE(dvs[i].bit_equal(dvs[0])) << "dv, run " << i;
  }
  // Not trivially equal: the first run matches the reference.
  c.num_threads = 1;
  check_forward(c);
}
INSTANTIATE_TEST_SUITE_P(Dtypes, Threads, ::testing::ValuesIn(all_dtypes()),
                         [](const auto& info) { return std::string(dtype_tag(info.param)); });

}  // namespace
}  // namespace fa_test
