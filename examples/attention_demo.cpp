// attention_demo: exact attention at a realistic size, timed, with its own correctness check.
//
//   attention_demo [--batch 1] [--heads 16] [--heads-kv H] [--seqlen 4096] [--seqlen-k S]
//                  [--head-dim 128] [--dtype f32|f16|bf16] [--causal] [--threads N] [--backward]
//                  [--iters 1] [--seed 0] [--device auto|cpu|cuda]
//
// It prints the shape, the time and the throughput (FLOPs = 4 · batch · heads · seqlen_q ·
// seqlen_k · head_dim, halved when causal; backward 2.5× forward), a checksum, and for a few rows
// the largest difference from a float64 recomputation of that row. Exit status 1 if a row
// disagrees beyond the tolerance of the dtype, 2 on a bad argument.
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flashattn/flashattn.h"

#if DEMO_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

using flashattn::DType;
using flashattn::Tensor;

// ---- 16-bit floating point storage (round to nearest even) ------------------------------------

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t float_to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bf16_to_float(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

// Rounds the value `mantissa >> shift` to nearest even.
uint32_t shift_round_even(uint32_t mantissa, int shift) {
  const uint32_t kept = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

uint16_t float_to_half(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // ≥ 65520: inf
  if (abs >= 0x38800000u) {  // ≥ 2^-14: a normal half; rebias the exponent by 127 − 15
    return static_cast<uint16_t>(sign | shift_round_even(abs - (112u << 23), 13));
  }
  if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
  // A subnormal half counts units of 2^-24: round(mantissa · 2^(exponent − 150 + 24)).
  const uint32_t exponent = abs >> 23;
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
  return static_cast<uint16_t>(sign | shift_round_even(mantissa, static_cast<int>(126 - exponent)));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return float_of(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero, subnormal
  return sign ? -magnitude : magnitude;
}

// ---- Host arrays ------------------------------------------------------------------------------

// A contiguous host array of f32, f16 or bf16, read and written as float.
class HostArray {
 public:
  HostArray(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
    int64_t n = 1;
    for (int64_t s : shape_) n *= s;
    if (dtype_ == DType::f32) {
      f32_.assign(static_cast<size_t>(n), 0.0f);
    } else {
      u16_.assign(static_cast<size_t>(n), 0);
    }
  }

  int64_t numel() const {
    return static_cast<int64_t>(dtype_ == DType::f32 ? f32_.size() : u16_.size());
  }

  float get(int64_t i) const {
    const auto j = static_cast<size_t>(i);
    switch (dtype_) {
      case DType::f32: return f32_[j];
      case DType::f16: return half_to_float(u16_[j]);
      case DType::bf16: return bf16_to_float(u16_[j]);
      default: break;
    }
    std::abort();
  }

  void set(int64_t i, float x) {
    const auto j = static_cast<size_t>(i);
    switch (dtype_) {
      case DType::f32: f32_[j] = x; return;
      case DType::f16: u16_[j] = float_to_half(x); return;
      case DType::bf16: u16_[j] = float_to_bf16(x); return;
      default: break;
    }
    std::abort();
  }

  void fill_normal(std::mt19937_64& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < numel(); ++i) set(i, normal(rng));
  }

  // Σ x and Σ |x| in double.
  std::pair<double, double> checksum() const {
    double sum = 0.0, sum_abs = 0.0;
    for (int64_t i = 0; i < numel(); ++i) {
      const double x = get(i);
      sum += x;
      sum_abs += std::fabs(x);
    }
    return {sum, sum_abs};
  }

  void* data() { return dtype_ == DType::f32 ? static_cast<void*>(f32_.data()) : u16_.data(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * (dtype_ == DType::f32 ? 4 : 2); }
  const std::vector<int64_t>& shape() const { return shape_; }

  Tensor view() {
    void* data = this->data();
    if (shape_.size() == 3) {
      return flashattn::contiguous_view(data, dtype_, {shape_[0], shape_[1], shape_[2]});
    }
    return flashattn::contiguous_view(data, dtype_, {shape_[0], shape_[1], shape_[2], shape_[3]});
  }

 private:
  DType dtype_;
  std::vector<int64_t> shape_;
  std::vector<float> f32_;
  std::vector<uint16_t> u16_;
};

// ---- Command line -----------------------------------------------------------------------------

struct Config {
  int64_t batch = 1;
  int64_t heads = 16;
  int64_t heads_kv = 0;  // 0 = heads
  int64_t seqlen_q = 4096;
  int64_t seqlen_k = 0;  // 0 = seqlen_q
  int64_t head_dim = 128;
  DType dtype = DType::f32;
  bool dtype_given = false;
  std::string device = "auto";  // auto: the GPU when there is one
  bool causal = false;
  int threads = 0;
  bool backward = false;
  int iters = 1;
  uint64_t seed = 0;
};

const char* kUsage =
    "usage: attention_demo [--batch B] [--heads H] [--heads-kv H] [--seqlen S] [--seqlen-k S]\n"
    "                      [--head-dim D] [--dtype f32|f16|bf16] [--causal] [--threads N]\n"
    "                      [--backward] [--iters N] [--seed N] [--device auto|cpu|cuda]\n"
    "defaults: batch 1, heads 16, heads-kv = heads, seqlen 4096, seqlen-k = seqlen, head-dim 128,\n"
    "          dtype f32 on the CPU and bf16 on the GPU, all hardware threads, forward only,\n"
    "          1 iteration, seed 0, the GPU when one is present\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "attention_demo: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

int64_t parse_int(const std::string& flag, const char* text, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min) {
    usage_error(flag + " expects an integer ≥ " + std::to_string(min) + ", got '" + text + "'");
  }
  return value;
}

Config parse_args(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", kUsage);
      std::exit(0);
    } else if (flag == "--batch") {
      c.batch = parse_int(flag, value(), 1);
    } else if (flag == "--heads") {
      c.heads = parse_int(flag, value(), 1);
    } else if (flag == "--heads-kv") {
      c.heads_kv = parse_int(flag, value(), 1);
    } else if (flag == "--seqlen") {
      c.seqlen_q = parse_int(flag, value(), 1);
    } else if (flag == "--seqlen-k") {
      c.seqlen_k = parse_int(flag, value(), 1);
    } else if (flag == "--head-dim") {
      c.head_dim = parse_int(flag, value(), 1);
    } else if (flag == "--device") {
      c.device = value();
      if (c.device != "auto" && c.device != "cpu" && c.device != "cuda") {
        usage_error("--device expects auto, cpu or cuda, got '" + c.device + "'");
      }
    } else if (flag == "--dtype") {
      c.dtype_given = true;
      const std::string d = value();
      if (d == "f32") {
        c.dtype = DType::f32;
      } else if (d == "f16") {
        c.dtype = DType::f16;
      } else if (d == "bf16") {
        c.dtype = DType::bf16;
      } else {
        usage_error("--dtype expects f32, f16 or bf16, got '" + d + "'");
      }
    } else if (flag == "--causal") {
      c.causal = true;
    } else if (flag == "--threads") {
      c.threads = static_cast<int>(parse_int(flag, value(), 0));
    } else if (flag == "--backward") {
      c.backward = true;
    } else if (flag == "--iters") {
      c.iters = static_cast<int>(parse_int(flag, value(), 1));
    } else if (flag == "--seed") {
      c.seed = static_cast<uint64_t>(parse_int(flag, value(), 0));
    } else {
      usage_error("unknown argument '" + flag + "'");
    }
  }
  if (c.heads_kv == 0) c.heads_kv = c.heads;
  if (c.seqlen_k == 0) c.seqlen_k = c.seqlen_q;
  return c;
}

