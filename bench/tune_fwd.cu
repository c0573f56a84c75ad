// Tile tuning harness for the sm80 forward kernel (llm.c style): instantiates the production
// kernel (src/cuda/sm80/flash_fwd_kernel.cuh, included, never copied) with several tile shapes,
// checks each against the production tile's output on the same random inputs, and times them with
// CUDA events (median of 9 trials of 5 calls; inputs ≥ 64 MiB, larger than L2).
//
// Versions and what they measured live in docs/tuning.md.
// build: nvcc -std=c++17 -O3 -arch=sm_90a -Iinclude -Isrc bench/tune_fwd.cu -o tune_fwd
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/sm80/flash_fwd_kernel.cuh"

using namespace flashattn;
using namespace flashattn::detail;
using namespace flashattn::detail::cuda;

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e = (x);                                                           \
    if (e != cudaSuccess) {                                                        \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

__global__ void fill_random(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    x[i] = __float2bfloat16((float(h & 0xffffff) / 16777216.0f - 0.5f) * 3.4f);
  }
}

template <class Tile>
void launch(const AttentionParams& p) {
  auto kernel = flash_fwd_kernel<__nv_bfloat16, Tile, false, /*kDecode=*/false>;
  const size_t smem = Tile::kSmemElems * 2;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  dim3 grid(unsigned((p.seqlen_q + Tile::kBlockM - 1) / Tile::kBlockM), unsigned(p.heads_q), unsigned(p.batch));
  kernel<<<grid, Tile::kThreads, smem>>>(p);
  CHECK(cudaGetLastError());
}

struct Variant {
  const char* name;
  void (*run)(const AttentionParams&);
};

// kSwizzle: the swizzled shared rows (cuda/common/smem_layout.h) instead of padded ones.
template <int D, int M, int N, int W, bool kSwizzle = false>
Variant variant(const char* name) {
  return Variant{name, &launch<FwdTile<D, M, N, W, /*kKeyWarps=*/1, kSwizzle>>};
}

double time_ms(const Variant& v, const AttentionParams& p) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) v.run(p);
  std::vector<float> t;
  for (int trial = 0; trial < 9; ++trial) {
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < 5; ++i) v.run(p);
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / 5);
  }
  std::sort(t.begin(), t.end());
  return t[4];
}

template <int D>
void sweep(const std::vector<Variant>& variants) {
  for (int causal = 0; causal < 2; ++causal) {
    for (int s : {1024, 4096, 16384}) {
      const int b = 16384 / s, h = 2048 / D;
      const size_t n = size_t(b) * s * h * D;
      __nv_bfloat16 *q, *k, *v, *o, *o_ref;
      CHECK(cudaMalloc(&q, n * 2)); CHECK(cudaMalloc(&k, n * 2)); CHECK(cudaMalloc(&v, n * 2));
      CHECK(cudaMalloc(&o, n * 2)); CHECK(cudaMalloc(&o_ref, n * 2));
      fill_random<<<1024, 256>>>(q, n, 1); fill_random<<<1024, 256>>>(k, n, 2); fill_random<<<1024, 256>>>(v, n, 3);
      AttentionParams p;
      p.dtype = DType::bf16;
      p.q = q; p.k = k; p.v = v;
      OperandStrides st{int64_t(s) * h * D, int64_t(h) * D, D};
      p.q_stride = p.k_stride = p.v_stride = p.out_stride = st;
      p.batch = b; p.seqlen_q = p.seqlen_k = s; p.heads_q = p.heads_kv = h; p.group = 1;
      p.head_dim = p.head_dim_v = D;
      p.scale = 1.0f / std::sqrt(float(D)); p.scale_log2 = p.scale * 1.4426950408889634f;
      p.window_right = causal ? 0 : -1;  // causal: window_right 0
      const double flops = 4.0 * b * h * double(s) * s * D / (causal ? 2 : 1);
      std::vector<__nv_bfloat16> ref(n), got(n);
      for (size_t i = 0; i < variants.size(); ++i) {
        p.out = i == 0 ? o_ref : o;
        const double ms = time_ms(variants[i], p);
        double diff = 0;
        if (i > 0) {
          CHECK(cudaMemcpy(got.data(), o, n * 2, cudaMemcpyDeviceToHost));
          for (size_t x = 0; x < n; x += 97) diff = std::max(diff, double(std::fabs(__bfloat162float(got[x]) - __bfloat162float(ref[x]))));
        } else {
          CHECK(cudaMemcpy(ref.data(), o_ref, n * 2, cudaMemcpyDeviceToHost));
        }
        std::printf("d=%3d causal=%d s=%5d %-22s %7.1f TFLOP/s  maxdiff %.2e\n", D, causal, s, variants[i].name,
                    flops / ms / 1e9, diff);
      }
      CHECK(cudaFree(q)); CHECK(cudaFree(k)); CHECK(cudaFree(v)); CHECK(cudaFree(o)); CHECK(cudaFree(o_ref));
    }
  }
}

// tune_fwd [all|prod|swizzle]: every tile shape; only the production tile of each head dim (for
// A/B runs of two kernel versions built from two source trees); or the production tile with
// padded and with swizzled shared rows (the decode kernel's layout at d 64 and 128).
int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  if (mode == "swizzle") {
    sweep<256>({variant<256, 64, 64, 4>("64x64 w4 (prod)"),
                variant<256, 64, 64, 4, true>("64x64 w4 swizzled")});
    sweep<128>({variant<128, 128, 64, 4>("128x64 w4 (prod)"),
                variant<128, 128, 64, 4, true>("128x64 w4 swizzled")});
    sweep<64>({variant<64, 128, 128, 4>("128x128 w4 (prod)"),
               variant<64, 128, 128, 4, true>("128x128 w4 swizzled")});
    return 0;
  }
  const bool prod_only = mode == "prod";
  auto pick = [&](std::vector<Variant> v) {
    if (prod_only) v.resize(1);
    return v;
  };
  sweep<256>(pick({variant<256, 64, 64, 4>("64x64 w4 (prod)"), variant<256, 128, 64, 8>("128x64 w8"),
                   variant<256, 128, 32, 8>("128x32 w8"), variant<256, 64, 32, 4>("64x32 w4")}));
  sweep<128>(pick({variant<128, 128, 64, 4>("128x64 w4 (prod)"), variant<128, 128, 32, 4>("128x32 w4"),
                   variant<128, 128, 64, 8>("128x64 w8"), variant<128, 128, 128, 8>("128x128 w8"),
                   variant<128, 64, 64, 4>("64x64 w4")}));
  sweep<64>(pick({variant<64, 128, 128, 4>("128x128 w4 (prod)"), variant<64, 128, 64, 4>("128x64 w4"),
                  variant<64, 128, 128, 8>("128x128 w8"), variant<64, 64, 128, 4>("64x128 w4")}));
  return 0;
}
