// CUDA dispatch: the checks only the kernels need, then one switch over dtype × head dim × score
// mods. Includes no kernel: the run_fwd / run_bwd it calls are defined in
// src/cuda/instantiations/.
#include "cuda/dispatch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/common/check.h"

namespace flashattn::detail::cuda {
namespace {

template <class E = Error>
[[noreturn]] void fail(const char* fn, const std::string& arg, const std::string& what) {
  throw E(std::string(fn) + ": argument '" + arg + "': " + what);
}

// 16-byte cp.async needs 16-byte aligned rows: pointer and every outer stride.
void check_aligned(const char* fn, const char* name, const void* data, const OperandStrides& s) {
  const bool ok = reinterpret_cast<uintptr_t>(data) % 16 == 0 && s.batch % 8 == 0 &&
                  s.row % 8 == 0 && s.head % 8 == 0;
  if (!ok) {
    fail<LayoutError>(fn, name,
         "CUDA kernels need a 16-byte aligned data pointer and strides that are multiples of 8 "
         "elements, got strides (batch " + std::to_string(s.batch) + ", row " +
             std::to_string(s.row) + ", head " + std::to_string(s.head) + ")");
  }
}

// The head dims this build compiled, for messages: "64, 128".
std::string compiled_head_dims() {
  std::string list;
  for (int d : kAllHeadDims) {
    if (head_dim_compiled(d)) list += (list.empty() ? "" : ", ") + std::to_string(d);
  }
  return list;
}

// The compiled head dim that serves head_dim (rounded up).
int compiled_head_dim(const char* fn, int64_t head_dim) {
  if (head_dim % 8 != 0) {
    fail<LayoutError>(fn, "q", "CUDA kernels need head_dim to be a multiple of 8, got " + std::to_string(head_dim));
  }
  for (int d : kAllHeadDims) {
    if (head_dim <= d && head_dim_compiled(d)) return d;
  }
  if (head_dim > kAllHeadDims[std::size(kAllHeadDims) - 1]) {
    fail(fn, "q", "head_dim must be ≤ 256, got " + std::to_string(head_dim));
  }
  fail(fn, "q", "this build has CUDA kernels for head dims " + compiled_head_dims() +
                    " only (FLASHATTN_HEAD_DIMS): none serves head_dim " +
                    std::to_string(head_dim) + "; rebuild with a head dim ≥ it");
}

// Makes `device` current for the call and restores the caller's device after it (one
// cudaGetDevice when they are the same, the usual case).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FLASHATTN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) {
      FLASHATTN_CUDA_CHECK(cudaSetDevice(device));
      switched_ = true;
    }
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

// The compiled head dim whose kernels serve p: the least compiled one ≥ p.head_dim, except on a
// Hopper GPU, where a head dim without a Hopper tile (those are 64, 128 and 256) takes the next
// compiled one that has, for the calls that the Hopper kernels serve: the wgmma kernels at the
// padded width run faster than the sm80 kernels at the exact one (H200, bf16, seqlen 1k–16k:
// forward 1.4–2.3× at d 96–224, forward + backward 1.1–1.9× at d 32–224). Not the forward at
// d 32 (0.81–0.99×), nor the decode kernel, which is the sm80 family's on every GPU.
int kernel_head_dim(const char* fn, const AttentionParams& p, bool backward) {
  const int head_dim = compiled_head_dim(fn, p.head_dim);
  if (head_dim == 64 || head_dim == 128 || head_dim == 256 || !use_sm90(p.device.index)) {
    return head_dim;
  }
  if (!backward && (head_dim <= 32 || takes_decode_kernel(p))) return head_dim;
  for (int d : {64, 128, 256}) {
    if (head_dim < d && head_dim_compiled(d)) return d;
  }
  return head_dim;
}

// What the kernels need beyond the API's checks; returns the compiled head dim that serves p.
int check_kernel_params(const char* fn, const AttentionParams& p, bool backward) {
  const int head_dim = kernel_head_dim(fn, p, backward);
  if (p.head_dim_v != p.head_dim) {
    fail<LayoutError>(fn, "v", "CUDA kernels need head_dim_v == head_dim (" + std::to_string(p.head_dim) +
                      "), got " + std::to_string(p.head_dim_v));
  }
  if (p.batch > 65535 || p.heads_q > 65535) {
    fail(fn, "q", "CUDA kernels take batch and heads_q ≤ 65535, got " + std::to_string(p.batch) +
                      " and " + std::to_string(p.heads_q));
  }
  check_aligned(fn, "q", p.q, p.q_stride);
  check_aligned(fn, "k", p.k, p.k_stride);
  check_aligned(fn, "v", p.v, p.v_stride);
  return head_dim;
}

// softmax_scale ≤ 0 takes the score-mods path too: the plain path folds the scale into exp2
// after the row max, which is only right for a positive scale.
bool needs_score_mods(const AttentionParams& p) {
  return p.softcap > 0.0f || p.alibi_slopes != nullptr || p.dropout_p > 0.0f || !(p.scale > 0.0f);
}

// One dispatch over dtype × compiled head dim × score mods: calls
// run(T{}, std::integral_constant<int, head dim>{}, std::bool_constant<score mods>{}).
template <class Run>
void dispatch_kernel(const char* fn, const AttentionParams& p, int head_dim, Run&& run) {
  auto with_mods = [&](auto dtype, auto hd) {
    if (needs_score_mods(p)) {
      run(dtype, hd, std::true_type{});
    } else {
      run(dtype, hd, std::false_type{});
    }
  };
  auto with_head_dim = [&](auto dtype) {
    // compiled_head_dim returns compiled head dims only; the others are not even referenced.
    auto run_dim = [&](auto hd) {
      if constexpr (head_dim_compiled(decltype(hd)::value)) {
        with_mods(dtype, hd);
      } else {
        throw Error(std::string(fn) + ": internal error: head dim " +
                    std::to_string(decltype(hd)::value) + " was not compiled");
      }
    };
    switch (head_dim) {
      case 32: return run_dim(std::integral_constant<int, 32>{});
      case 64: return run_dim(std::integral_constant<int, 64>{});
      case 96: return run_dim(std::integral_constant<int, 96>{});
      case 128: return run_dim(std::integral_constant<int, 128>{});
      case 160: return run_dim(std::integral_constant<int, 160>{});
      case 192: return run_dim(std::integral_constant<int, 192>{});
      case 224: return run_dim(std::integral_constant<int, 224>{});
      case 256: return run_dim(std::integral_constant<int, 256>{});
      default: break;
    }
    throw Error(std::string(fn) + ": internal error: no kernel compiled for head dim " +
                std::to_string(head_dim));
  };
  auto not_compiled = [&] {
    fail(fn, "q", std::string("this build has no CUDA kernels for ") + dtype_name(p.dtype) +
                      " (FLASHATTN_DTYPES): rebuild with it");
  };
  switch (p.dtype) {
    case DType::f16:
      if constexpr (dtype_compiled(DType::f16)) return with_head_dim(__half{});
      return not_compiled();
    case DType::bf16:
      if constexpr (dtype_compiled(DType::bf16)) return with_head_dim(__nv_bfloat16{});
      return not_compiled();
    case DType::f32:
    case DType::f64:
      fail(fn, "q", std::string("CUDA kernels take float16 or bfloat16, got ") +
                        dtype_name(p.dtype) + " (the CPU takes float32 and float64)");
    case DType::i32: break;
  }
  fail(fn, "q", std::string("unexpected dtype ") + dtype_name(p.dtype));
}

constexpr int kMaxDevices = 64;

// A value per device, computed once (devices 0 … kMaxDevices − 1; others get `fallback`). Each
// caller's `read` (a distinct lambda type) gets its own cache.
template <class V, class Read>
V once_per_device(int device, V fallback, Read read) {
  static std::once_flag once[kMaxDevices];
  static V value[kMaxDevices] = {};
  if (device < 0 || device >= kMaxDevices) return fallback;
  std::call_once(once[device], [&] { value[device] = read(device); });
  return value[device];
}

// The same for a value of one (kernel, device) pair: a handful of entries, searched under a lock;
// nothing is kept when `read` throws. Each caller's `read` gets its own cache.
template <class V, class Read>
V once_per_kernel(const void* kernel, int device, Read read) {
  static std::mutex mutex;
  static std::vector<std::pair<std::pair<const void*, int>, V>> known;
  const std::lock_guard<std::mutex> lock(mutex);
  for (const auto& [key, value] : known) {
    if (key.first == kernel && key.second == device) return value;
  }
  const V value = read();
  known.push_back({{kernel, device}, value});
  return value;
}

int device_attribute(cudaDeviceAttr attribute, int device) {
  int v = 0;
  FLASHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&v, attribute, device));
  return v;
}