// ---- Float64 reference for single rows --------------------------------------------------------

struct RowRef {
  std::vector<double> out;  // (head_dim)
  std::vector<double> dq;   // (head_dim), zero without dout
  double lse = 0.0;
};

// Row i of head h in batch b, recomputed naively: scores, softmax, P·V (and dQ when dout is given).
RowRef reference_row(const Config& c, double scale, const HostArray& q, const HostArray& k,
                     const HostArray& v, const HostArray* dout, int64_t b, int64_t h, int64_t i) {
  const int64_t d = c.head_dim;
  const int64_t kv_head = h / (c.heads / c.heads_kv);
  auto q_at = [&](int64_t x) { return (((b * c.seqlen_q + i) * c.heads + h) * d) + x; };
  auto kv_at = [&](int64_t j, int64_t x) {
    return (((b * c.seqlen_k + j) * c.heads_kv + kv_head) * d) + x;
  };
  // Bottom-right aligned causal mask: key j is visible iff j ≤ i + seqlen_k − seqlen_q.
  const int64_t last =
      c.causal ? std::min(c.seqlen_k - 1, i + c.seqlen_k - c.seqlen_q) : c.seqlen_k - 1;
  RowRef r;
  r.out.assign(static_cast<size_t>(d), 0.0);
  r.dq.assign(static_cast<size_t>(d), 0.0);
  if (last < 0) {  // no visible key: O = 0, LSE = −inf
    r.lse = -std::numeric_limits<double>::infinity();
    return r;
  }
  std::vector<double> s(static_cast<size_t>(last + 1));
  double max_s = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    double dot = 0.0;
    for (int64_t x = 0; x < d; ++x) dot += double{q.get(q_at(x))} * k.get(kv_at(j, x));
    s[static_cast<size_t>(j)] = scale * dot;
    max_s = std::max(max_s, s[static_cast<size_t>(j)]);
  }
  double sum = 0.0;
  for (double sj : s) sum += std::exp(sj - max_s);
  r.lse = max_s + std::log(sum);
  std::vector<double> p(s.size());
  for (size_t j = 0; j < s.size(); ++j) p[j] = std::exp(s[j] - r.lse);
  for (int64_t j = 0; j <= last; ++j) {
    for (int64_t x = 0; x < d; ++x) {
      r.out[static_cast<size_t>(x)] += p[static_cast<size_t>(j)] * v.get(kv_at(j, x));
    }
  }
  if (dout == nullptr) return r;
  // dS_j = P_j (dO·V_j − dO·O), dQ = scale · Σ_j dS_j K_j.
  double do_dot_o = 0.0;
  for (int64_t x = 0; x < d; ++x)
    do_dot_o += double{dout->get(q_at(x))} * r.out[static_cast<size_t>(x)];
  for (int64_t j = 0; j <= last; ++j) {
    double do_dot_v = 0.0;
    for (int64_t x = 0; x < d; ++x) do_dot_v += double{dout->get(q_at(x))} * v.get(kv_at(j, x));
    const double ds = p[static_cast<size_t>(j)] * (do_dot_v - do_dot_o);
    for (int64_t x = 0; x < d; ++x) r.dq[static_cast<size_t>(x)] += scale * ds * k.get(kv_at(j, x));
  }
  return r;
}

