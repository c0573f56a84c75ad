// GPU forward against the float64 reference, under the tolerance rule of DESIGN §4: the same
// cases as the CPU tests (tests/cases.h), in fp16 and bf16, run through flashattn::forward on
// CUDA tensors whose storage mirrors the host buffers (poison and gaps included).
// Skipped, and reported as skipped, where there is no GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "cases.h"
#include "cuda/dispatch.h"
#include "gpu_harness.h"
#include "harness.h"
#include "shared_cases.h"

namespace fa_test {
namespace {

using gpu::have_gpu;
using gpu::run_forward_gpu;

// The CPU cases that the CUDA kernels serve, in fp16 and bf16 (gpu::gpu_cases), less the gappy
// and packed-qkv layouts: they pad by odd amounts, and that such rows are refused with a clear
// error is tested in GpuErrors.
std::vector<Case> gpu_cases(const std::vector<Case>& cpu) {
  std::vector<Case> aligned;
  for (const Case& c : cpu) {
    if (c.layout != Layout::gappy && c.layout != Layout::packed_qkv) aligned.push_back(c);
  }
  return gpu::gpu_cases(aligned);
}

class GpuForward : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  }
};
TEST_P(GpuForward, MatchesReference) { check_forward(GetParam(), run_forward_gpu); }
INSTANTIATE_TEST_SUITE_P(Seqlens, GpuForward, ::testing::ValuesIn(gpu_cases(shape_cases(false))), CaseName());
INSTANTIATE_TEST_SUITE_P(HeadDims, GpuForward, ::testing::ValuesIn(gpu_cases(head_dim_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(Heads, GpuForward, ::testing::ValuesIn(gpu_cases(heads_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(Long, GpuForward, ::testing::ValuesIn(gpu_cases(long_cases(false))), CaseName());
INSTANTIATE_TEST_SUITE_P(Options, GpuForward, ::testing::ValuesIn(gpu_cases(option_cases())), CaseName());

std::vector<Case> every_head_dim() {
  std::vector<Case> out;
  for (int64_t d = 8; d <= 256; d += 8) {
    Case c;
    c.label = "every_hdim";
    c.batch = 2;
    c.seqlen_q = 97;
    c.seqlen_k = 203;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = d;
    c.causal = d % 16 == 0;
    out.push_back(c);
  }
  return gpu_cases(out);
}
INSTANTIATE_TEST_SUITE_P(AllHeadDims, GpuForward, ::testing::ValuesIn(every_head_dim()), CaseName());

// The option, varlen, masking, dropout and layout grids at the Hopper kernels' head dims.
std::vector<Case> hopper_head_dim_cases() {
  return gpu_cases(gpu::at_hopper_head_dims({option_cases(), varlen_grid(), masked_grid(),
                                             dropout_grid(), layout_grid(Layout::head_major)}));
}
INSTANTIATE_TEST_SUITE_P(HopperHeadDims, GpuForward, ::testing::ValuesIn(hopper_head_dim_cases()),
                         CaseName());

// The decode kernel (cuda/dispatch.h, FwdPlan): decode steps (seqlen_q ≤ 16, where the library
// picks the split) with packed GQA/MQA heads, and every score option with the keys split a
// given number of ways (2, 3, and more splits than key blocks). Packed tile rows (seqlen_q ·
// group) of 1 to 16 take the 16-row tile; 24, 32 and 64 the 32-row tile up to d 128 (a partial
// tile, one full tile, two).
std::vector<Case> decode_cases() {
  std::vector<Case> out;
  for (int64_t sq : {1, 4, 16}) {
    for (auto [hq, hk] :
         std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {8, 2}, {6, 1}, {16, 2}}) {
      for (int64_t d : {64, 72, 128, 256}) {
        Case c;
        c.label = "decode";
        c.batch = 3;
        c.seqlen_q = sq;
        c.seqlen_k = d == 128 ? 4097 : 1025;
        c.heads_q = hq;
        c.heads_kv = hk;
        c.head_dim = d;
        c.causal = sq > 1;
        c.seqused_k = {1025, 7, 0};
        if (d == 128) c.seqused_k = {4097, 300, 1};
        out.push_back(c);
      }
    }
  }
  for (Case c : option_cases()) {
    if (c.dropout_p > 0.0f || c.varlen()) continue;
    for (int splits : {2, 3, 1000}) {
      c.num_splits = splits;
      out.push_back(c);
    }
  }
  return gpu_cases(out);
}
INSTANTIATE_TEST_SUITE_P(Decode, GpuForward, ::testing::ValuesIn(decode_cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(Paged, GpuForward, ::testing::ValuesIn(gpu_cases(paged_cases())), CaseName());

// A split forward is the same bits run to run.
TEST(GpuDecode, SplitIsDeterministic) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  Case c;
  c.dtype = DType::bf16;
  c.batch = 2;
  c.seqlen_q = 2;
  c.seqlen_k = 3000;
  c.heads_q = 8;
  c.heads_kv = 2;
  c.head_dim = 128;
  c.num_splits = 7;
  Problem p(c);
  const ForwardRun a = run_forward_gpu(p), b = run_forward_gpu(p);
  EXPECT_TRUE(a.out.bit_equal(b.out));
  EXPECT_TRUE(a.lse.bit_equal(b.lse));
}

// A split forward on a caller's workspace. Zeroed (Workspace::zeroed: a buffer kept for a
// stream's calls, zero-filled once), the decode kernel merges the splits of these short steps
// itself: the result passes the reference's check, is the combine kernel's bits
// (cuda/common/split_merge.cuh: the same order of sums), and the buffer comes back with its
// counters zero, call after call. Not zeroed (here full of 0xff bytes), the combine kernel
// merges, as on the library's pool. Shapes whose tiles the kernel can merge (16-row tiles, and
// a 32-row one), and one whose merge stays with the combine kernel (FwdPlan::merge_in_kernel:
// 128 splits of 16 rows at d 256), in between.
flashattn::Workspace g_workspace;
ForwardRun run_on_g_workspace(Problem& p) {
  p.opts.workspace = g_workspace;
  return run_forward_gpu(p);
}

TEST(GpuDecode, SplitOnCallerWorkspace) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  constexpr size_t kBytes = size_t{64} << 20;
  constexpr size_t kCounterBytes = flashattn::detail::cuda::kSplitCounterBytes;
  void* zeroed = nullptr;
  void* dirty = nullptr;
  ASSERT_EQ(cudaMalloc(&zeroed, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dirty, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(zeroed, 0, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemset(dirty, 0xff, kBytes), cudaSuccess);
  struct Shape {
    int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
    int num_splits;
  };
  for (const Shape& s : std::vector<Shape>{{1, 1, 5000, 32, 8, 128, 0},
                                          {3, 2, 3001, 8, 2, 64, 5},
                                          {1, 4, 9000, 32, 8, 256, 128},
                                          {2, 1, 700, 6, 1, 72, 0},
                                          {1, 4, 4096, 64, 8, 128, 8},  // the 32-row tile
                                          {1, 1, 5000, 32, 8, 128, 0}}) {
    Case c;
    c.dtype = DType::bf16;
    c.batch = s.batch;
    c.seqlen_q = s.seqlen_q;
    c.seqlen_k = s.seqlen_k;
    c.heads_q = s.heads_q;
    c.heads_kv = s.heads_kv;
    c.head_dim = s.head_dim;
    c.causal = s.seqlen_q > 1;
    c.num_splits = s.num_splits;
    SCOPED_TRACE(c.name());
    Problem p(c);
    const ForwardRun own_pool = run_forward_gpu(p);

    g_workspace = flashattn::Workspace{};
    g_workspace.data = dirty;
    g_workspace.bytes = kBytes;
    const ForwardRun on_dirty = run_on_g_workspace(p);
    EXPECT_TRUE(on_dirty.out.bit_equal(own_pool.out));
    EXPECT_TRUE(on_dirty.lse.bit_equal(own_pool.lse));

    g_workspace.data = zeroed;
    g_workspace.zeroed = true;
    const ForwardRun on_zeroed = check_forward(c, run_on_g_workspace);  // against the reference
    EXPECT_TRUE(on_zeroed.out.bit_equal(own_pool.out));
    EXPECT_TRUE(on_zeroed.lse.bit_equal(own_pool.lse));
    std::vector<int> counters(kCounterBytes / sizeof(int), -1);
    ASSERT_EQ(cudaMemcpy(counters.data(), zeroed, kCounterBytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(std::count(counters.begin(), counters.end(), 0), static_cast<long>(counters.size()))
        << "the zeroed workspace's counters were not left zero";
  }
  g_workspace = flashattn::Workspace{};
  cudaFree(zeroed);
  cudaFree(dirty);
}

// The dropout mask of the kernel, bit for bit: with V the identity (seqlen_k = head_dim), out[i][j]
// is P[i][j]·keep/(1 − p) with P > 0, so out is zero exactly where the kernel dropped (i, j).
TEST(GpuDropout, MaskEqualsSpecificationBitForBit) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  for (DType dt : {DType::f16, DType::bf16}) {
    for (int64_t d : {64, 256}) {
      Case c;
      c.dtype = dt;
      c.batch = 2;
      c.seqlen_q = 211;
      c.seqlen_k = d;
      c.heads_q = 3;
      c.heads_kv = 3;
      c.head_dim = d;
      c.dropout_p = 0.37f;
      c.qk_scale = 0.5;
      Problem p(c);
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t j = 0; j < d; ++j) {
          for (int64_t h = 0; h < c.heads_kv; ++h) {
            for (int64_t x = 0; x < d; ++x) {
              p.v.set(((b * d + j) * c.heads_kv + h) * d + x, x == j ? 1.0 : 0.0);
            }
          }
        }
      }
      const ForwardRun f = run_forward_gpu(p);
      int64_t mismatches = 0, dropped = 0;
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t i = 0; i < c.seqlen_q; ++i) {
          for (int64_t h = 0; h < c.heads_q; ++h) {
            for (int64_t j = 0; j < d; ++j) {
              const double o = f.out.get(((b * c.seqlen_q + i) * c.heads_q + h) * d + j);
              const bool keep = flashattn::dropout_keep(c.dropout_seed, c.dropout_offset,
                                                        c.dropout_p, b, h, c.heads_q, i, j);
              dropped += keep ? 0 : 1;
              if ((o != 0.0) != keep || !std::isfinite(o)) ++mismatches;
            }
          }
        }
      }
      EXPECT_EQ(mismatches, 0) << dtype_tag(dt) << " d=" << d;
      EXPECT_GT(dropped, 0);
    }
  }
}

// Errors that only the CUDA path raises name the argument.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const flashattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(GpuErrors, NamesTheArgument) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  auto run_case = [](Case c) {
    return [c] {
      Problem p(c);
      run_forward_gpu(p);
    };
  };
  Case c;
  c.dtype = DType::f16;
  c.seqlen_q = c.seqlen_k = 16;
  c.head_dim = 59;
  expect_error(run_case(c), "'q'");  // head_dim not a multiple of 8
  c.head_dim = 64;
  c.dtype = DType::f32;
  expect_error(run_case(c), "'q'");  // float32 on the GPU
  c.dtype = DType::f16;
  c.head_dim_v = 32;
  expect_error(run_case(c), "'v'");  // head_dim_v != head_dim
  c.head_dim_v = 0;
  c.layout = Layout::gappy;
  expect_error(run_case(c), "stride");  // rows not 16-byte aligned
  // The backward's errors: GpuBackwardErrors in test_backward_gpu.cpp.
}

// A build that left kernels out (FLASHATTN_HEAD_DIMS, FLASHATTN_DTYPES) refuses a call that needs
// one, naming the option. Skipped in a build of every kernel.
TEST(GpuErrors, KernelLeftOutOfTheBuildNamesTheOption) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU";
  using flashattn::detail::cuda::dtype_compiled;
  using flashattn::detail::cuda::head_dim_compiled;
  using flashattn::detail::cuda::kAllHeadDims;
  Case c;
  c.seqlen_q = c.seqlen_k = 16;
  c.dtype = dtype_compiled(DType::bf16) ? DType::bf16 : DType::f16;
  c.head_dim = 0;
  for (int d : kAllHeadDims) {
    if (head_dim_compiled(d)) c.head_dim = d;  // the largest compiled one
  }
  if (!dtype_compiled(DType::f16) || !dtype_compiled(DType::bf16)) {
    c.dtype = dtype_compiled(DType::f16) ? DType::bf16 : DType::f16;
    expect_error([c] { Problem p(c); run_forward_gpu(p); }, "FLASHATTN_DTYPES");
  } else if (c.head_dim < kAllHeadDims[std::size(kAllHeadDims) - 1]) {
    c.head_dim = kAllHeadDims[std::size(kAllHeadDims) - 1];
    expect_error([c] { Problem p(c); run_forward_gpu(p); }, "FLASHATTN_HEAD_DIMS");
  } else {
    GTEST_SKIP() << "this build has every kernel";
  }
}

}  // namespace
}  // namespace fa_test
