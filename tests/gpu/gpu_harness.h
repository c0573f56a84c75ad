// The GPU side of the test harness: device copies of the harness's host buffers (poison, NaN gaps
// and shared storages included) and the forward/backward runners that check_forward and
// check_backward take, so that the CPU case grids run on CUDA tensors unchanged.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cases.h"
#include "gpu_support.h"
#include "harness.h"

namespace fa_test::gpu {

inline bool have_gpu() { return flashattn::cuda_compiled() && flashattn::cuda_device_count() > 0; }

inline constexpr flashattn::Device kGpu{flashattn::DeviceType::cuda, 0};

// The shared memory a block may use on device 0: its own limit, or the smaller GPU the tests
// emulate on a Hopper one (tools/gpu_check.sh sets FLASHATTN_TEST_SMEM_LIMIT, with the sm80
// kernels forced), whichever is smaller.
inline long long smem_limit_under_test() {
  int optin = 0;
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) != cudaSuccess) {
    return 0;
  }
  const char* env = std::getenv("FLASHATTN_TEST_SMEM_LIMIT");
  const long long emulated = env != nullptr ? std::atoll(env) : 0;
  return emulated > 0 && emulated < optin ? emulated : optin;
}

// Whether the backward of `c` is refused on this GPU (or the emulated one): the README's rule
// (tests/gpu_support.h). A call with nothing to do, or without query rows for the dQ kernel,
// meets no kernel to refuse it.
inline bool backward_refused_on_this_gpu(const Case& c) {
  const long long limit = smem_limit_under_test();
  if (limit <= 0) return false;
  int64_t rows_q = 0, rows_k = 0;
  if (c.varlen()) {
    for (int64_t n : c.lens_q) rows_q += n;
    for (int64_t n : c.lens_k) rows_k += n;
  } else {
    rows_q = c.nbatch() * c.seqlen_q;
    rows_k = c.nbatch() * c.seqlen_k;
  }
  if (rows_q == 0 && rows_k == 0) return false;
  const int64_t d = (std::max(c.head_dim, c.dv()) + 31) / 32 * 32;  // the compiled head dim
  return backward_refused(limit, d, c.deterministic && rows_q > 0);
}

// One device copy per host storage: views that share a host storage (the slices of a packed qkv
// buffer, of a packed dq/dk/dv buffer) share the device copy, as they would in a real program.
// Each copy starts as the host bytes: the NaN poison of outputs and the NaN in gaps travel along.
class DeviceStorages {
 public:
  DeviceStorages() = default;
  ~DeviceStorages() {
    for (auto& [host, e] : copies_) cudaFree(e.device);
  }
  DeviceStorages(const DeviceStorages&) = delete;
  DeviceStorages& operator=(const DeviceStorages&) = delete;