// ---- The backward's workspace ------------------------------------------------------------------
// The library's own stream-ordered pool of a device: created on first use, never the device's
// default pool (whose settings belong to the process). Its release threshold is the maximum, so
// that a synchronisation does not hand its memory back to the driver and the next call does not
// map it again (with the default pool's threshold of 0 that cost 0.36 ms a synchronised
// fwd+bwd at seqlen 512 on an H200); release_workspace_pool() trims it.
std::mutex pools_mutex;
cudaMemPool_t pools[kMaxDevices] = {};

cudaMemPool_t library_pool(int device) {
  if (device < 0 || device >= kMaxDevices) {
    throw Error("flashattn: argument 'q': device index " + std::to_string(device) +
                " is out of range for the workspace pool (pass Options::workspace)");
  }
  const std::lock_guard<std::mutex> lock(pools_mutex);
  if (pools[device] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    FLASHATTN_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    uint64_t keep = UINT64_MAX;
    FLASHATTN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    pools[device] = pool;
  }
  return pools[device];
}

// The scratch of one call: the caller's buffer, the caller's allocation, or one from the
// library's pool (freed, stream-ordered, when the call has enqueued its work). `size_fn` names the
// function that tells the caller the size.
class Scratch {
 public:
  Scratch(const char* fn, const char* size_fn, const AttentionParams& p, const Workspace& w,
          size_t bytes, cudaStream_t stream)
      : stream_(stream) {
    if (bytes == 0) return;
    if (w.data != nullptr && (w.bytes >= bytes || w.allocate == nullptr)) {
      if (w.bytes < bytes) {
        fail(fn, "workspace", "the buffer has " + std::to_string(w.bytes) + " bytes, this call needs " +
                                   std::to_string(bytes) + " (" + size_fn + ")");
      }
      data_ = w.data;
      zeroed_ = w.zeroed;
    } else if (w.allocate != nullptr) {
      data_ = w.allocate(bytes, w.context);
      if (data_ == nullptr) {
        fail(fn, "workspace", "the allocate callback returned null for " + std::to_string(bytes) +
                                   " bytes");
      }
    } else {
      FLASHATTN_CUDA_CHECK(
          cudaMallocFromPoolAsync(&data_, bytes, library_pool(p.device.index), stream));
      owned_ = true;
    }
    if (reinterpret_cast<uintptr_t>(data_) % 16 != 0) {
      fail(fn, "workspace", "the buffer must be 16-byte aligned");
    }
  }
  ~Scratch() {
    if (owned_) cudaFreeAsync(data_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* data() const { return data_; }
  // The caller's buffer with Workspace::zeroed (the library's own pool and an allocation: false).
  bool zeroed() const { return zeroed_; }

 private:
  void* data_ = nullptr;
  bool zeroed_ = false;
  cudaStream_t stream_;
  bool owned_ = false;
};

}  // namespace

void combine(const CombineParams& p) {
  const DeviceGuard guard(p.device.index);
  launch_combine(p, static_cast<cudaStream_t>(p.stream));
}

void release_workspace_pool() {
  const std::lock_guard<std::mutex> lock(pools_mutex);
  for (cudaMemPool_t pool : pools) {
    if (pool != nullptr) FLASHATTN_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
  }
}

namespace {
// FLASHATTN_TEST_SMEM_LIMIT (tests only, read once): bytes of shared memory a block, to emulate a
// smaller GPU; 0 when unset.
long long emulated_smem_limit() {
  static const long long emulated = [] {
    const char* env = std::getenv("FLASHATTN_TEST_SMEM_LIMIT");
    return env != nullptr ? std::atoll(env) : 0LL;
  }();
  return emulated;
}

// The shared memory a block may use on `device`: its opt-in maximum, or the emulated one where
// smaller.
long long smem_limit(int device) {
  const long long limit = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const long long emulated = emulated_smem_limit();
  return emulated > 0 && emulated < limit ? emulated : limit;
}

// The most dynamic shared memory `kernel` may ask for on `device`: smem_limit less the kernel's
// static shared memory, as the runtime counts it when the attribute is set. Read once per
// (kernel, device).
long long dynamic_smem_limit(const void* kernel, int device) {
  return once_per_kernel<long long>(kernel, device, [&] {
    cudaFuncAttributes attributes{};
    FLASHATTN_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    return smem_limit(device) - static_cast<long long>(attributes.sharedSizeBytes);
  });
}
}  // namespace

bool dynamic_smem_fits(const void* kernel, size_t bytes, int device) {
  return static_cast<long long>(bytes) <= dynamic_smem_limit(kernel, device);
}

void allow_dynamic_smem(const void* kernel, size_t bytes, int device, const char* what,
                        int head_dim) {
  if (bytes <= 48 * 1024) return;
  once_per_kernel<bool>(kernel, device, [&] {
    const long long available = dynamic_smem_limit(kernel, device);
    if (static_cast<long long>(bytes) > available) {
      const long long limit = smem_limit(device), fixed = limit - available;
      throw Error(std::string("flashattn: ") + what + " for head dim " + std::to_string(head_dim) +
                  " needs " + std::to_string(static_cast<long long>(bytes) + fixed) +
                  " bytes of shared memory a block; device " + std::to_string(device) +
                  " (compute capability " +
                  std::to_string(device_attribute(cudaDevAttrComputeCapabilityMajor, device)) +
                  "." +
                  std::to_string(device_attribute(cudaDevAttrComputeCapabilityMinor, device)) +
                  ") allows " + std::to_string(limit) +
                  (limit == emulated_smem_limit() ? " (FLASHATTN_TEST_SMEM_LIMIT)" : "") +
                  ": this head dim has no kernel for this GPU yet");
    }
    FLASHATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(bytes)));
    return true;
  });
}

