// Metamorphic checks (DESIGN §4): batched == one by one; varlen == padded; GQA == expanded MHA;
// deterministic backward bit-identical twice; key order does not matter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

// Sequence b (rows [r0, r0 + n)) of dimension 0 as a tensor with leading dimension 1 (padded) or n.
Buf slice0(const Buf& b, int64_t r0, int64_t n) {
  std::vector<int64_t> shape = b.shape();
  shape[0] = n;
  return b.view(shape, b.strides(), b.offset() + r0 * b.strides()[0]);
}

std::string tag(DType d) { return dtype_tag(d); }

class Metamorphic : public ::testing::TestWithParam<DType> {};

// A batch of 3 computed at once equals each sequence computed alone, bit for bit. Per-sequence
// options are sliced (alibi row, seqused_k entry) and dropout_offset advanced by b·heads_q, which
// docs/dropout.md says names the same Philox stream as batch index b.
TEST_P(Metamorphic, BatchedEqualsOneByOne) {
  Case c;
  c.dtype = GetParam();
  c.batch = 3;
  c.seqlen_q = 40;
  c.seqlen_k = 55;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = 32;
  c.causal = true;
  c.alibi = Alibi::batch_heads;
  c.dropout_p = 0.2f;
  c.seqused_k = {55, 20, 41};
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(11);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);
  for (int64_t b = 0; b < c.batch; ++b) {
    flashattn::Options o = p.opts;
    o.alibi_slopes = flashattn::contiguous_view(p.alibi.data() + b * c.heads_q, DType::f32, {1, c.heads_q});
    o.seqused_k = flashattn::contiguous_view(p.used.data() + b, DType::i32, {1});
    o.dropout_offset = c.dropout_offset + static_cast<uint64_t>(b * c.heads_q);
    const Buf qb = slice0(p.q, b, 1), kb = slice0(p.k, b, 1), vb = slice0(p.v, b, 1);
    Buf out = Buf::contiguous(c.dtype, qb.shape());
    Buf lse = Buf::contiguous(DType::f32, {1, c.heads_q, c.seqlen_q});
    flashattn::forward(qb.tensor(), kb.tensor(), vb.tensor(), out.tensor(), lse.tensor(), o);
    EXPECT_TRUE(out.bit_equal(slice0(f.out, b, 1))) << "out of sequence " << b;
    EXPECT_TRUE(lse.bit_equal(slice0(f.lse, b, 1))) << "lse of sequence " << b;
    Buf dq = Buf::contiguous(c.dtype, qb.shape()), dk = Buf::contiguous(c.dtype, kb.shape()),
        dv = Buf::contiguous(c.dtype, vb.shape());
    flashattn::backward(slice0(dout, b, 1).tensor(), qb.tensor(), kb.tensor(), vb.tensor(),
                        out.tensor(), lse.tensor(), dq.tensor(), dk.tensor(), dv.tensor(), o);
    EXPECT_TRUE(dq.bit_equal(slice0(g.dq, b, 1))) << "dq of sequence " << b;
    EXPECT_TRUE(dk.bit_equal(slice0(g.dk, b, 1))) << "dk of sequence " << b;
    EXPECT_TRUE(dv.bit_equal(slice0(g.dv, b, 1))) << "dv of sequence " << b;
  }
}

