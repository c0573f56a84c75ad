// CUDA dispatch: the checks only the kernels need, then one switch over dtype × head dim × score
// mods. Includes no kernel: the run_fwd / run_bwd it calls are defined in
// src/cuda/instantiations/.
#include "cuda/dispatch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#include "cuda/common/check.h"

namespace flashattn::detail::cuda {
namespace {

[[noreturn]] void fail(const char* fn, const std::string& arg, const std::string& what) {
  throw Error(std::string(fn) + ": argument '" + arg + "': " + what);
}

// 16-byte cp.async needs 16-byte aligned rows: pointer and every outer stride.
void check_aligned(const char* fn, const char* name, const void* data, const OperandStrides& s) {
  const bool ok = reinterpret_cast<uintptr_t>(data) % 16 == 0 && s.batch % 8 == 0 &&
                  s.row % 8 == 0 && s.head % 8 == 0;
  if (!ok) {
    fail(fn, name,
         "CUDA kernels need a 16-byte aligned data pointer and strides that are multiples of 8 "
         "elements, got strides (batch " + std::to_string(s.batch) + ", row " +
             std::to_string(s.row) + ", head " + std::to_string(s.head) + ")");
  }
}

// The compiled head dim that serves head_dim (rounded up).
int compiled_head_dim(const char* fn, int64_t head_dim) {
  if (head_dim % 8 != 0) {
    fail(fn, "q", "CUDA kernels need head_dim to be a multiple of 8, got " + std::to_string(head_dim));
  }
  for (int d : kCompiledHeadDims) {
    if (head_dim <= d) return d;
  }
  fail(fn, "q", "head_dim must be ≤ 256, got " + std::to_string(head_dim));
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FLASHATTN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) FLASHATTN_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// What the kernels need beyond the API's checks; returns the compiled head dim that serves p.
int check_kernel_params(const char* fn, const AttentionParams& p) {
  const int head_dim = compiled_head_dim(fn, p.head_dim);
  if (p.head_dim_v != p.head_dim) {
    fail(fn, "v", "CUDA kernels need head_dim_v == head_dim (" + std::to_string(p.head_dim) +
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
    switch (head_dim) {
      case 32: return with_mods(dtype, std::integral_constant<int, 32>{});
      case 64: return with_mods(dtype, std::integral_constant<int, 64>{});
      case 96: return with_mods(dtype, std::integral_constant<int, 96>{});
      case 128: return with_mods(dtype, std::integral_constant<int, 128>{});
      case 160: return with_mods(dtype, std::integral_constant<int, 160>{});
      case 192: return with_mods(dtype, std::integral_constant<int, 192>{});
      case 224: return with_mods(dtype, std::integral_constant<int, 224>{});
      case 256: return with_mods(dtype, std::integral_constant<int, 256>{});
      default: break;
    }
    throw Error(std::string(fn) + ": internal error: no kernel compiled for head dim " +
                std::to_string(head_dim));
  };
  switch (p.dtype) {
    case DType::f16: return with_head_dim(__half{});
    case DType::bf16: return with_head_dim(__nv_bfloat16{});
    case DType::f32:
    case DType::f64:
      fail(fn, "q", std::string("CUDA kernels take float16 or bfloat16, got ") +
                        dtype_name(p.dtype) + " (the CPU takes float32 and float64)");
    case DType::i32: break;
  }
  fail(fn, "q", std::string("unexpected dtype ") + dtype_name(p.dtype));
}

// A switch from the environment: set, and neither empty nor "0".
bool env_flag(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, "") != 0 && std::strcmp(env, "0") != 0;
}

// A device's attribute, read once a device (devices 0 … kMaxDevices − 1; others read `fallback`).
// Each caller's `read` (a distinct lambda type) gets its own cache.
template <class Read>
int once_per_device(int device, int fallback, Read read) {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static int value[kMaxDevices] = {};
  if (device < 0 || device >= kMaxDevices) return fallback;
  std::call_once(once[device], [&] { value[device] = read(device); });
  return value[device];
}

int device_attribute(cudaDeviceAttr attribute, int device) {
  int v = 0;
  FLASHATTN_CUDA_CHECK(cudaDeviceGetAttribute(&v, attribute, device));
  return v;
}

}  // namespace

bool use_sm90(int device) {
  static const bool disabled = env_flag("FLASHATTN_DISABLE_SM90");
  if (disabled) return false;
  // sm_90a code runs on compute capability 9.0 only.
  return once_per_device(device, 0, [](int d) {
    return device_attribute(cudaDevAttrComputeCapabilityMajor, d) == 9 &&
           device_attribute(cudaDevAttrComputeCapabilityMinor, d) == 0;
  }) != 0;
}

int multiprocessors(int device) {
  const int count = once_per_device(device, 1, [](int d) {
    return device_attribute(cudaDevAttrMultiProcessorCount, d);
  });
  return count > 0 ? count : 1;
}

void forward(const AttentionParams& p) {
  constexpr const char* fn = "flashattn::forward";
  const int head_dim = check_kernel_params(fn, p);
  check_aligned(fn, "out", p.out, p.out_stride);
  if (p.batch == 0 || p.seqlen_q == 0) return;

  const DeviceGuard guard(p.device.index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
    run_fwd<decltype(dtype), decltype(hd)::value, decltype(mods)::value>(p, stream);
  });
}


void backward(const AttentionParams& p) {
  constexpr const char* fn = "flashattn::backward";
  const int head_dim = check_kernel_params(fn, p);
  check_aligned(fn, "out", p.out, p.out_stride);
  check_aligned(fn, "dout", p.dout, p.dout_stride);
  check_aligned(fn, "dq", p.dq, p.dq_stride);
  check_aligned(fn, "dk", p.dk, p.dk_stride);
  check_aligned(fn, "dv", p.dv, p.dv_stride);
  if (p.batch == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0)) return;

  const DeviceGuard guard(p.device.index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  dispatch_kernel(fn, p, head_dim, [&](auto dtype, auto hd, auto mods) {
    run_bwd<decltype(dtype), decltype(hd)::value, decltype(mods)::value>(p, stream);
  });
}

}  // namespace flashattn::detail::cuda