bool use_sm90(int device) {
  static const bool disabled = env_flag("FLASHATTN_DISABLE_SM90");
  if (disabled) return false;
  // sm_90a code runs on compute capability 9.0 only.
  return once_per_device(device, false, [](int d) {
    return device_attribute(cudaDevAttrComputeCapabilityMajor, d) == 9 &&
           device_attribute(cudaDevAttrComputeCapabilityMinor, d) == 0;
  });
}

int blocks_per_multiprocessor(const void* kernel, int threads, size_t smem_bytes, int device) {
  return once_per_kernel<int>(kernel, device, [&] {
    int blocks = 0;
    FLASHATTN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem_bytes));
    return blocks > 0 ? blocks : 1;
  });
}

int split_count(int64_t requested, int64_t key_blocks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({requested, key_blocks, kMaxSplits})));
}

int choose_num_splits(int64_t blocks, int64_t key_blocks, int64_t slots) {
  if (blocks * 5 >= slots * 4 || key_blocks < 2) return 1;
  // One wave: the most splits whose blocks all run at once. The kernel waits on DRAM, so what
  // counts is how many SMs stream, and a second wave would only add a tail.
  return split_count(std::max<int64_t>(1, slots / blocks), key_blocks);
}

int multiprocessors(int device) {
  const int count = once_per_device(device, 1, [](int d) {
    return device_attribute(cudaDevAttrMultiProcessorCount, d);
  });
  return count > 0 ? count : 1;
}