// Varlen with every sequence of the padded lengths, on the same memory, equals the padded batch.
TEST_P(Metamorphic, VarlenEqualsPaddedSameLengths) {
  Case c;
  c.dtype = GetParam();
  c.batch = 3;
  c.seqlen_q = 37;
  c.seqlen_k = 50;
  c.heads_q = 4;
  c.heads_kv = 1;
  c.head_dim = 40;
  c.window_left = 12;
  c.window_right = 3;
  c.softcap = 6.0f;
  c.dropout_p = 0.1f;
  c.alibi = Alibi::heads;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(12);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);

  const int64_t B = c.batch, SQ = c.seqlen_q, SK = c.seqlen_k, H = c.heads_q, HK = c.heads_kv,
                D = c.head_dim;
  auto packed = [](const Buf& b) {  // (B, S, H, D) contiguous → (B·S, H, D)
    const auto& s = b.shape();
    return b.view({s[0] * s[1], s[2], s[3]}, {s[2] * s[3], s[3], 1}, b.offset());
  };
  std::vector<int32_t> cu_q, cu_k;
  for (int64_t b = 0; b <= B; ++b) {
    cu_q.push_back(static_cast<int32_t>(b * SQ));
    cu_k.push_back(static_cast<int32_t>(b * SK));
  }
  flashattn::Options o = p.opts;
  o.cu_seqlens_q = flashattn::contiguous_view(cu_q.data(), DType::i32, {B + 1});
  o.cu_seqlens_k = flashattn::contiguous_view(cu_k.data(), DType::i32, {B + 1});
  Buf out = Buf::contiguous(c.dtype, {B * SQ, H, D}), lse = Buf::contiguous(DType::f32, {H, B * SQ});
  flashattn::forward(packed(p.q).tensor(), packed(p.k).tensor(), packed(p.v).tensor(), out.tensor(),
                     lse.tensor(), o);
  EXPECT_TRUE(out.bit_equal(packed(f.out)));
  EXPECT_TRUE(all_close("lse", lse.values(), [&] {
    std::vector<double> v(static_cast<size_t>(H * B * SQ));
    const auto pl = f.lse.values();  // (B, H, SQ) → (H, B·SQ)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < SQ; ++i) v[h * B * SQ + b * SQ + i] = pl[(b * H + h) * SQ + i];
    return v;
  }(), 0.0));
  Buf dq = Buf::contiguous(c.dtype, {B * SQ, H, D}), dk = Buf::contiguous(c.dtype, {B * SK, HK, D}),
      dv = Buf::contiguous(c.dtype, {B * SK, HK, D});
  flashattn::backward(packed(dout).tensor(), packed(p.q).tensor(), packed(p.k).tensor(),
                      packed(p.v).tensor(), out.tensor(), lse.tensor(), dq.tensor(), dk.tensor(),
                      dv.tensor(), o);
  EXPECT_TRUE(dq.bit_equal(packed(g.dq)));
  EXPECT_TRUE(dk.bit_equal(packed(g.dk)));
  EXPECT_TRUE(dv.bit_equal(packed(g.dv)));
}