  // The CUDA tensor of the view `host` (its storage copied to the device on first use).
  flashattn::Tensor tensor(const Buf& host) {
    const Entry& e = entry(host);
    flashattn::Tensor t = host.tensor(kGpu);
    t.data = static_cast<unsigned char*>(e.device) +
             (static_cast<unsigned char*>(t.data) - static_cast<unsigned char*>(host.base()));
    return t;
  }
  // The device storage of `host` copied over its host storage.
  void copy_back(Buf& host) const {
    const auto it = copies_.find(host.base());
    ASSERT_NE(it, copies_.end()) << "copy_back of a buffer that was never copied to the device";
    EXPECT_EQ(cudaMemcpy(host.base(), it->second.device, it->second.bytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  // Whether the device storage of `host` still holds the host's bytes (inputs are read-only).
  bool unchanged(const Buf& host) const {
    const auto it = copies_.find(host.base());
    if (it == copies_.end()) return true;
    std::vector<unsigned char> now(it->second.bytes);
    EXPECT_EQ(cudaMemcpy(now.data(), it->second.device, now.size(), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host.same_bytes(now);
  }

 private:
  struct Entry {
    void* device = nullptr;
    size_t bytes = 0;
  };
  const Entry& entry(const Buf& host) {
    auto it = copies_.find(host.base());
    if (it != copies_.end()) return it->second;
    Entry e;
    e.bytes = static_cast<size_t>(host.storage_elems()) * host.elem_size();
    EXPECT_EQ(cudaMalloc(&e.device, e.bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(e.device, host.base(), e.bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return copies_.emplace(host.base(), e).first->second;
  }
  std::map<const void*, Entry> copies_;
};

// A contiguous option tensor (cu_seqlens, seqused_k, alibi_slopes, block_table) on the device.
class DeviceVector {
 public:
  explicit DeviceVector(const std::optional<flashattn::Tensor>& host) {
    if (!host) return;
    tensor_ = *host;
    const size_t bytes = static_cast<size_t>(host->numel()) * flashattn::dtype_size(host->dtype);
    if (bytes > 0) {
      EXPECT_EQ(cudaMalloc(&device_, bytes), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(device_, host->data, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    tensor_->data = device_;
    tensor_->device = kGpu;
  }
  ~DeviceVector() {
    if (device_) cudaFree(device_);
  }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  const std::optional<flashattn::Tensor>& tensor() const { return tensor_; }

 private:
  void* device_ = nullptr;
  std::optional<flashattn::Tensor> tensor_;
};

// The problem's options with their tensors on the device (stream and flags unchanged).
class DeviceOptions {
 public:
  explicit DeviceOptions(const flashattn::Options& host)
      : cu_q_(host.cu_seqlens_q), cu_k_(host.cu_seqlens_k), used_(host.seqused_k),
        alibi_(host.alibi_slopes), table_(host.block_table), opts_(host) {
    opts_.cu_seqlens_q = cu_q_.tensor();
    opts_.cu_seqlens_k = cu_k_.tensor();
    opts_.seqused_k = used_.tensor();
    opts_.alibi_slopes = alibi_.tensor();
    opts_.block_table = table_.tensor();
  }
  const flashattn::Options& get() const { return opts_; }

 private:
  DeviceVector cu_q_, cu_k_, used_, alibi_, table_;
  flashattn::Options opts_;
};

// flashattn::forward on CUDA copies of the problem (outputs poisoned, gaps checked untouched).
inline ForwardRun run_forward_gpu(Problem& p) {
  ForwardRun f{p.make_out(), p.make_lse()};  // poisoned
  DeviceStorages dev;
  const DeviceOptions o(p.opts);
  const flashattn::Tensor q = dev.tensor(p.q), k = dev.tensor(p.k_in()), v = dev.tensor(p.v_in()),
                          out = dev.tensor(f.out), lse = dev.tensor(f.lse);
  // The copies are on the legacy default stream; options.stream may be a non-blocking one.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  flashattn::forward(q, k, v, out, lse, o.get());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  dev.copy_back(f.out);
  dev.copy_back(f.lse);
  for (const Buf* b : std::initializer_list<const Buf*>{&p.q, &p.k_in(), &p.v_in()}) {
    EXPECT_TRUE(dev.unchanged(*b)) << "forward: an input buffer was modified on the device";
  }
  EXPECT_EQ(f.out.gaps_written(), 0) << "the kernel wrote outside the view of out";
  EXPECT_EQ(f.lse.gaps_written(), 0) << "the kernel wrote outside the view of lse";
  return f;
}

// flashattn::backward on CUDA copies of the problem, of the forward's saved out and lse, and of
// dout. dq, dk, dv start on the device as the harness's NaN poison (gaps too); afterwards every
// input storage must be unchanged and every gap of dq/dk/dv still poisoned.
inline BackwardRun run_backward_gpu(Problem& p, const ForwardRun& f, const Buf& dout) {
  BackwardRun g = p.make_grads();
  DeviceStorages dev;
  const DeviceOptions o(p.opts);
  // The gradients first: a packed dq/dk/dv buffer is one device storage that the three slice.
  const flashattn::Tensor dq = dev.tensor(g.dq), dk = dev.tensor(g.dk), dv = dev.tensor(g.dv);
  const flashattn::Tensor q = dev.tensor(p.q), k = dev.tensor(p.k), v = dev.tensor(p.v),
                          out = dev.tensor(f.out), lse = dev.tensor(f.lse), d = dev.tensor(dout);
  // The copies are on the legacy default stream; options.stream may be a non-blocking one.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  flashattn::backward(d, q, k, v, out, lse, dq, dk, dv, o.get());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  dev.copy_back(g.dq);
  dev.copy_back(g.dk);
  dev.copy_back(g.dv);
  for (const Buf* b : std::initializer_list<const Buf*>{&p.q, &p.k, &p.v, &f.out, &f.lse, &dout}) {
    EXPECT_TRUE(dev.unchanged(*b)) << "backward: an input buffer was modified on the device";
  }
  if (p.c.layout != Layout::packed_qkv) {
    EXPECT_EQ(g.dq.gaps_written(), 0) << "the kernel wrote outside the view of dq";
    EXPECT_EQ(g.dk.gaps_written(), 0) << "the kernel wrote outside the view of dk";
    EXPECT_EQ(g.dv.gaps_written(), 0) << "the kernel wrote outside the view of dv";
  }
  return g;
}

// The cases of a CPU grid that the CUDA kernels serve, in fp16 and bf16: head_dim a multiple of 8
// and head_dim_v = head_dim. Strided layouts are kept with gaps of 8 elements (16 bytes), so that
// every row stays aligned as the kernels require; num_threads (CPU only) is dropped. Duplicates
// (cases that differed only in what is dropped) are removed.
inline std::vector<Case> gpu_cases(const std::vector<Case>& cpu) {
  std::vector<Case> out;
  std::set<std::string> seen;
  for (Case c : cpu) {
    if (c.head_dim % 8 != 0 || c.dv() != c.head_dim) continue;
    if (c.layout == Layout::gappy || c.layout == Layout::packed_qkv) c.pad = 8;
    c.num_threads = 0;
    for (DType dt : {DType::f16, DType::bf16}) {
      c.dtype = dt;
      if (seen.insert(c.name()).second) out.push_back(c);
    }
  }
  return out;
}

// The cases of the given grids again at head dims of the Hopper kernels (128, 256, 64, and 96
// and 192, which they serve padded to 128 and 256; in turn over the cases; the grids mostly use
// 32, whose forward only the sm80 kernels take), labelled hopper_…, for the caller's gpu_cases: on
// an H100 they run the sm90 kernels (FLASHATTN_DISABLE_SM90=1 runs them on the sm80 ones).
inline std::vector<Case> at_hopper_head_dims(const std::vector<std::vector<Case>>& grids) {
  constexpr int64_t kDims[] = {128, 256, 64, 96, 192};
  std::vector<Case> out;
  size_t i = 0;
  for (const auto& grid : grids) {
    for (Case c : grid) {
      c.label = "hopper_" + c.label;
      c.head_dim = kDims[i++ % 5];
      c.head_dim_v = 0;  // = head_dim
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace fa_test::gpu