namespace {
// The checks of the forward's kernels; false when there is no work.
bool forward_has_work(const char* fn, const AttentionParams& p, int* head_dim) {
  *head_dim = check_kernel_params(fn, p, /*backward=*/false);
  if (p.block_table != nullptr && p.dropout_p > 0.0f) {
    fail(fn, "dropout_p", "a paged KV cache on CUDA takes dropout_p = 0 (inference), got " +
                              std::to_string(p.dropout_p));
  }
  check_aligned(fn, "out", p.out, p.out_stride);
  return !(p.batch == 0 || p.seqlen_q == 0);
}
}  // namespace

size_t forward_workspace_bytes(const AttentionParams& p) {
  constexpr const char* fn = "flashattn::forward_workspace_size";
  int head_dim = 0;
  if (!forward_has_work(fn, p, &head_dim)) return 0;
  const DeviceGuard guard(p.device.index);
  size_t bytes = 0;
  dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
    bytes = plan_fwd<decltype(dtype), decltype(hd)::value, decltype(mods)::value>(p).workspace_bytes;
  });
  return bytes;
}

void forward(const AttentionParams& p, const Workspace& workspace) {
  constexpr const char* fn = "flashattn::forward";
  int head_dim = 0;
  const bool work = forward_has_work(fn, p, &head_dim);
  if (!work && !p.is_varlen) return;  // (a varlen call still writes its spare rows)
  const DeviceGuard guard(p.device.index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  if (work) {
    dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
      using T = decltype(dtype);
      constexpr int kHeadDim = decltype(hd)::value;
      constexpr bool kScoreMods = decltype(mods)::value;
      FwdPlan plan = plan_fwd<T, kHeadDim, kScoreMods>(p);
      const Scratch scratch(fn, "forward_workspace_size", p, workspace, plan.workspace_bytes, stream);
      // The kernel merges its splits only on counters that start at zero: clearing them (a
      // memset node) cost a CUDA graph's decode step more than the combine kernel does.
      plan.merge_in_kernel = plan.merge_in_kernel && scratch.zeroed();
      run_fwd<T, kHeadDim, kScoreMods>(p, plan, scratch.data(), stream);
    });
  }
  write_varlen_tails(p, /*backward=*/false, stream);
}