// Varlen with different lengths equals each sequence run alone as a padded batch of one.
TEST_P(Metamorphic, VarlenEqualsPaddedOneByOne) {
  Case c;
  c.dtype = GetParam();
  c.lens_q = {17, 0, 40, 9};
  c.lens_k = {30, 12, 25, 9};
  c.seqused_k = {30, 5, 20, 9};
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = 24;
  c.causal = true;
  c.dropout_p = 0.25f;
  c.alibi = Alibi::batch_heads;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(13);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);
  const int64_t H = c.heads_q;
  for (size_t b = 0; b < c.lens_q.size(); ++b) {
    const int64_t nq = c.lens_q[b], nk = c.lens_k[b];
    auto pad = [](const Buf& x, int64_t r0, int64_t n) {  // rows → (1, n, H, D)
      const auto& s = x.shape();
      const auto& st = x.strides();
      return x.view({1, n, s[1], s[2]}, {n * st[0] + 1, st[0], st[1], st[2]}, x.offset() + r0 * st[0]);
    };
    const Buf qb = pad(p.q, p.cu_q[b], nq), kb = pad(p.k, p.cu_k[b], nk), vb = pad(p.v, p.cu_k[b], nk);
    flashattn::Options o = p.opts;
    o.cu_seqlens_q.reset();
    o.cu_seqlens_k.reset();
    o.alibi_slopes = flashattn::contiguous_view(p.alibi.data() + b * H, DType::f32, {1, H});
    o.seqused_k = flashattn::contiguous_view(p.used.data() + b, DType::i32, {1});
    o.dropout_offset = c.dropout_offset + static_cast<uint64_t>(b) * static_cast<uint64_t>(H);
    Buf out = Buf::contiguous(c.dtype, {1, nq, H, c.head_dim});
    Buf lse = Buf::contiguous(DType::f32, {1, H, nq});
    flashattn::forward(qb.tensor(), kb.tensor(), vb.tensor(), out.tensor(), lse.tensor(), o);
    EXPECT_TRUE(out.bit_equal(pad(f.out, p.cu_q[b], nq))) << "out of sequence " << b;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < nq; ++i) {
        EXPECT_EQ(lse.get(h * nq + i), f.lse.get(h * p.total_q + p.cu_q[b] + i))
            << "lse of sequence " << b << " head " << h << " row " << i;
      }
    }
    Buf dq = Buf::contiguous(c.dtype, qb.shape()), dk = Buf::contiguous(c.dtype, kb.shape()),
        dv = Buf::contiguous(c.dtype, vb.shape());
    flashattn::backward(pad(dout, p.cu_q[b], nq).tensor(), qb.tensor(), kb.tensor(), vb.tensor(),
                        out.tensor(), lse.tensor(), dq.tensor(), dk.tensor(), dv.tensor(), o);
    EXPECT_TRUE(dq.bit_equal(pad(g.dq, p.cu_q[b], nq))) << "dq of sequence " << b;
    EXPECT_TRUE(dk.bit_equal(pad(g.dk, p.cu_k[b], nk))) << "dk of sequence " << b;
    EXPECT_TRUE(dv.bit_equal(pad(g.dv, p.cu_k[b], nk))) << "dv of sequence " << b;
  }
}

// GQA equals MHA with every kv head repeated for its query heads: the same forward; dq the same;
// dk/dv of GQA equal the sum over the group of the expanded gradients.
TEST_P(Metamorphic, GqaEqualsExpandedMha) {
  const DType dt = GetParam();
  Case c;
  c.dtype = dt;
  c.batch = 2;
  c.seqlen_q = 45;
  c.seqlen_k = 60;
  c.heads_q = 6;
  c.heads_kv = 2;
  c.head_dim = 32;
  c.causal = true;
  c.dropout_p = 0.1f;
  c.alibi = Alibi::heads;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(14);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run_backward(p, f, dout);

  const int64_t B = c.batch, SK = c.seqlen_k, H = c.heads_q, HK = c.heads_kv, G = H / HK,
                D = c.head_dim;
  Buf ke = Buf::contiguous(dt, {B, SK, H, D}), ve = Buf::contiguous(dt, {B, SK, H, D});
  for (int64_t r = 0; r < B * SK; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        ke.set((r * H + h) * D + d, p.k.get((r * HK + h / G) * D + d));
        ve.set((r * H + h) * D + d, p.v.get((r * HK + h / G) * D + d));
      }
  Buf out = Buf::contiguous(dt, f.out.shape()), lse = Buf::contiguous(DType::f32, f.lse.shape());
  flashattn::forward(p.q.tensor(), ke.tensor(), ve.tensor(), out.tensor(), lse.tensor(), p.opts);
  EXPECT_TRUE(out.bit_equal(f.out));
  EXPECT_TRUE(lse.bit_equal(f.lse));
  Buf dq = Buf::contiguous(dt, p.q.shape()), dk = Buf::contiguous(dt, ke.shape()),
      dv = Buf::contiguous(dt, ve.shape());
  flashattn::backward(dout.tensor(), p.q.tensor(), ke.tensor(), ve.tensor(), out.tensor(),
                      lse.tensor(), dq.tensor(), dk.tensor(), dv.tensor(), p.opts);
  // dq: the same computation per query head. Tolerance: a few roundings (the order in which the
  // library sums over keys may depend on the kv head count).
  const double u = unit_roundoff(dt);
  auto maxabs = [](const std::vector<double>& x) {
    double m = 1;
    for (double e : x) m = std::max(m, std::fabs(e));
    return m;
  };
  EXPECT_TRUE(all_close("dq", dq.values(), g.dq.values(), 4 * u * maxabs(g.dq.values())));
  // dk/dv: Σ over the group of the expanded ones (each rounded to the dtype: G + 1 roundings).
  std::vector<double> dk_sum(static_cast<size_t>(B * SK * HK * D), 0.0), dv_sum = dk_sum;
  const auto dke = dk.values(), dve = dv.values();
  for (int64_t r = 0; r < B * SK; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        dk_sum[(r * HK + h / G) * D + d] += dke[(r * H + h) * D + d];
        dv_sum[(r * HK + h / G) * D + d] += dve[(r * H + h) * D + d];
      }
  const double tol_scale = dt == DType::f32 ? 64 * u : 2.0 * (G + 1) * u;
  EXPECT_TRUE(all_close("dk", g.dk.values(), dk_sum, tol_scale * maxabs(dk_sum)));
  EXPECT_TRUE(all_close("dv", g.dv.values(), dv_sum, tol_scale * maxabs(dv_sum)));
}

