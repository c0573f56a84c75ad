// GPU backward against the float64 reference, under the tolerance rule of DESIGN §4 with the
// factor of the CPU backward tests (kGradFactor): the CPU backward case grids (tests/cases.h, and
// the varlen / masking / dropout / layout grids of the CPU test files) in fp16 and bf16, run
// through flashattn::backward on CUDA tensors, plus the deterministic mode, a user stream and
// the errors of the CUDA backward. Skipped, and reported as skipped, where there is no GPU.
//
// The saved out and lse fed to the GPU backward are the GPU forward's own (run_forward_gpu), as in
// training: the pair forward → backward is what is tested. dq, dk, dv start as NaN on the device
// (the harness's poison, gaps included); gaps must stay untouched and inputs unchanged.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cases.h"
#include "gpu_harness.h"
#include "harness.h"
#include "shared_cases.h"
#include "yardsticks.h"

namespace fa_test {
namespace {

using gpu::gpu_cases;
using gpu::have_gpu;
using gpu::run_backward_gpu;
using gpu::run_forward_gpu;

void check_backward_gpu(const Case& c) { check_backward(c, run_backward_gpu, run_forward_gpu); }

void expect_backward_error(
    const Case& c, const std::string& needle,
    const std::function<void(Buf& out, Buf& dout, BackwardRun& g)>& tweak = {});

// On a GPU with less shared memory than Hopper (or one emulated), a call it cannot make must be
// refused by name, nothing written.
constexpr const char* kRefusedByLimit = "has no kernel for this GPU";

class GpuTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
    if (gpu::backward_refused_on_this_gpu(GetParam())) {
      expect_backward_error(GetParam(), kRefusedByLimit);
      GTEST_SKIP() << "refused on this GPU (or the emulated one), as documented";
    }
  }
};

// ---- The grids of tests/cases.h ---------------------------------------------------------------

