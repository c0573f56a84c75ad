// Argument checks: one test per error. Each asserts that flashattn::Error is thrown, that its
// message names the argument (e.g. contains 'k' in quotes), and that no output was written (the
// poisoned outputs are still poisoned, bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "cases.h"
#include "harness.h"

namespace fa_test {
namespace {

using flashattn::Device;
using flashattn::DeviceType;
using flashattn::Tensor;

constexpr Device kCuda{DeviceType::cuda, 0};
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A valid call (f32; padded: batch 2, seqlen_q 5, seqlen_k 7, heads 4/2, head_dim 8; varlen:
// sequences of 5+7 queries and 7+7 keys) whose tensor descriptors the tests then break. Every
// buffer has 4× slack, so that a check that fails to reject cannot write out of bounds.
struct Call {
  static constexpr int64_t B = 2, SQ = 5, SK = 7, H = 4, HK = 2, D = 8;
  bool varlen;
  Buf q, k, v, out, lse, dout, dq, dk, dv;
  Tensor tq, tk, tv, tout, tlse, tdout, tdq, tdk, tdv;
  std::vector<int32_t> cu_q, cu_k, used;
  std::vector<float> alibi;
  flashattn::Options o;

  static Buf slack(DType dt, std::vector<int64_t> shape) {
    Buf c = Buf::contiguous(dt, shape);
    return Buf::strided(dt, shape, c.strides(), 4 * std::max<int64_t>(c.numel(), 1) + 64, 0);
  }

  explicit Call(bool is_varlen) : varlen(is_varlen) {
    std::mt19937_64 rng(77);
    const int64_t TQ = 12, TK = 14;
    auto rows = [&](int64_t s, int64_t total, int64_t h, int64_t d) {
      return varlen ? std::vector<int64_t>{total, h, d} : std::vector<int64_t>{B, s, h, d};
    };
    q = slack(DType::f32, rows(SQ, TQ, H, D));
    k = slack(DType::f32, rows(SK, TK, HK, D));
    v = slack(DType::f32, rows(SK, TK, HK, D));
    out = slack(DType::f32, rows(SQ, TQ, H, D));
    lse = slack(DType::f32, varlen ? std::vector<int64_t>{H, TQ} : std::vector<int64_t>{B, H, SQ});
    dout = slack(DType::f32, rows(SQ, TQ, H, D));
    dq = slack(DType::f32, rows(SQ, TQ, H, D));
    dk = slack(DType::f32, rows(SK, TK, HK, D));
    dv = slack(DType::f32, rows(SK, TK, HK, D));
    for (Buf* b : {&q, &k, &v, &dout}) b->fill_normal(rng);
    tq = q.tensor();
    tk = k.tensor();
    tv = v.tensor();
    tout = out.tensor();
    tlse = lse.tensor();
    tdout = dout.tensor();
    tdq = dq.tensor();
    tdk = dk.tensor();
    tdv = dv.tensor();
    cu_q = {0, 5, 12};
    cu_k = {0, 7, 14};
    used = {7, 3};
    alibi = {0.5f, 0.25f, 0.125f, 0.0625f, 0.5f, 0.25f, 0.125f, 0.0625f};
    o.causal = true;
    if (varlen) {
      o.cu_seqlens_q = flashattn::contiguous_view(cu_q.data(), DType::i32, {B + 1});
      o.cu_seqlens_k = flashattn::contiguous_view(cu_k.data(), DType::i32, {B + 1});
    }
  }
  Call(const Call&) = delete;

  void forward() const { flashattn::forward(tq, tk, tv, tout, tlse, o); }
  void backward() const { flashattn::backward(tdout, tq, tk, tv, tout, tlse, tdq, tdk, tdv, o); }

  // For backward tests: fill out/lse with a valid forward first.
  void prepare_backward() {
    forward();
    dq.poison();
    dk.poison();
    dv.poison();
  }

  static bool all_poison(const Buf& b) {
    for (int64_t si = 0; si < b.storage_elems(); ++si) {
      if (!b.is_poison_at(si)) return false;
    }
    return true;
  }
};

struct ErrorCase {
  std::string name;
  bool varlen;
  bool backward;
  std::string arg;  // the argument the message must name, in quotes
  std::function<void(Call&)> mutate;
};

std::ostream& operator<<(std::ostream& os, const ErrorCase& e) { return os << e.name; }

std::vector<ErrorCase> error_cases() {
  std::vector<ErrorCase> v;
  auto fwd = [&](std::string name, std::string arg, std::function<void(Call&)> m) {
    v.push_back({std::move(name), false, false, std::move(arg), std::move(m)});
  };
  auto fwd_varlen = [&](std::string name, std::string arg, std::function<void(Call&)> m) {
    v.push_back({std::move(name), true, false, std::move(arg), std::move(m)});
  };
  auto bwd = [&](std::string name, std::string arg, std::function<void(Call&)> m) {
    v.push_back({std::move(name), false, true, std::move(arg), std::move(m)});
  };
  // dtypes
  fwd("QDtypeInt32", "q", [](Call& c) { c.tq.dtype = DType::i32; });
  // fp32 and fp64 run on the CPU only: on a CUDA device they are refused before any dispatch.
  for (DType dt : {DType::f32, DType::f64}) {
    fwd(std::string("CudaRefuses") + (dt == DType::f32 ? "Float32" : "Float64"), "q", [dt](Call& c) {
      for (Tensor* t : {&c.tq, &c.tk, &c.tv, &c.tout}) {
        t->dtype = dt;
        t->device = kCuda;
      }
      c.tlse.dtype = lse_dtype(dt);
      c.tlse.device = kCuda;
    });
  }
  fwd("KDtypeDiffersFromQ", "k", [](Call& c) { c.tk.dtype = DType::f16; });
  fwd("VDtypeDiffersFromQ", "v", [](Call& c) { c.tv.dtype = DType::bf16; });
  fwd("OutDtypeDiffersFromQ", "out", [](Call& c) { c.tout.dtype = DType::f16; });
  fwd("LseDtypeNotF32", "lse", [](Call& c) { c.tlse.dtype = DType::f16; });
  fwd("AlibiDtypeNotF32", "alibi_slopes", [](Call& c) {
    c.o.alibi_slopes = flashattn::contiguous_view(c.alibi.data(), DType::f16, {Call::H});
  });
  fwd_varlen("CuSeqlensDtypeNotInt32", "cu_seqlens_q", [](Call& c) {
    c.o.cu_seqlens_q->dtype = DType::f32;
  });
  fwd("SequsedKDtypeNotInt32", "seqused_k", [](Call& c) {
    c.o.seqused_k = flashattn::contiguous_view(c.used.data(), DType::f32, {Call::B});
  });
  // ranks and shapes
  fwd("QMissing", "q", [](Call& c) { c.tq = Tensor{}; });
  fwd("QRank3", "q", [](Call& c) { c.tq.rank = 3; });
  fwd("KRank3", "k", [](Call& c) { c.tk.rank = 3; });
  fwd("LseRank2", "lse", [](Call& c) { c.tlse.rank = 2; });
  fwd("QNegativeSize", "q", [](Call& c) { c.tq.shape[1] = -1; });
  fwd("KBatchMismatch", "k", [](Call& c) { c.tk.shape[0] = c.tv.shape[0] = 3; });
  fwd("VBatchMismatch", "v", [](Call& c) { c.tv.shape[0] = 1; });
  fwd("VSeqlenMismatch", "v", [](Call& c) { c.tv.shape[1] = 6; });
  fwd("VHeadsMismatch", "v", [](Call& c) { c.tv.shape[2] = 1; });
  fwd("KHeadDimMismatch", "k", [](Call& c) { c.tk.shape[3] = 6; });
  fwd("OutSeqlenMismatch", "out", [](Call& c) { c.tout.shape[1] = 4; });
  fwd("OutHeadDimMismatch", "out", [](Call& c) { c.tout.shape[3] = 7; });
  fwd("OutHeadsMismatch", "out", [](Call& c) { c.tout.shape[2] = 2; });
  fwd("LseShapeMismatch", "lse", [](Call& c) { c.tlse.shape[2] = 4; });
  fwd("HeadDimZero", "q", [](Call& c) { c.tq.shape[3] = c.tk.shape[3] = 0; });
  fwd("HeadDim257", "q", [](Call& c) {
    c.tq.shape[3] = c.tk.shape[3] = c.tout.shape[3] = 257;
    c.tv.shape[3] = 8;
  });
  fwd("HeadDimV257", "v", [](Call& c) { c.tv.shape[3] = c.tout.shape[3] = 257; });
  fwd("HeadsNotMultiple", "k", [](Call& c) { c.tk.shape[2] = c.tv.shape[2] = 3; });
  fwd("AlibiWrongLength", "alibi_slopes", [](Call& c) {
    c.o.alibi_slopes = flashattn::contiguous_view(c.alibi.data(), DType::f32, {Call::H - 1});
  });
  fwd("AlibiWrongBatch", "alibi_slopes", [](Call& c) {
    c.o.alibi_slopes = flashattn::contiguous_view(c.alibi.data(), DType::f32, {1, Call::H});
  });
  fwd("AlibiRank3", "alibi_slopes", [](Call& c) {
    c.o.alibi_slopes = flashattn::contiguous_view(c.alibi.data(), DType::f32, {2, 2, 2});
  });
  // strides, pointers, devices
  fwd("QLastDimNotContiguous", "q", [](Call& c) { c.tq.stride[3] = 2; });
  fwd("VLastDimNotContiguous", "v", [](Call& c) { c.tv.stride[3] = 0; });
  fwd("OutLastDimNotContiguous", "out", [](Call& c) { c.tout.stride[3] = 2; });
  fwd("OutStrideZero", "out", [](Call& c) { c.tout.stride[1] = 0; });
  fwd("LseStrideZero", "lse", [](Call& c) { c.tlse.stride[1] = 0; });
  fwd("KNullData", "k", [](Call& c) { c.tk.data = nullptr; });
  fwd("OutNullData", "out", [](Call& c) { c.tout.data = nullptr; });
  fwd("KOnCuda", "k", [](Call& c) { c.tk.device = kCuda; });
  fwd("OutOnCuda", "out", [](Call& c) { c.tout.device = kCuda; });
  fwd("LseOnOtherCpuIndex", "lse", [](Call& c) { c.tlse.device = Device{DeviceType::cpu, 1}; });
  fwd("AlibiOnCuda", "alibi_slopes", [](Call& c) {
    c.o.alibi_slopes = flashattn::contiguous_view(c.alibi.data(), DType::f32, {Call::H}, kCuda);
  });
  // varlen
  fwd("OnlyCuSeqlensQ", "cu_seqlens_k", [](Call& c) {
    c.o.cu_seqlens_q = flashattn::contiguous_view(c.cu_q.data(), DType::i32, {Call::B + 1});
  });
  fwd("OnlyCuSeqlensK", "cu_seqlens_q", [](Call& c) {
    c.o.cu_seqlens_k = flashattn::contiguous_view(c.cu_k.data(), DType::i32, {Call::B + 1});
  });
  fwd_varlen("CuSeqlensNotStartingAtZero", "cu_seqlens_q", [](Call& c) { c.cu_q[0] = 1; });
  fwd_varlen("CuSeqlensDecreasing", "cu_seqlens_k", [](Call& c) { c.cu_k = {0, 9, 8}; });
  fwd_varlen("CuSeqlensExceedsTotal", "cu_seqlens_k", [](Call& c) { c.cu_k[2] = 15; });
  fwd_varlen("CuSeqlensQExceedsTotal", "cu_seqlens_q", [](Call& c) { c.cu_q[2] = 13; });
  fwd_varlen("CuSeqlensWrongLength", "cu_seqlens_k", [](Call& c) {
    c.cu_k.push_back(14);
    c.o.cu_seqlens_k = flashattn::contiguous_view(c.cu_k.data(), DType::i32, {Call::B + 2});
  });
  fwd_varlen("CuSeqlensRank2", "cu_seqlens_q", [](Call& c) {
    c.o.cu_seqlens_q = flashattn::contiguous_view(c.cu_q.data(), DType::i32, {1, Call::B + 1});
  });
  fwd_varlen("CuSeqlensOnCuda", "cu_seqlens_q", [](Call& c) { c.o.cu_seqlens_q->device = kCuda; });
  fwd_varlen("MaxSeqlenQTooSmall", "max_seqlen_q", [](Call& c) { c.o.max_seqlen_q = 6; });
  fwd_varlen("MaxSeqlenKTooSmall", "max_seqlen_k", [](Call& c) { c.o.max_seqlen_k = 5; });
  fwd_varlen("MaxSeqlenKNegative", "max_seqlen_k", [](Call& c) { c.o.max_seqlen_k = -1; });
  fwd_varlen("VarlenQRank4", "q", [](Call& c) { c.tq.rank = 4; });
  fwd_varlen("VarlenLsePaddedShape", "lse", [](Call& c) {
    c.tlse.rank = 3;
    c.tlse.shape[0] = 2;
    c.tlse.shape[1] = 4;
    c.tlse.shape[2] = 7;
    c.tlse.stride[0] = 28;
    c.tlse.stride[1] = 7;
    c.tlse.stride[2] = 1;
  });
  fwd_varlen("VarlenSequsedExceedsSequence", "seqused_k", [](Call& c) {
    c.used = {8, 7};  // sequence 0 has 7 keys
    c.o.seqused_k = flashattn::contiguous_view(c.used.data(), DType::i32, {Call::B});
  });
  fwd("MaxSeqlenQWithoutVarlen", "max_seqlen_q", [](Call& c) { c.o.max_seqlen_q = 5; });
  fwd("MaxSeqlenKWithoutVarlen", "max_seqlen_k", [](Call& c) { c.o.max_seqlen_k = 7; });
  // seqused_k
  fwd("SequsedKExceedsSeqlenK", "seqused_k", [](Call& c) {
    c.used = {7, 8};
    c.o.seqused_k = flashattn::contiguous_view(c.used.data(), DType::i32, {Call::B});
  });
  fwd("SequsedKNegative", "seqused_k", [](Call& c) {
    c.used = {-1, 3};
    c.o.seqused_k = flashattn::contiguous_view(c.used.data(), DType::i32, {Call::B});
  });
  fwd("SequsedKWrongLength", "seqused_k", [](Call& c) {
    c.o.seqused_k = flashattn::contiguous_view(c.used.data(), DType::i32, {Call::B + 1});
  });
  // numeric options
  fwd("WindowLeftBelowMinusOne", "window_left", [](Call& c) { c.o.window_left = -2; });
  fwd("WindowRightBelowMinusOne", "window_right", [](Call& c) {
    c.o.causal = false;
    c.o.window_right = -2;
  });
  fwd("CausalWithWindowRight5", "window_right", [](Call& c) { c.o.window_right = 5; });
  fwd("SoftcapNegative", "softcap", [](Call& c) { c.o.softcap = -1.0f; });
  fwd("SoftcapInf", "softcap", [](Call& c) { c.o.softcap = kInf; });
  fwd("SoftcapNaN", "softcap", [](Call& c) { c.o.softcap = kNaN; });
  fwd("DropoutOne", "dropout_p", [](Call& c) { c.o.dropout_p = 1.0f; });
  fwd("DropoutNegative", "dropout_p", [](Call& c) { c.o.dropout_p = -0.1f; });
  fwd("DropoutNaN", "dropout_p", [](Call& c) { c.o.dropout_p = kNaN; });
  fwd("SoftmaxScaleInf", "softmax_scale", [](Call& c) { c.o.softmax_scale = kInf; });
  fwd("SoftmaxScaleNaN", "softmax_scale", [](Call& c) { c.o.softmax_scale = kNaN; });
  fwd("NumThreadsNegative", "num_threads", [](Call& c) { c.o.num_threads = -1; });
  // backward
  bwd("BackwardLseMissing", "lse", [](Call& c) { c.tlse = Tensor{}; });
  bwd("BackwardDoutMissing", "dout", [](Call& c) { c.tdout = Tensor{}; });
  bwd("BackwardDoutDtype", "dout", [](Call& c) { c.tdout.dtype = DType::f16; });
  bwd("BackwardDoutShape", "dout", [](Call& c) { c.tdout.shape[1] = 4; });
  bwd("BackwardDqShape", "dq", [](Call& c) { c.tdq.shape[2] = 2; });
  bwd("BackwardDkShape", "dk", [](Call& c) { c.tdk.shape[1] = 5; });
  bwd("BackwardDvDtype", "dv", [](Call& c) { c.tdv.dtype = DType::bf16; });
  bwd("BackwardDqStrideZero", "dq", [](Call& c) { c.tdq.stride[2] = 0; });
  bwd("BackwardDkLastDimNotContiguous", "dk", [](Call& c) { c.tdk.stride[3] = 3; });
  bwd("BackwardDvOnCuda", "dv", [](Call& c) { c.tdv.device = kCuda; });
  bwd("BackwardDqNullData", "dq", [](Call& c) { c.tdq.data = nullptr; });
  bwd("BackwardOutShape", "out", [](Call& c) { c.tout.shape[3] = 4; });
  bwd("BackwardLseShape", "lse", [](Call& c) { c.tlse.shape[0] = 1; });
  bwd("BackwardKDtype", "k", [](Call& c) { c.tk.dtype = DType::f16; });
  bwd("BackwardDropoutNaN", "dropout_p", [](Call& c) { c.o.dropout_p = kNaN; });
  bwd("BackwardWindowLeft", "window_left", [](Call& c) { c.o.window_left = -5; });
  bwd("BackwardZeroedWorkspace", "workspace", [](Call& c) { c.o.workspace.zeroed = true; });
  return v;
}

class Validation : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(Validation, ThrowsNamingArgumentWritesNothing) {
  const ErrorCase& e = GetParam();
  Call c(e.varlen);
  if (e.backward) c.prepare_backward();
  e.mutate(c);
  std::string message;
  bool thrown = false;
  try {
    if (e.backward) {
      c.backward();
    } else {
      c.forward();
    }
  } catch (const flashattn::Error& err) {
    thrown = true;
    message = err.what();
  }
  ASSERT_TRUE(thrown) << "no flashattn::Error thrown";
  EXPECT_NE(message.find("'" + e.arg + "'"), std::string::npos)
      << "the message does not name '" << e.arg << "': " << message;
  if (e.backward) {
    EXPECT_TRUE(Call::all_poison(c.dq)) << "dq written before the error";
    EXPECT_TRUE(Call::all_poison(c.dk)) << "dk written before the error";
    EXPECT_TRUE(Call::all_poison(c.dv)) << "dv written before the error";
  } else {
    EXPECT_TRUE(Call::all_poison(c.out)) << "out written before the error";
    EXPECT_TRUE(Call::all_poison(c.lse)) << "lse written before the error";
  }
}

INSTANTIATE_TEST_SUITE_P(Errors, Validation, ::testing::ValuesIn(error_cases()),
                         [](const auto& info) { return info.param.name; });

// The unmodified calls are valid and right (so that each error above is due to its mutation).
TEST(ValidationBaseline, ValidCallsSucceedAndMatchReference) {
  for (bool varlen : {false, true}) {
    Call c(varlen);
    ASSERT_NO_THROW(c.forward());
    ASSERT_NO_THROW(c.backward());
    RefSpec s;
    s.batch = Call::B;
    s.heads_q = Call::H;
    s.heads_kv = Call::HK;
    s.head_dim = s.head_dim_v = Call::D;
    for (int64_t b = 0; b <= Call::B; ++b) {
      s.cu_q.push_back(varlen ? c.cu_q[b] : b * Call::SQ);
      s.cu_k.push_back(varlen ? c.cu_k[b] : b * Call::SK);
    }
    s.scale = 1.0 / std::sqrt(8.0);
    s.causal = true;
    auto vals = [](const Buf& b) { return b.values(); };
    const RefForward ref = reference_forward(s, vals(c.q), vals(c.k), vals(c.v));
    const RefForward plain = plain_forward(s, Precision::f32, vals(c.q), vals(c.k), vals(c.v));
    EXPECT_TRUE(within_rule("out", vals(c.out), ref.out, plain.out, 2.0, rule_eps(DType::f32, ref.out_mag)));
    const RefGrads gr = reference_backward(s, vals(c.q), vals(c.k), vals(c.v), vals(c.dout));
    const RefGrads gp = plain_backward(s, Precision::f32, vals(c.q), vals(c.k), vals(c.v), vals(c.dout));
    EXPECT_TRUE(within_rule("dq", vals(c.dq), gr.dq, gp.dq, kGradFactor, rule_eps(DType::f32, gr.dq_mag)));
    EXPECT_TRUE(within_rule("dk", vals(c.dk), gr.dk, gp.dk, kGradFactor, rule_eps(DType::f32, gr.dk_mag)));
  }
}

// Tensors on a CUDA device in a build without CUDA kernels: a clear flashattn::Error, no crash.
TEST(ValidationDevice, CudaCallWithoutCudaKernelsIsAClearError) {
  if (flashattn::cuda_compiled()) GTEST_SKIP() << "this build has CUDA kernels";
  EXPECT_EQ(flashattn::cuda_device_count(), 0);
  for (bool backward : {false, true}) {
    Call c(false);
    if (backward) c.prepare_backward();
    for (Tensor* t : {&c.tq, &c.tk, &c.tv, &c.tout, &c.tlse, &c.tdout, &c.tdq, &c.tdk, &c.tdv}) {
      t->device = kCuda;
    }
    std::string message;
    try {
      backward ? c.backward() : c.forward();
    } catch (const flashattn::Error& err) {
      message = err.what();
    }
    EXPECT_NE(message.find("cuda"), std::string::npos) << "message: " << message;
    EXPECT_TRUE(Call::all_poison(backward ? c.dq : c.out));
  }
}

// Empty outputs (no element) cannot alias, whatever their strides: NumPy gives a (2, 0, 4, 8)
// array the strides (0, 32, 8, 1), and such views must be accepted like PyTorch's (32, 32, 8, 1).
void empty_queries(bool numpy_strides) {
  const int64_t B = 2, H = 4, D = 8;
  const std::vector<int64_t> st = numpy_strides ? std::vector<int64_t>{0, H * D, D, 1}
                                                : std::vector<int64_t>{H * D, H * D, D, 1};
  const std::vector<int64_t> lst = numpy_strides ? std::vector<int64_t>{0, 0, 1}
                                                 : std::vector<int64_t>{H, 1, 1};
  Buf q = Buf::strided(DType::f32, {B, 0, H, D}, st, 1);
  Buf k = Buf::contiguous(DType::f32, {B, 3, H, D}), v = Buf::contiguous(DType::f32, {B, 3, H, D});
  std::mt19937_64 rng(1);
  k.fill_normal(rng);
  v.fill_normal(rng);
  Buf out = Buf::strided(DType::f32, {B, 0, H, D}, st, 1);
  Buf lse = Buf::strided(DType::f32, {B, H, 0}, lst, 1);
  flashattn::Options o;
  EXPECT_NO_THROW(flashattn::forward(q.tensor(), k.tensor(), v.tensor(), out.tensor(), lse.tensor(), o));
  Buf dq = Buf::strided(DType::f32, {B, 0, H, D}, st, 1);
  Buf dk = Buf::contiguous(DType::f32, {B, 3, H, D}), dv = Buf::contiguous(DType::f32, {B, 3, H, D});
  EXPECT_NO_THROW(flashattn::backward(out.tensor(), q.tensor(), k.tensor(), v.tensor(), out.tensor(),
                                      lse.tensor(), dq.tensor(), dk.tensor(), dv.tensor(), o));
  // No query: the key gradients are exactly zero.
  const std::vector<double> zeros(static_cast<size_t>(dk.numel()), 0.0);
  EXPECT_TRUE(all_close("dk", dk.values(), zeros, 0.0));
  EXPECT_TRUE(all_close("dv", dv.values(), zeros, 0.0));
}

TEST(ValidationEmpty, EmptyQueriesPyTorchStrides) { empty_queries(false); }
TEST(ValidationEmpty, EmptyQueriesNumpyZeroStridesAccepted) { empty_queries(true); }

}  // namespace
}  // namespace fa_test
