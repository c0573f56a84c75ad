// compute-sanitizer racecheck on the shared-memory handoff of the Hopper backward's dQ warpgroup,
// reduced to a small kernel. Producer warps write one of two buffers and arrive on its "full"
// barrier; the consumer warp syncs on "full", reads, and arrives on the buffer's "empty" barrier,
// on which the producers sync before they write that buffer again (named barriers, bar.arrive /
// bar.sync). The PTX ISA orders it: when a barrier completes, every participating thread's earlier
// memory accesses have been performed. On an H200 (CUDA 13, 2026-11-30) racecheck reported
// hazards between the consumer's reads and the producers' next writes of a buffer in ring(), and
// none in once() (one handoff, no reuse). (Those runs were of the same kernels without main's
// result check, which has not run on a GPU yet.)
//
//   nvcc -arch=sm_90a -o /tmp/barrier_ring tools/racecheck_barrier_ring.cu
//   compute-sanitizer --tool racecheck /tmp/barrier_ring
#include <cstdio>

#define BAR_SYNC(id) asm volatile("bar.sync " #id ", 96;" ::: "memory")
#define BAR_ARRIVE(id) asm volatile("bar.arrive " #id ", 96;" ::: "memory")

// Warps 0-1 produce, warp 2 consumes; barriers 2/3 "full", 4/5 "empty" for buffers 0/1.
__global__ void ring(int* out, int steps) {
  __shared__ int buf[2][64];
  const int warp = static_cast<int>(threadIdx.x) / 32, t = static_cast<int>(threadIdx.x);
  int sum = 0;
  for (int it = 0; it < steps; ++it) {
    const int b = it & 1;
    if (warp < 2) {
      if (it >= 2) {
        if (b)
          BAR_SYNC(5);
        else
          BAR_SYNC(4);
      }
      buf[b][t] = it * 100 + t;
      if (b)
        BAR_ARRIVE(3);
      else
        BAR_ARRIVE(2);
    } else {
      if (b)
        BAR_SYNC(3);
      else
        BAR_SYNC(2);
      sum += buf[b][t - 64] + buf[b][127 - t];
      if (it + 2 < steps) {
        if (b)
          BAR_ARRIVE(5);
        else
          BAR_ARRIVE(4);
      }
    }
  }
  if (warp == 2) out[t - 64] = sum;
}

__global__ void once(int* out) {
  __shared__ int buf[64];
  const int warp = static_cast<int>(threadIdx.x) / 32, t = static_cast<int>(threadIdx.x);
  if (warp < 2) {
    buf[t] = t;
    BAR_ARRIVE(2);
  } else {
    BAR_SYNC(2);
    out[t - 64] = buf[127 - t];
  }
}

int main() {
  const int steps = 6;
  int* d = nullptr;
  cudaMalloc(&d, 32 * sizeof(int));
  ring<<<1, 96>>>(d, steps);
  int h[32];
  cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost);
  int bad = 0;
  for (int l = 0; l < 32; ++l) {
    int want = 0;
    for (int it = 0; it < steps; ++it) want += (it * 100 + l) + (it * 100 + 63 - l);
    bad += h[l] != want;
  }
  once<<<1, 96>>>(d);
  cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost);
  for (int l = 0; l < 32; ++l) bad += h[l] != 63 - l;
  printf("%s (%s)\n", bad ? "wrong results" : "results right",
         cudaGetErrorString(cudaGetLastError()));
  return bad ? 1 : 0;
}