namespace {
// The checks of the backward's kernels; false when there is no work.
bool backward_has_work(const char* fn, const AttentionParams& p, int* head_dim) {
  *head_dim = check_kernel_params(fn, p, /*backward=*/true);
  check_aligned(fn, "out", p.out, p.out_stride);
  check_aligned(fn, "dout", p.dout, p.dout_stride);
  check_aligned(fn, "dq", p.dq, p.dq_stride);
  check_aligned(fn, "dk", p.dk, p.dk_stride);
  check_aligned(fn, "dv", p.dv, p.dv_stride);
  return !(p.batch == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0));
}
}  // namespace

size_t backward_workspace_bytes(const AttentionParams& p) {
  constexpr const char* fn = "flashattn::backward_workspace_size";
  int head_dim = 0;
  if (!backward_has_work(fn, p, &head_dim)) return 0;
  const DeviceGuard guard(p.device.index);
  size_t bytes = 0;
  dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
    bytes = bwd_workspace_bytes<decltype(dtype), decltype(hd)::value, decltype(mods)::value>(p);
  });
  return bytes;
}

void backward(const AttentionParams& p, const Workspace& workspace) {
  constexpr const char* fn = "flashattn::backward";
  int head_dim = 0;
  const bool work = backward_has_work(fn, p, &head_dim);
  if (!work && !p.is_varlen) return;  // (a varlen call still writes its spare rows)
  const DeviceGuard guard(p.device.index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  if (work) {
    dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
      using T = decltype(dtype);
      constexpr int kHeadDim = decltype(hd)::value;
      constexpr bool kScoreMods = decltype(mods)::value;
      const Scratch scratch(fn, "backward_workspace_size", p, workspace,
                            bwd_workspace_bytes<T, kHeadDim, kScoreMods>(p), stream);
      run_bwd<T, kHeadDim, kScoreMods>(p, scratch.data(), stream);
    });
  }
  write_varlen_tails(p, /*backward=*/true, stream);
}

}  // namespace flashattn::detail::cuda