struct Row {
  int64_t b, h, i;
};

// The first and last row of the first head, the last row of the last head, and random others.
std::vector<Row> spot_rows(const Config& c, std::mt19937_64& rng) {
  std::vector<Row> rows = {
      {0, 0, 0}, {0, 0, c.seqlen_q - 1}, {c.batch - 1, c.heads - 1, c.seqlen_q - 1}};
  std::uniform_int_distribution<int64_t> batch(0, c.batch - 1), head(0, c.heads - 1),
      row(0, c.seqlen_q - 1);
  for (int n = 0; n < 5; ++n) rows.push_back({batch(rng), head(rng), row(rng)});
  return rows;
}

// Largest |ours − ref| allowed for a value of magnitude ≤ `magnitude`: a few roundings of the
// output dtype (fp32 also accumulates over thousands of keys).
double tolerance(DType dtype, double magnitude) {
  const double unit = dtype == DType::f32 ? 1e-5 : dtype == DType::f16 ? 2e-3 : 1.6e-2;
  return unit * std::max(1.0, magnitude);
}

// ---- Timing and reporting ---------------------------------------------------------------------

template <class Fn>
double best_ms(int iters, Fn&& fn) {
  double best = std::numeric_limits<double>::infinity();
  for (int n = 0; n < iters; ++n) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const auto stop = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(stop - start).count());
  }
  return best;
}