// deterministic = true: the backward twice (all threads) gives the same bits, GQA + dropout.
TEST_P(Metamorphic, DeterministicBackwardBitIdentical) {
  Case c;
  c.dtype = GetParam();
  c.batch = 2;
  c.seqlen_q = 130;
  c.seqlen_k = 140;
  c.heads_q = 8;
  c.heads_kv = 1;
  c.head_dim = 64;
  c.causal = true;
  c.dropout_p = 0.3f;
  c.deterministic = true;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::mt19937_64 rng(15);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g1 = run_backward(p, f, dout);
  const BackwardRun g2 = run_backward(p, f, dout);
  EXPECT_TRUE(g1.dq.bit_equal(g2.dq));
  EXPECT_TRUE(g1.dk.bit_equal(g2.dk));
  EXPECT_TRUE(g1.dv.bit_equal(g2.dv));
  // And the deterministic gradients are the right ones.
  check_backward(c);
}

// Without causal/window/alibi/dropout, attention is invariant under a permutation of the keys
// (with the values permuted alike), up to the order of the sums.
TEST_P(Metamorphic, KeyPermutationInvariance) {
  const DType dt = GetParam();
  Case c;
  c.dtype = dt;
  c.batch = 1;
  c.seqlen_q = 30;
  c.seqlen_k = 77;
  c.heads_q = 2;
  c.heads_kv = 2;
  c.head_dim = 16;
  c.softcap = 4.0f;
  Problem p(c);
  const ForwardRun f = run_forward(p);
  std::vector<int64_t> perm(static_cast<size_t>(c.seqlen_k));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(16);
  std::shuffle(perm.begin(), perm.end(), rng);
  Buf kp = Buf::contiguous(dt, p.k.shape()), vp = Buf::contiguous(dt, p.v.shape());
  const int64_t row = c.heads_kv * c.head_dim;
  for (int64_t j = 0; j < c.seqlen_k; ++j)
    for (int64_t e = 0; e < row; ++e) {
      kp.set(perm[j] * row + e, p.k.get(j * row + e));
      vp.set(perm[j] * row + e, p.v.get(j * row + e));
    }
  Buf out = Buf::contiguous(dt, f.out.shape()), lse = Buf::contiguous(DType::f32, f.lse.shape());
  flashattn::forward(p.q.tensor(), kp.tensor(), vp.tensor(), out.tensor(), lse.tensor(), p.opts);
  const double u = unit_roundoff(dt);
  EXPECT_TRUE(all_close("out", out.values(), f.out.values(), dt == DType::f32 ? 1e-5 : 4 * u));
  EXPECT_TRUE(all_close("lse", lse.values(), f.lse.values(), 1e-5));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Metamorphic, ::testing::ValuesIn(all_dtypes()),
                         [](const auto& info) { return tag(info.param); });

}  // namespace
}  // namespace fa_test
