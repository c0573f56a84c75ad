// The forward tuning harnesses' common part (bench/tune_fwd.cu, bench/tune_fwd_sm90.h): a CUDA
// call's check, random bf16 inputs filled on the device, and the sweep: each variant checked
// against the first (one call each into a poisoned output), then timed with the variants taking
// turns (median of 11 trials of 5 calls; inputs ≥ 64 MiB, larger than L2), so that a drift of the
// clocks falls on all of them alike.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/params.h"

// Harness code only: the library's names unqualified.
using namespace flashattn;
using namespace flashattn::detail;

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e = (x);                                                           \
    if (e != cudaSuccess) {                                                        \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

// Uniform in [-1.7, 1.7), from a hash of the index and the seed.
__global__ void fill_random(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    x[i] = __float2bfloat16((float(h & 0xffffff) / 16777216.0f - 0.5f) * 3.4f);
  }
}

// A variant: a name and a launch on the harness's parameters.
struct Variant {
  const char* name;
  void (*run)(const AttentionParams&);
};

// Milliseconds a call of each variant: median of 11 trials of 5 calls, the variants taking turns
// within a trial, so that a drift of the clocks falls on all of them alike.
std::vector<double> time_ms(const std::vector<Variant>& variants, const AttentionParams& p) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (const Variant& v : variants) {
    for (int i = 0; i < 3; ++i) v.run(p);
  }
  std::vector<std::vector<float>> t(variants.size());
  for (int trial = 0; trial < 11; ++trial) {
    for (size_t x = 0; x < variants.size(); ++x) {
      CHECK(cudaEventRecord(a));
      for (int i = 0; i < 5; ++i) variants[x].run(p);
      CHECK(cudaEventRecord(b));
      CHECK(cudaEventSynchronize(b));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, a, b));
      t[x].push_back(ms / 5);
    }
  }
  std::vector<double> med;
  for (auto& v : t) {
    std::sort(v.begin(), v.end());
    med.push_back(v[v.size() / 2]);
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return med;
}

template <int D>
void sweep(const std::vector<Variant>& variants) {
  for (int causal = 0; causal < 2; ++causal) {
    for (int s : {1024, 4096, 16384}) {
      const int b = 16384 / s, h = 2048 / D;
      const size_t n = size_t(b) * s * h * D;
      __nv_bfloat16 *q, *k, *v, *o;
      CHECK(cudaMalloc(&q, n * 2)); CHECK(cudaMalloc(&k, n * 2)); CHECK(cudaMalloc(&v, n * 2));
      CHECK(cudaMalloc(&o, n * 2));
      fill_random<<<1024, 256>>>(q, n, 1); fill_random<<<1024, 256>>>(k, n, 2); fill_random<<<1024, 256>>>(v, n, 3);
      AttentionParams p;
      p.dtype = DType::bf16;
      p.q = q; p.k = k; p.v = v; p.out = o;
      OperandStrides st{int64_t(s) * h * D, int64_t(h) * D, D};
      p.q_stride = p.k_stride = p.v_stride = p.out_stride = st;
      p.batch = b; p.seqlen_q = p.seqlen_k = s; p.heads_q = p.heads_kv = h; p.group = 1;
      p.head_dim = p.head_dim_v = D;
      p.scale = 1.0f / std::sqrt(float(D)); p.scale_log2 = p.scale * 1.4426950408889634f;
      p.window_right = causal ? 0 : -1;
      const double flops = 4.0 * b * h * double(s) * s * D / (causal ? 2 : 1);
      // Each variant's output against the first's (one call each, poisoned first).
      std::vector<__nv_bfloat16> ref(n), got(n);
      std::vector<double> diff(variants.size(), 0.0);
      for (size_t i = 0; i < variants.size(); ++i) {
        CHECK(cudaMemset(o, 0xff, n * 2));
        variants[i].run(p);
        CHECK(cudaMemcpy(i == 0 ? ref.data() : got.data(), o, n * 2, cudaMemcpyDeviceToHost));
        for (size_t x = 0; i > 0 && x < n; x += 97) {
          const float d = std::fabs(__bfloat162float(got[x]) - __bfloat162float(ref[x]));
          diff[i] = std::max(diff[i], std::isnan(d) ? INFINITY : double(d));
        }
      }
      const std::vector<double> ms = time_ms(variants, p);
      for (size_t i = 0; i < variants.size(); ++i) {
        std::printf("d=%3d causal=%d s=%5d %-28s %7.1f TFLOP/s  %5.3fx  maxdiff %.2e\n", D, causal, s,
                    variants[i].name, flops / ms[i] / 1e9, ms[0] / ms[i], diff[i]);
      }
      CHECK(cudaFree(q)); CHECK(cudaFree(k)); CHECK(cudaFree(v)); CHECK(cudaFree(o));
    }
  }
}