const char* dtype_flag(DType dtype) {
  return dtype == DType::f32 ? "f32" : dtype == DType::f16 ? "f16" : "bf16";
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// Where the attention runs: the GPU when asked for or (auto) when one is present.
flashattn::Device choose_device(const Config& c) {
  const bool gpu = flashattn::cuda_compiled() && flashattn::cuda_device_count() > 0;
  if (c.device == "cuda" && !gpu) {
    throw flashattn::Error("--device cuda: no CUDA device (or a build without CUDA)");
  }
  if (c.device == "cpu" || !gpu) return flashattn::Device{flashattn::DeviceType::cpu, 0};
  return flashattn::Device{flashattn::DeviceType::cuda, 0};
}

#if DEMO_WITH_CUDA
void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw flashattn::Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

// A device copy of a host array; copy_back() brings results home.
class DeviceCopy {
 public:
  explicit DeviceCopy(HostArray& host) : host_(host) {
    cuda_check(cudaMalloc(&data_, host.bytes()), "cudaMalloc");
    cuda_check(cudaMemcpy(data_, host.data(), host.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DeviceCopy() { cudaFree(data_); }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;

  Tensor view() const {
    Tensor t = host_.view();
    t.data = data_;
    t.device = flashattn::Device{flashattn::DeviceType::cuda, 0};
    return t;
  }
  void copy_back() {
    cuda_check(cudaMemcpy(host_.data(), data_, host_.bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

 private:
  HostArray& host_;
  void* data_ = nullptr;
};
#endif

// Runs the forward where `device` says, `iters` times after a warm-up on the GPU; returns the
// best time in ms. out and lse hold the result on the host afterwards.
double timed_forward(const flashattn::Device& device, int iters, HostArray& q, HostArray& k,
                     HostArray& v, HostArray& out, HostArray& lse, const flashattn::Options& options) {
  if (device.type == flashattn::DeviceType::cpu) {
    return best_ms(iters, [&] {
      flashattn::forward(q.view(), k.view(), v.view(), out.view(), lse.view(), options);
    });
  }
#if DEMO_WITH_CUDA
  DeviceCopy dq(q), dk(k), dv(v), dout(out), dlse(lse);
  auto call = [&] {
    flashattn::forward(dq.view(), dk.view(), dv.view(), dout.view(), dlse.view(), options);
    cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  };
  call();  // warm-up: module load, shared-memory opt-in
  const double ms = best_ms(iters, call);
  dout.copy_back();
  dlse.copy_back();
  return ms;
#else
  throw flashattn::Error("this demo was built without CUDA");
#endif
}

// dout (random) and the gradients: allocated only with --backward.
struct Gradients {
  explicit Gradients(const Config& c)
      : dout(c.dtype, {c.batch, c.seqlen_q, c.heads, c.head_dim}),
        dq(c.dtype, {c.batch, c.seqlen_q, c.heads, c.head_dim}),
        dk(c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim}),
        dv(c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim}) {}
  HostArray dout, dq, dk, dv;
};

int run(Config c) {
  std::printf("flashattn %s attention demo\n", FLASHATTN_VERSION);
  const flashattn::Device device = choose_device(c);
  const bool on_gpu = device.type == flashattn::DeviceType::cuda;
  if (on_gpu && c.dtype == DType::f32) {
    if (c.dtype_given) throw flashattn::Error("--dtype f32: the CUDA kernels take f16 or bf16");
    c.dtype = DType::bf16;  // the GPU default
  }
  const unsigned threads = c.threads > 0 ? static_cast<unsigned>(c.threads)
                                         : std::max(1u, std::thread::hardware_concurrency());
  std::printf("device:   %s, %u thread(s) (CUDA compiled: %s, CUDA devices: %d)\n",
              device.type == flashattn::DeviceType::cpu ? "cpu" : "cuda", threads,
              flashattn::cuda_compiled() ? "yes" : "no", flashattn::cuda_device_count());
  std::printf("shape:    q (%lld, %lld, %lld, %lld), k/v (%lld, %lld, %lld, %lld), dtype %s, %s\n",
              static_cast<long long>(c.batch), static_cast<long long>(c.seqlen_q),
              static_cast<long long>(c.heads), static_cast<long long>(c.head_dim),
              static_cast<long long>(c.batch), static_cast<long long>(c.seqlen_k),
              static_cast<long long>(c.heads_kv), static_cast<long long>(c.head_dim),
              dtype_flag(c.dtype), c.causal ? "causal" : "not causal");

  // q, out: (batch, seqlen_q, heads, head_dim)   k, v: (batch, seqlen_k, heads_kv, head_dim)
  // lse: (batch, heads, seqlen_q), fp32
  std::mt19937_64 rng(c.seed);
  HostArray q(c.dtype, {c.batch, c.seqlen_q, c.heads, c.head_dim});
  HostArray k(c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
  HostArray v(c.dtype, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
  HostArray out(c.dtype, {c.batch, c.seqlen_q, c.heads, c.head_dim});
  HostArray lse(DType::f32, {c.batch, c.heads, c.seqlen_q});
  q.fill_normal(rng);
  k.fill_normal(rng);
  v.fill_normal(rng);

  flashattn::Options options;
  options.causal = c.causal;
  options.num_threads = c.threads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  // FLOPs of FlashAttention's benchmarks: two matmuls of 2·seqlen_q·seqlen_k·head_dim each.
  const double fwd_flop = 4.0 * static_cast<double>(c.batch) * static_cast<double>(c.heads) *
                          static_cast<double>(c.seqlen_q) * static_cast<double>(c.seqlen_k) *
                          static_cast<double>(c.head_dim) * (c.causal ? 0.5 : 1.0);

  const double fwd_ms = timed_forward(device, c.iters, q, k, v, out, lse, options);
  const std::string runs = c.iters > 1 ? ", best of " + std::to_string(c.iters) + " runs" : "";
  std::printf("forward:  %10.1f ms  %8.1f GFLOP/s  (%.1f GFLOP%s)\n", fwd_ms,
              fwd_flop / (fwd_ms * 1e6), fwd_flop * 1e-9, runs.c_str());
  const auto [sum, sum_abs] = out.checksum();
  std::printf("checksum: sum(out) = %.6f, sum|out| = %.6f\n", sum, sum_abs);

  const std::vector<Row> rows = spot_rows(c, rng);
  std::optional<Gradients> grads;
  if (c.backward) {
    grads.emplace(c);
    grads->dout.fill_normal(rng);
    const double bwd_flop = 2.5 * fwd_flop;
    if (on_gpu) std::printf("note:     the CUDA backward is not built yet: backward runs on the CPU\n");
    const double bwd_ms = best_ms(c.iters, [&] {
      flashattn::backward(grads->dout.view(), q.view(), k.view(), v.view(), out.view(), lse.view(),
                          grads->dq.view(), grads->dk.view(), grads->dv.view(), options);
    });
    std::printf("backward: %10.1f ms  %8.1f GFLOP/s  (%.1f GFLOP%s)\n", bwd_ms,
                bwd_flop / (bwd_ms * 1e6), bwd_flop * 1e-9, runs.c_str());
    std::printf("checksum: sum(dq) = %.6f, sum(dk) = %.6f, sum(dv) = %.6f\n",
                grads->dq.checksum().first, grads->dk.checksum().first, grads->dv.checksum().first);
  }

  // Spot check: recompute a few rows in float64 and compare.
  double err_out = 0.0, err_lse = 0.0, err_dq = 0.0, mag_out = 0.0, mag_lse = 0.0, mag_dq = 0.0;
  for (const Row& r : rows) {
    const RowRef ref =
        reference_row(c, scale, q, k, v, grads ? &grads->dout : nullptr, r.b, r.h, r.i);
    const int64_t base = ((r.b * c.seqlen_q + r.i) * c.heads + r.h) * c.head_dim;
    for (int64_t x = 0; x < c.head_dim; ++x) {
      const double o_ref = ref.out[static_cast<size_t>(x)];
      err_out = std::max(err_out, std::fabs(out.get(base + x) - o_ref));
      mag_out = std::max(mag_out, std::fabs(o_ref));
      if (grads) {
        const double dq_ref = ref.dq[static_cast<size_t>(x)];
        err_dq = std::max(err_dq, std::fabs(grads->dq.get(base + x) - dq_ref));
        mag_dq = std::max(mag_dq, std::fabs(dq_ref));
      }
    }
    const double lse_ours = lse.get((r.b * c.heads + r.h) * c.seqlen_q + r.i);
    if (!(std::isinf(ref.lse) && lse_ours == ref.lse)) {  // −inf for a row with no visible key
      err_lse = std::max(err_lse, std::fabs(lse_ours - ref.lse));
      mag_lse = std::max(mag_lse, std::fabs(ref.lse));
    }
  }
  bool ok = err_out <= tolerance(c.dtype, mag_out) && err_lse <= tolerance(DType::f32, mag_lse);
  std::printf("check:    %zu rows vs float64: max |out - ref| = %.3g, max |lse - ref| = %.3g\n",
              rows.size(), err_out, err_lse);
  if (grads) {
    ok = ok && err_dq <= tolerance(c.dtype, mag_dq);
    std::printf("check:    %zu rows vs float64: max |dq - ref| = %.3g (max |dq| %.3g)\n",
                rows.size(), err_dq, mag_dq);
  }
  std::printf("peak RSS: %.1f MiB\n", peak_rss_mib());
  std::printf("result:   %s\n", ok ? "ok" : "FAILED: a row differs from the float64 reference");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Config config = parse_args(argc, argv);
  try {
    return run(config);
  } catch (const flashattn::Error& e) {
    std::fprintf(stderr, "attention_demo: %s\n", e.what());
    return 2;
  }
}