class GpuBackward : public GpuTest {};
TEST_P(GpuBackward, MatchesReference) { check_backward_gpu(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Seqlens, GpuBackward, ::testing::ValuesIn(gpu_cases(shape_cases(true))), CaseName());
INSTANTIATE_TEST_SUITE_P(HeadDims, GpuBackward, ::testing::ValuesIn(gpu_cases(head_dim_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(Heads, GpuBackward, ::testing::ValuesIn(gpu_cases(heads_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(Long, GpuBackward, ::testing::ValuesIn(gpu_cases(long_cases(true))), CaseName());
INSTANTIATE_TEST_SUITE_P(Options, GpuBackward, ::testing::ValuesIn(gpu_cases(option_cases())), CaseName());

// Every head dim the kernels take (multiples of 8 up to 256, each rounded up to a compiled one),
// small: one batch of 2, GQA 2/1, several key blocks, causal on every other one.
std::vector<Case> every_head_dim() {
  std::vector<Case> out;
  for (int64_t d = 8; d <= 256; d += 8) {
    Case c;
    c.label = "every_hdim";
    c.batch = 2;
    c.seqlen_q = 97;
    c.seqlen_k = 203;
    c.heads_q = 2;
    c.heads_kv = 1;
    c.head_dim = d;
    c.causal = d % 16 == 0;
    c.seed = static_cast<uint64_t>(d);
    out.push_back(c);
  }
  return gpu_cases(out);
}
INSTANTIATE_TEST_SUITE_P(AllHeadDims, GpuBackward, ::testing::ValuesIn(every_head_dim()), CaseName());

// MQA/GQA at the head dims of both tile families (128 keys per block up to d = 128, 64 beyond):
// dK/dV are sums over 8 or 4 query heads of each kv head.
std::vector<Case> gqa_cases() {
  std::vector<Case> v;
  for (int64_t d : {64, 128, 256}) {
    for (auto [hq, hk] : std::vector<std::pair<int64_t, int64_t>>{{8, 1}, {8, 2}}) {
      Case c;
      c.label = "gqa";
      c.seqlen_q = d == 256 ? 130 : 150;
      c.seqlen_k = d == 256 ? 200 : 260;
      c.heads_q = hq;
      c.heads_kv = hk;
      c.head_dim = d;
      c.causal = hk == 1;
      c.seed = static_cast<uint64_t>(d * 10 + hk);
      v.push_back(c);
    }
  }
  Case c;  // a padded batch of 2, window and dropout on top
  c.label = "gqa";
  c.batch = 2;
  c.seqlen_q = 190;
  c.seqlen_k = 190;
  c.heads_q = 8;
  c.heads_kv = 2;
  c.head_dim = 96;
  c.window_left = 50;
  c.window_right = 10;
  c.dropout_p = 0.25f;
  v.push_back(c);
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(Gqa, GpuBackward, ::testing::ValuesIn(gqa_cases()), CaseName());

// Long sequences beyond long_cases(true) (whose head dims are 32 and 16): many query and key
// blocks at d = 128, one query row against 1025 keys, 1025 rows against 97 keys.
std::vector<Case> long_gpu_cases() {
  std::vector<Case> v;
  Case c;
  c.label = "long";
  c.seqlen_q = 1025;
  c.seqlen_k = 1025;
  c.head_dim = 128;
  c.causal = true;
  v.push_back(c);
  c = Case();
  c.label = "long";
  c.batch = 2;
  c.seqlen_q = 1;
  c.seqlen_k = 1025;
  c.heads_q = 2;
  c.heads_kv = 1;
  c.head_dim = 64;
  v.push_back(c);
  c.seqlen_q = 1025;
  c.seqlen_k = 97;
  c.causal = true;  // rows 0..927 see no key
  v.push_back(c);
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(LongGpu, GpuBackward, ::testing::ValuesIn(long_gpu_cases()), CaseName());

// ---- Grids of the CPU test files, forward and backward ----------------------------------------
// These grids are new to the GPU, so the forward (whose out and lse the backward takes) is
// checked on them first: a wrong forward then shows as such ("out", "lse"), not only as wrong
// gradients. One test per case (each test is a process under ctest).

class GpuForwardBackward : public GpuTest {};
TEST_P(GpuForwardBackward, MatchesReference) {
  {
    SCOPED_TRACE("forward");
    check_forward(GetParam(), run_forward_gpu);
  }
  SCOPED_TRACE("backward");
  check_backward_gpu(GetParam());
}

// test_varlen.cpp's cases, as the kernels take them (head_dim_v = head_dim), and a longer one.
std::vector<Case> varlen_cases() {
  std::vector<Case> v = varlen_grid();
  for (Case& c : v) {
    if (c.label == "mqa") c.head_dim_v = 0;  // the CPU grid's head_dim_v = 40: not on the GPU
  }
  // Several query and key blocks per sequence at d = 128, GQA, seqused_k on top.
  Case c;
  c.label = "blocks";
  c.lens_q = {300, 0, 129, 1};
  c.lens_k = {257, 64, 129, 400};
  c.heads_q = 4;
  c.heads_kv = 1;
  c.head_dim = 128;
  c.causal = true;
  c.seqused_k = {257, 10, 100, 399};
  v.push_back(c);
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(Varlen, GpuForwardBackward, ::testing::ValuesIn(varlen_cases()), CaseName());

// test_masking.cpp's cases with fully masked rows: their dq is exactly 0, keys that no row sees
// have dk = dv = 0 exactly, nothing is NaN (check_backward checks all three).
std::vector<Case> masked_cases() {
  std::vector<Case> v = masked_grid();
  Case c;
  // Whole key blocks that no row sees (keys 0..489: their dk, dv must be written as zeros though
  // no query block visits them), at d = 128 and 256 (128 and 64 keys per block).
  c.label = "windowblocks";
  c.batch = 1;
  c.seqlen_q = 100;
  c.seqlen_k = 600;
  c.heads_q = 2;
  c.heads_kv = 1;
  c.head_dim = 128;
  c.window_left = 10;
  c.window_right = 0;
  v.push_back(c);
  c.head_dim = 256;
  v.push_back(c);
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(Masked, GpuForwardBackward, ::testing::ValuesIn(masked_cases()), CaseName());

// test_dropout.cpp's cases (the backward regenerates the forward's mask, which the reference
// draws through flashattn::dropout_keep), and dropout across several blocks at d = 128 and 256.
std::vector<Case> dropout_cases() {
  std::vector<Case> v = dropout_grid();
  for (int64_t d : {128, 256}) {
    Case c;
    c.label = "dropoutblocks";
    c.batch = 2;
    c.seqlen_q = 200;
    c.seqlen_k = 170;
    c.heads_q = 3;
    c.heads_kv = 1;
    c.head_dim = d;
    c.causal = d == 256;
    c.dropout_p = 0.2f;
    c.dropout_seed = 0xfeedfacecafebeefull;
    c.dropout_offset = 0xffffffffffffffffull;  // the stream counter wraps around 2^64
    v.push_back(c);
  }
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(Dropout, GpuForwardBackward, ::testing::ValuesIn(dropout_cases()), CaseName());

// test_layout.cpp's cases: inputs sliced from one packed qkv buffer, head-major memory, gaps
// (NaN, 8 elements so that rows stay aligned) in every dimension of q, k, v, out, dout, and of
// dq, dk, dv whose gaps must stay untouched; packed qkv gradients into one packed buffer.
std::vector<Case> layout_cases() {
  std::vector<Case> v;
  for (Layout l : {Layout::gappy, Layout::packed_qkv, Layout::head_major}) {
    for (const Case& c : layout_grid(l)) v.push_back(c);
    Case c;  // several blocks at d = 128
    c.label = "layoutblocks";
    c.batch = 2;
    c.seqlen_q = 160;
    c.seqlen_k = 160;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 128;
    c.layout = l;
    c.causal = l != Layout::gappy;
    v.push_back(c);
  }
  return gpu_cases(v);
}
INSTANTIATE_TEST_SUITE_P(Layouts, GpuForwardBackward, ::testing::ValuesIn(layout_cases()), CaseName());

// The option, varlen, masking and layout grids at the Hopper kernels' head dims (every case runs
// the sm90 dK/dV kernel, the option cases its score-mods variant).
std::vector<Case> hopper_head_dim_cases() {
  return gpu_cases(gpu::at_hopper_head_dims(
      {option_cases(), varlen_grid(), masked_grid(), layout_grid(Layout::head_major)}));
}
INSTANTIATE_TEST_SUITE_P(HopperHeadDims, GpuForwardBackward,
                         ::testing::ValuesIn(hopper_head_dim_cases()), CaseName());

// ---- Large logits -----------------------------------------------------------------------------
// test_masking.cpp's cases and yardsticks, shared through tests/shared_cases.h (large_grid) and
// tests/yardsticks.h (see its comments): |scores| ~ 1e4 (fp16: 400), where a naive computation in
// the dtype is vacuous, so the yardstick is the naive computation in fp32
// (backward: given the saved O in the dtype and LSE in fp32), plus the fp32 resolution of the
// scores and the roundings to the dtype in eps.

std::vector<Case> large_cases() {
  std::vector<Case> out = gpu_cases(large_grid());
  for (Case& x : out) {
    if (x.dtype == DType::f16) x.qk_scale = 20.0;  // keep fp16 q·k products in range
  }
  return out;
}

class GpuLargeLogits : public GpuTest {};
TEST_P(GpuLargeLogits, MatchesYardstick) {
  {
    SCOPED_TRACE("forward");
    check_large_forward(GetParam(), run_forward_gpu);
  }
  SCOPED_TRACE("backward");
  check_large_backward(GetParam(), run_backward_gpu, run_forward_gpu);
}
INSTANTIATE_TEST_SUITE_P(Large, GpuLargeLogits, ::testing::ValuesIn(large_cases()), CaseName());

// ---- The GPU backward given the CPU forward's out and lse -------------------------------------
// The saved tensors are the API's, not the GPU forward's private format: the GPU backward must
// take the CPU's as well.

std::vector<Case> cpu_saved_cases() {
  std::vector<Case> v;
  Case c;
  c.label = "cpusaved";
  c.batch = 2;
  c.seqlen_q = 130;
  c.seqlen_k = 200;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.head_dim = 64;
  c.causal = true;
  v.push_back(c);
  c.causal = false;
  c.head_dim = 128;
  c.alibi = Alibi::batch_heads;
  c.softcap = 20.0f;
  c.dropout_p = 0.15f;
  v.push_back(c);
  c = Case();
  c.label = "cpusaved";
  c.lens_q = {40, 0, 77};
  c.lens_k = {50, 9, 0};
  c.heads_q = 2;
  c.heads_kv = 1;
  c.head_dim = 64;
  c.window_left = 20;
  v.push_back(c);
  return gpu_cases(v);
}

class GpuBackwardCpuSaved : public GpuTest {};
TEST_P(GpuBackwardCpuSaved, MatchesReference) {
  check_backward(GetParam(), run_backward_gpu, run_forward);
}
INSTANTIATE_TEST_SUITE_P(Saved, GpuBackwardCpuSaved, ::testing::ValuesIn(cpu_saved_cases()), CaseName());

// ---- Deterministic mode -----------------------------------------------------------------------
// Options.deterministic: the backward run 10 times gives the same dq, dk, dv bit for bit
// (memcmp of the whole storages), and the gradients are the right ones. The cases have several
// key blocks per query row (dQ sums over them) and, for GQA, several query heads per kv head.

constexpr int kDeterministicRuns = 10;

bool same_storage(const Buf& a, const Buf& b) {
  const std::vector<unsigned char> x = a.snapshot(), y = b.snapshot();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0;
}

// A backward runner: run_backward_gpu kDeterministicRuns times on the same inputs, every result
// compared bit for bit with the first, which it returns (for check_backward to compare with the
// reference).
BackwardRun run_backward_gpu_repeated(Problem& p, const ForwardRun& f, const Buf& dout) {
  EXPECT_TRUE(p.opts.deterministic);
  BackwardRun first = run_backward_gpu(p, f, dout);
  for (int r = 1; r < kDeterministicRuns; ++r) {
    const BackwardRun g = run_backward_gpu(p, f, dout);
    EXPECT_TRUE(same_storage(g.dq, first.dq)) << "dq of run " << r << " differs from run 0";
    EXPECT_TRUE(same_storage(g.dk, first.dk)) << "dk of run " << r << " differs from run 0";
    EXPECT_TRUE(same_storage(g.dv, first.dv)) << "dv of run " << r << " differs from run 0";
  }
  return first;
}

std::vector<Case> deterministic_cases() {
  std::vector<Case> v;
  auto base = [](const std::string& label, int64_t d) {
    Case c;
    c.label = label;
    c.batch = 2;
    c.seqlen_q = 257;
    c.seqlen_k = 385;
    c.heads_q = 4;
    c.heads_kv = 4;
    c.head_dim = d;
    c.deterministic = true;
    return c;
  };
  v.push_back(base("det", 64));
  v.push_back(base("det", 128));
  Case c = base("det", 256);
  c.batch = 1;
  c.heads_q = c.heads_kv = 2;
  v.push_back(c);
  c = base("detgqa", 64);  // GQA 8/1 with causal and dropout, as the CPU test
  c.heads_q = 8;
  c.heads_kv = 1;
  c.seqlen_q = 300;
  c.seqlen_k = 300;
  c.causal = true;
  c.dropout_p = 0.3f;
  v.push_back(c);
  c = base("detcausal", 128);
  c.seqlen_q = 385;
  c.seqlen_k = 257;
  c.heads_kv = 2;
  c.causal = true;
  v.push_back(c);
  c = base("detvarlen", 96);
  c.lens_q = {200, 0, 130};
  c.lens_k = {260, 40, 130};
  c.heads_kv = 2;
  c.window_left = 100;
  v.push_back(c);
  // On Hopper the cases at d 64/128/256 run the sm90 kernel, whose dQ atomics take turns
  // by key block: windows on both sides (the first key block of a query block is not 0), varlen
  // with a window at d = 256, GQA with causal.
  c = base("detwindow", 128);
  c.window_left = 70;
  c.window_right = 30;
  v.push_back(c);
  c = base("detvarlenwindow", 256);
  c.lens_q = {200, 0, 130};
  c.lens_k = {260, 40, 300};
  c.heads_q = 4;
  c.heads_kv = 2;
  c.window_left = 100;
  v.push_back(c);
  c = base("detgqacausal", 64);
  c.heads_q = 8;
  c.heads_kv = 2;
  c.seqlen_q = 300;
  c.seqlen_k = 700;
  c.causal = true;
  v.push_back(c);
  // Longer: a dozen key blocks and two dozen query blocks a head, so that many blocks race for
  // each dQ row (the order of their turns, not luck, has to make the runs agree).
  c = base("detlong", 128);
  c.batch = 1;
  c.seqlen_q = c.seqlen_k = 1537;
  c.heads_q = 4;
  c.heads_kv = 2;
  v.push_back(c);
  c = base("detlongcausal", 64);
  c.batch = 1;
  c.seqlen_q = 1600;
  c.seqlen_k = 1537;
  c.heads_q = 4;
  c.heads_kv = 1;
  c.causal = true;
  v.push_back(c);
  // More blocks than an H100/H200 runs at once (16 (kv head, batch) pairs × 9 key blocks = 144
  // at d = 64 on Hopper): two groups of the Hopper launch order, blocks that wait on blocks of
  // an earlier wave.
  c = base("detwave", 64);
  c.batch = 4;
  c.seqlen_q = c.seqlen_k = 1100;
  c.heads_q = 8;
  c.heads_kv = 4;
  c.causal = false;
  v.push_back(c);
  // seqused_k, causal, varlen GQA: key blocks past a sequence's used keys take no turn.
  c = base("detseqused", 128);
  c.lens_q = {300, 0, 129, 1};
  c.lens_k = {257, 64, 129, 400};
  c.seqused_k = {257, 10, 100, 399};
  c.heads_q = 4;
  c.heads_kv = 1;
  c.causal = true;
  v.push_back(c);
  return gpu_cases(v);
}

class GpuDeterministic : public GpuTest {};
TEST_P(GpuDeterministic, BitIdenticalRunsMatchReference) {
  check_backward(GetParam(), run_backward_gpu_repeated, run_forward_gpu);
}
INSTANTIATE_TEST_SUITE_P(Det, GpuDeterministic, ::testing::ValuesIn(deterministic_cases()), CaseName());

// ---- A user stream ----------------------------------------------------------------------------
// On a non-blocking stream (no implicit synchronisation with the legacy default stream, so any
// work of the backward, e.g. zeroing a workspace, that is not on options.stream races with it):
// the same bits as on the default stream, in the deterministic mode.
TEST(GpuBackwardStream, NonBlockingStreamSameBitsAsDefault) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  for (DType dt : {DType::f16, DType::bf16}) {
    Case c;
    c.dtype = dt;
    c.batch = 2;
    c.seqlen_q = 300;
    c.seqlen_k = 280;
    c.heads_q = 8;
    c.heads_kv = 2;
    c.head_dim = 128;
    c.causal = true;
    c.deterministic = true;
    if (gpu::backward_refused_on_this_gpu(c)) {
      expect_backward_error(c, kRefusedByLimit);
      continue;
    }
    Problem p(c);
    const ForwardRun f = run_forward_gpu(p);
    std::mt19937_64 rng(5);
    const Buf dout = p.make_dout(rng);
    const BackwardRun on_default = run_backward_gpu(p, f, dout);
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    p.opts.stream = stream;
    const BackwardRun on_stream = run_backward_gpu(p, f, dout);
    p.opts.stream = nullptr;
    EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    EXPECT_TRUE(same_storage(on_stream.dq, on_default.dq)) << dtype_tag(dt);
    EXPECT_TRUE(same_storage(on_stream.dk, on_default.dk)) << dtype_tag(dt);
    EXPECT_TRUE(same_storage(on_stream.dv, on_default.dv)) << dtype_tag(dt);
  }
}

// ---- Workspace --------------------------------------------------------------------------------
// The scratch from the caller, a buffer of backward_workspace_size() bytes or an allocate
// callback, gives the same bits as the library's own pool (deterministic mode); a buffer one
// float short is refused, naming 'workspace', before anything is written; and the device's
// default pool is left as the process set it: release threshold 0, nothing taken from it.
struct CountingAllocator {
  std::vector<size_t> sizes;
  std::vector<void*> buffers;
  static void* allocate(size_t bytes, void* context) {
    auto* self = static_cast<CountingAllocator*>(context);
    void* data = nullptr;
    if (cudaMalloc(&data, bytes) != cudaSuccess) return nullptr;
    self->sizes.push_back(bytes);
    self->buffers.push_back(data);
    return data;
  }
  ~CountingAllocator() {
    for (void* b : buffers) cudaFree(b);
  }
};

uint64_t default_pool_attribute(cudaMemPoolAttr attribute) {
  cudaMemPool_t pool = nullptr;
  EXPECT_EQ(cudaDeviceGetDefaultMemPool(&pool, 0), cudaSuccess);
  uint64_t value = 0;
  EXPECT_EQ(cudaMemPoolGetAttribute(pool, attribute, &value), cudaSuccess);
  return value;
}

TEST(GpuBackwardWorkspace, CallerScratchSameBitsDefaultPoolUntouched) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  const uint64_t threshold_before = default_pool_attribute(cudaMemPoolAttrReleaseThreshold);
  const uint64_t reserved_before = default_pool_attribute(cudaMemPoolAttrReservedMemCurrent);
  // Head dims of the Hopper kernels (64, 128, 256: turn counters in the deterministic mode) and
  // of the sm80 kernels alone (96), a varlen batch among them.
  for (int64_t d : {64, 96, 128, 256}) {
    Case c;
    c.dtype = DType::bf16;
    c.batch = 2;
    c.seqlen_q = 257;
    c.seqlen_k = 190;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = d;
    c.causal = d != 128;
    if (d == 128) {  // varlen, with the bounds given (so cu_seqlens is not read on the host)
      c.lens_q = {257, 0, 31};
      c.lens_k = {190, 64, 200};
      c.max_seqlen_q = 257;
      c.max_seqlen_k = 200;
    }
    c.deterministic = true;
    SCOPED_TRACE(c.name());
    if (gpu::backward_refused_on_this_gpu(c)) {
      expect_backward_error(c, kRefusedByLimit);
      continue;
    }
    Problem p(c);
    const ForwardRun f = run_forward_gpu(p);
    std::mt19937_64 rng(7);
    const Buf dout = p.make_dout(rng);
    const BackwardRun own_pool = run_backward_gpu(p, f, dout);

    CountingAllocator counting;
    p.opts.workspace.allocate = &CountingAllocator::allocate;
    p.opts.workspace.context = &counting;
    const BackwardRun by_callback = run_backward_gpu(p, f, dout);
    ASSERT_EQ(counting.sizes.size(), 1u) << "one allocation a call";
    EXPECT_TRUE(same_storage(by_callback.dq, own_pool.dq));
    EXPECT_TRUE(same_storage(by_callback.dk, own_pool.dk));
    EXPECT_TRUE(same_storage(by_callback.dv, own_pool.dv));

    // The size query agrees with what the call asked for.
    gpu::DeviceStorages dev;
    const gpu::DeviceOptions o(p.opts);
    BackwardRun g = p.make_grads();
    const size_t needed = flashattn::backward_workspace_size(
        dev.tensor(dout), dev.tensor(p.q), dev.tensor(p.k), dev.tensor(p.v), dev.tensor(f.out),
        dev.tensor(f.lse), dev.tensor(g.dq), dev.tensor(g.dk), dev.tensor(g.dv), o.get());
    EXPECT_EQ(needed, counting.sizes[0]);

    p.opts.workspace = flashattn::Workspace{};
    p.opts.workspace.data = counting.buffers[0];
    p.opts.workspace.bytes = needed;
    const BackwardRun by_buffer = run_backward_gpu(p, f, dout);
    EXPECT_TRUE(same_storage(by_buffer.dq, own_pool.dq));
    EXPECT_TRUE(same_storage(by_buffer.dk, own_pool.dk));
    EXPECT_TRUE(same_storage(by_buffer.dv, own_pool.dv));

    p.opts.workspace.bytes = needed - sizeof(float);
    const gpu::DeviceOptions short_o(p.opts);
    const flashattn::Tensor dq = dev.tensor(g.dq);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    try {
      flashattn::backward(dev.tensor(dout), dev.tensor(p.q), dev.tensor(p.k), dev.tensor(p.v),
                          dev.tensor(f.out), dev.tensor(f.lse), dq, dev.tensor(g.dk),
                          dev.tensor(g.dv), short_o.get());
      ADD_FAILURE() << "a workspace one float short was taken";
    } catch (const flashattn::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'workspace'"), std::string::npos) << e.what();
    }
    const std::vector<unsigned char> poisoned = g.dq.snapshot();
    dev.copy_back(g.dq);
    EXPECT_TRUE(g.dq.same_bytes(poisoned)) << "dq was written before the error";
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(default_pool_attribute(cudaMemPoolAttrReleaseThreshold), threshold_before);
  EXPECT_EQ(threshold_before, 0u) << "the device's default pool starts with threshold 0";
  EXPECT_EQ(default_pool_attribute(cudaMemPoolAttrReservedMemCurrent), reserved_before)
      << "the backward took memory from the device's default pool";
  EXPECT_NO_THROW(flashattn::release_workspace_pool());
}

// ---- Errors of the CUDA backward --------------------------------------------------------------
// What only the CUDA path refuses names the argument, and nothing is written (dq, dk, dv keep
// their NaN poison on the device).

// `tweak` may replace out, dout or a gradient buffer before the call.
void expect_backward_error(const Case& c, const std::string& needle,
                           const std::function<void(Buf& out, Buf& dout, BackwardRun& g)>& tweak) {
  SCOPED_TRACE(c.name() + ", expecting " + needle);
  Problem p(c);
  std::mt19937_64 rng(2);
  ForwardRun f{p.make_out(), p.make_lse()};  // the values do not matter: the call must refuse
  f.out.fill_normal(rng);
  for (int64_t i = 0; i < f.lse.numel(); ++i) f.lse.set(i, 1.0);
  Buf dout = p.make_dout(rng);
  BackwardRun g = p.make_grads();
  if (tweak) tweak(f.out, dout, g);
  gpu::DeviceStorages dev;
  const gpu::DeviceOptions o(p.opts);
  const flashattn::Tensor dq = dev.tensor(g.dq), dk = dev.tensor(g.dk), dv = dev.tensor(g.dv);
  const flashattn::Tensor q = dev.tensor(p.q), k = dev.tensor(p.k), v = dev.tensor(p.v),
                          out = dev.tensor(f.out), lse = dev.tensor(f.lse), d = dev.tensor(dout);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  try {
    flashattn::backward(d, q, k, v, out, lse, dq, dk, dv, o.get());
    ADD_FAILURE() << "no error";
  } catch (const flashattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (Buf* b : {&g.dq, &g.dk, &g.dv}) {
    const std::vector<unsigned char> before = b->snapshot();
    dev.copy_back(*b);
    EXPECT_TRUE(b->same_bytes(before)) << "a gradient was written before the error";
  }
}

TEST(GpuBackwardErrors, NamesTheArgument) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  Case c;
  c.dtype = DType::f16;
  c.batch = 2;
  c.seqlen_q = c.seqlen_k = 16;
  c.heads_q = 2;
  c.head_dim = 59;
  expect_backward_error(c, "'q'");  // head_dim not a multiple of 8
  c.head_dim = 64;
  c.dtype = DType::f32;
  expect_backward_error(c, "'q'");  // float32 on the GPU
  c.dtype = DType::bf16;
  c.head_dim_v = 32;
  expect_backward_error(c, "'v'");  // head_dim_v != head_dim
  c.head_dim_v = 0;
  // Rows not 16-byte aligned (gaps of 2 elements), in one tensor at a time.
  c.layout = Layout::gappy;
  c.pad = 2;
  expect_backward_error(c, "stride");
  c.layout = Layout::contiguous;
  c.pad = 0;
  auto misaligned = [](const Buf& like) {
    Buf b = Buf::gappy(like.dtype(), like.shape(), 2);
    b.set_values(like.values());
    return b;
  };
  expect_backward_error(c, "'out'", [&](Buf& out, Buf&, BackwardRun&) { out = misaligned(out); });
  expect_backward_error(c, "'dout'", [&](Buf&, Buf& dout, BackwardRun&) { dout = misaligned(dout); });
  expect_backward_error(c, "'dq'", [&](Buf&, Buf&, BackwardRun& g) { g.dq = misaligned(g.dq); });
  expect_backward_error(c, "'dk'", [&](Buf&, Buf&, BackwardRun& g) { g.dk = misaligned(g.dk); });
  expect_backward_error(c, "'dv'", [&](Buf&, Buf&, BackwardRun& g) { g.dv = misaligned(g.dv); });
}

// Under an emulated smaller GPU (FLASHATTN_TEST_SMEM_LIMIT=bytes: tools/gpu_check.sh runs the
// whole GPU suite so, the sm80 kernels forced), a backward kernel that needs more shared memory
// than that is refused by name, naming the variable, before anything is written. Skipped
// without it.
TEST(GpuSmemLimit, KernelOverTheLimitIsRefusedByName) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  if (std::getenv("FLASHATTN_TEST_SMEM_LIMIT") == nullptr) {
    GTEST_SKIP() << "FLASHATTN_TEST_SMEM_LIMIT is not set";
  }
  Case c;
  c.dtype = DType::bf16;
  c.seqlen_q = c.seqlen_k = 16;
  c.head_dim = 256;
  c.deterministic = true;  // its dQ kernel asks 202,752 bytes: more than any GPU but Hopper has
  ASSERT_TRUE(gpu::backward_refused_on_this_gpu(c));
  expect_backward_error(c, "FLASHATTN_TEST_SMEM_LIMIT");
}

}  // namespace
}  // namespace fa_test
