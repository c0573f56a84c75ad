// The C ABI (flashattn_c.h) means what the C++ API means: for each option that acts on the CPU, a
// call through flashattn_forward / flashattn_backward gives bit for bit what flashattn::forward /
// backward give with the same flashattn::Options; the fields that do not act there (split count,
// max_seqlen bounds, threads) are seen reaching the C++ checks; its defaults are Options'
// defaults; errors come back as a return code and the library's message. The stream, the
// workspace fields and `deterministic` are compared as defaults only: they act on CUDA alone.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "flashattn/flashattn.h"
#include "flashattn/flashattn_c.h"

namespace fa_test {
namespace {

flashattn_tensor to_c(const flashattn::Tensor& t) {
  flashattn_tensor r{};
  r.data = t.data;
  r.dtype = static_cast<int32_t>(t.dtype);
  r.rank = t.rank;
  for (int d = 0; d < t.rank; ++d) {
    r.shape[d] = t.shape[d];
    r.strides[d] = t.stride[d];
  }
  r.device_type = t.device.type == flashattn::DeviceType::cuda ? FLASHATTN_CUDA : FLASHATTN_CPU;
  r.device_id = t.device.index;
  return r;
}

// One option setting, applied to both APIs: the C++ Options and the C struct (with the tensors
// the C functions take as arguments).
struct Setting {
  std::string name;
  std::function<void(flashattn::Options&, flashattn_options&)> set;
  bool varlen = false;
  bool paged = false;         // k and v a paged cache
  bool forward_only = false;  // an option the backward does not take
};

void PrintTo(const Setting& s, std::ostream* os) { *os << s.name; }

std::vector<int32_t> g_cu_q = {0, 5, 12}, g_cu_k = {0, 9, 16}, g_used = {6, 7}, g_pad = {1, 0},
                     g_table = {2, 0, 3, 1};
std::vector<float> g_slopes = {0.5f, 0.25f, 0.125f, 0.0625f};

flashattn::Tensor i32(std::vector<int32_t>& v, std::initializer_list<int64_t> shape) {
  return flashattn::contiguous_view(v.data(), DType::i32, shape);
}

std::vector<Setting> settings() {
  using O = flashattn::Options;
  using C = flashattn_options;
  return {
      {"defaults", [](O&, C&) {}},
      {"scale", [](O& o, C& c) { o.softmax_scale = c.softmax_scale = 0.3; }},
      {"negative_scale", [](O& o, C& c) { o.softmax_scale = c.softmax_scale = -0.2; }},
      {"zero_scale", [](O& o, C& c) { o.softmax_scale = c.softmax_scale = 0.0; }},
      {"causal", [](O& o, C& c) { o.causal = true, c.causal = 1; }},
      {"window", [](O& o, C& c) { o.window_left = c.window_left = 3, o.window_right = c.window_right = 1; }},
      {"causal_window", [](O& o, C& c) { o.causal = true, c.causal = 1, o.window_left = c.window_left = 2; }},
      {"softcap", [](O& o, C& c) { o.softcap = c.softcap = 2.0f; }},
      {"dropout", [](O& o, C& c) {
         o.dropout_p = c.dropout_p = 0.25f;
         o.dropout_seed = c.dropout_seed = 1234;
         o.dropout_offset = c.dropout_offset = 77;
       }},
      {"alibi", [](O& o, C&) {
         o.alibi_slopes = flashattn::contiguous_view(g_slopes.data(), DType::f32, {4});
       }},  // C: an argument, passed from Options below
      {"seqused_k", [](O& o, C&) { o.seqused_k = i32(g_used, {2}); }},
      {"leftpad_k", [](O& o, C&) { o.leftpad_k = i32(g_pad, {2}); }, false, false, true},
      {"varlen", [](O& o, C& c) {
         o.cu_seqlens_q = i32(g_cu_q, {3});
         o.cu_seqlens_k = i32(g_cu_k, {3});
         o.max_seqlen_q = c.max_seqlen_q = 7;
         o.max_seqlen_k = c.max_seqlen_k = 9;
         o.causal = true, c.causal = 1;
       }, /*varlen=*/true},
      {"paged", [](O& o, C& c) {
         o.num_splits = c.num_splits = 3;
         o.block_table = i32(g_table, {2, 2});
         (void)c;
       }, false, /*paged=*/true, /*forward_only=*/true},
  };
}

class CApi : public ::testing::TestWithParam<Setting> {};

// Inputs for a setting: q (2, 7, 4, 16), k/v (2, 9, 2, 16), or packed varlen rows, or a paged
// cache of 4 pages of 5 rows.
struct Inputs {
  Buf q, k, v;
  explicit Inputs(const Setting& s) {
    std::mt19937_64 rng(11);
    if (s.varlen) {
      q = Buf::contiguous(DType::f32, {12, 4, 16});
      k = Buf::contiguous(DType::f32, {16, 2, 16});
      v = Buf::contiguous(DType::f32, {16, 2, 16});
    } else if (s.paged) {
      q = Buf::contiguous(DType::f32, {2, 3, 4, 16});
      k = Buf::contiguous(DType::f32, {4, 5, 2, 16});
      v = Buf::contiguous(DType::f32, {4, 5, 2, 16});
    } else {
      q = Buf::contiguous(DType::f32, {2, 7, 4, 16});
      k = Buf::contiguous(DType::f32, {2, 9, 2, 16});
      v = Buf::contiguous(DType::f32, {2, 9, 2, 16});
    }
    q.fill_normal(rng);
    k.fill_normal(rng);
    v.fill_normal(rng);
  }
  std::vector<int64_t> lse_shape() const {
    return q.rank() == 3 ? std::vector<int64_t>{4, q.shape()[0]}
                         : std::vector<int64_t>{q.shape()[0], 4, q.shape()[1]};
  }
};

// The C call's tensors that flashattn.h keeps in Options.
struct COptionalTensors {
  flashattn_tensor alibi{}, cu_q{}, cu_k{}, used{}, pad{}, table{};
  explicit COptionalTensors(const flashattn::Options& o, flashattn_options& c) {
    if (o.alibi_slopes) alibi = to_c(*o.alibi_slopes);
    if (o.cu_seqlens_q) cu_q = to_c(*o.cu_seqlens_q);
    if (o.cu_seqlens_k) cu_k = to_c(*o.cu_seqlens_k);
    if (o.seqused_k) used = to_c(*o.seqused_k);
    if (o.leftpad_k) {
      pad = to_c(*o.leftpad_k);
      c.leftpad_k = &pad;
    }
    if (o.block_table) {
      table = to_c(*o.block_table);
      c.block_table = &table;
    }
  }
};

TEST_P(CApi, ForwardAndBackwardMatchTheCppApi) {
  const Setting& s = GetParam();
  const Inputs in(s);
  flashattn::Options o;
  flashattn_options c;
  flashattn_default_options(&c);
  s.set(o, c);
  COptionalTensors t(o, c);
  const auto out_shape = in.q.shape();
  Buf out_cpp = Buf::contiguous(DType::f32, out_shape), out_c = Buf::contiguous(DType::f32, out_shape);
  Buf lse_cpp = Buf::contiguous(DType::f32, in.lse_shape()), lse_c = Buf::contiguous(DType::f32, in.lse_shape());
  flashattn::forward(in.q.tensor(), in.k.tensor(), in.v.tensor(), out_cpp.tensor(), lse_cpp.tensor(), o);
  const flashattn_tensor q = to_c(in.q.tensor()), k = to_c(in.k.tensor()), v = to_c(in.v.tensor()),
                         oc = to_c(out_c.tensor()), lc = to_c(lse_c.tensor());
  ASSERT_EQ(flashattn_forward(&q, &k, &v, &oc, &lc, &t.alibi, &t.cu_q, &t.cu_k, &t.used, &c), 0)
      << flashattn_last_error();
  EXPECT_TRUE(out_c.bit_equal(out_cpp));
  EXPECT_TRUE(lse_c.bit_equal(lse_cpp));
  for (double x : out_c.values()) ASSERT_TRUE(std::isfinite(x));
  if (s.forward_only) return;

  std::mt19937_64 rng(12);
  Buf dout = Buf::contiguous(DType::f32, out_shape);
  dout.fill_normal(rng);
  std::vector<Buf> grads;
  for (int i = 0; i < 2; ++i) {
    for (const Buf* x : {&in.q, &in.k, &in.v}) grads.push_back(Buf::contiguous(DType::f32, x->shape()));
  }
  flashattn::backward(dout.tensor(), in.q.tensor(), in.k.tensor(), in.v.tensor(), out_cpp.tensor(),
                      lse_cpp.tensor(), grads[0].tensor(), grads[1].tensor(), grads[2].tensor(), o);
  const flashattn_tensor d = to_c(dout.tensor()), dq = to_c(grads[3].tensor()),
                         dk = to_c(grads[4].tensor()), dv = to_c(grads[5].tensor());
  ASSERT_EQ(flashattn_backward(&d, &q, &k, &v, &oc, &lc, &dq, &dk, &dv, &t.alibi, &t.cu_q, &t.cu_k,
                               &t.used, &c),
            0)
      << flashattn_last_error();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(grads[3 + i].bit_equal(grads[i])) << "gradient " << i;
}

INSTANTIATE_TEST_SUITE_P(Options, CApi, ::testing::ValuesIn(settings()),
                         [](const ::testing::TestParamInfo<Setting>& i) { return i.param.name; });

TEST(CApiDefaults, AreTheOptionsDefaults) {
  flashattn_options c;
  flashattn_default_options(&c);
  const flashattn::Options o;
  EXPECT_TRUE(std::isnan(c.softmax_scale));  // unset: 1/sqrt(head_dim), as o.softmax_scale
  EXPECT_FALSE(o.softmax_scale.has_value());
  EXPECT_EQ(c.causal != 0, o.causal);
  EXPECT_EQ(c.window_left, o.window_left);
  EXPECT_EQ(c.window_right, o.window_right);
  EXPECT_EQ(c.softcap, o.softcap);
  EXPECT_EQ(c.dropout_p, o.dropout_p);
  EXPECT_EQ(c.dropout_seed, o.dropout_seed);
  EXPECT_EQ(c.dropout_offset, o.dropout_offset);
  EXPECT_EQ(c.max_seqlen_q, o.max_seqlen_q);
  EXPECT_EQ(c.max_seqlen_k, o.max_seqlen_k);
  EXPECT_EQ(c.deterministic != 0, o.deterministic);
  EXPECT_EQ(c.num_threads, o.num_threads);
  EXPECT_EQ(c.num_splits, o.num_splits);
  EXPECT_EQ(c.stream, o.stream);
  EXPECT_EQ(c.workspace, o.workspace.data);
  EXPECT_EQ(c.workspace_bytes, o.workspace.bytes);
  EXPECT_EQ(c.workspace_zeroed != 0, o.workspace.zeroed);
  EXPECT_EQ(c.workspace_allocate, o.workspace.allocate);
  EXPECT_EQ(c.workspace_context, o.workspace.context);
  EXPECT_EQ(c.block_table, nullptr);
  EXPECT_EQ(c.leftpad_k, nullptr);
}

// The fields whose effect a CPU run cannot show in its bits (the CPU ignores the split count
// and the stream, and is always deterministic; exact max_seqlen bounds change nothing) reach
// the C++ call too: each one's own error comes back when it is out of range.
TEST(CApiOptions, FieldsWithoutACpuEffectReachTheCppCall) {
  Buf q = Buf::contiguous(DType::f32, {12, 4, 16}), k = Buf::contiguous(DType::f32, {16, 2, 16}),
      out = Buf::contiguous(DType::f32, {12, 4, 16});
  std::mt19937_64 rng(3);
  q.fill_normal(rng);
  k.fill_normal(rng);
  const flashattn_tensor tq = to_c(q.tensor()), tk = to_c(k.tensor()), to = to_c(out.tensor()),
                         cu_q = to_c(i32(g_cu_q, {3})), cu_k = to_c(i32(g_cu_k, {3}));
  auto error_of = [&](const std::function<void(flashattn_options&)>& set) {
    flashattn_options c;
    flashattn_default_options(&c);
    set(c);
    const int rc = flashattn_forward(&tq, &tk, &tk, &to, nullptr, nullptr, &cu_q, &cu_k, nullptr, &c);
    return rc == 0 ? std::string("no error") : std::string(flashattn_last_error());
  };
  EXPECT_EQ(error_of([](flashattn_options&) {}), "no error");
  EXPECT_NE(error_of([](flashattn_options& c) { c.max_seqlen_q = 3; }).find("argument 'max_seqlen_q'"),
            std::string::npos);
  EXPECT_NE(error_of([](flashattn_options& c) { c.max_seqlen_k = 3; }).find("argument 'max_seqlen_k'"),
            std::string::npos);
  EXPECT_NE(error_of([](flashattn_options& c) { c.num_splits = 2; }).find("argument 'num_splits'"),
            std::string::npos);
  EXPECT_NE(error_of([](flashattn_options& c) { c.num_threads = -1; }).find("argument 'num_threads'"),
            std::string::npos);
  // workspace_zeroed (it acts on CUDA forwards only) reaches the C++ call: the backward refuses it.
  flashattn_options zeroed;
  flashattn_default_options(&zeroed);
  zeroed.workspace_zeroed = 1;
  ASSERT_NE(flashattn_backward(&to, &tq, &tk, &tk, &to, nullptr, &to, &tk, &tk, nullptr, &cu_q,
                               &cu_k, nullptr, &zeroed),
            0);
  EXPECT_NE(std::string(flashattn_last_error()).find("argument 'workspace'"), std::string::npos)
      << flashattn_last_error();
}

TEST(CApiErrors, ComeBackAsTheLibrarysMessage) {
  Buf q = Buf::contiguous(DType::f32, {1, 4, 4, 8}), k = Buf::contiguous(DType::f32, {1, 4, 3, 8}),
      out = Buf::contiguous(DType::f32, {1, 4, 4, 8});
  const flashattn_tensor tq = to_c(q.tensor()), tk = to_c(k.tensor()), to = to_c(out.tensor());
  EXPECT_EQ(flashattn_forward(&tq, &tk, &tk, &to, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr), 1);
  EXPECT_STREQ(flashattn_last_error(),
               "flashattn::forward: argument 'k': heads_q (4) must be a multiple of heads_kv (3)");
  flashattn_options c;
  flashattn_default_options(&c);
  c.softmax_scale = INFINITY;  // NaN means unset; an infinite scale is refused as in C++
  EXPECT_EQ(flashattn_forward(&tq, &tq, &tq, &to, nullptr, nullptr, nullptr, nullptr, nullptr, &c), 1);
  EXPECT_NE(std::string(flashattn_last_error()).find("argument 'softmax_scale'"), std::string::npos)
      << flashattn_last_error();
}

}  // namespace
}  // namespace fa_test
