// FlashAttention backward, step 2 (dK, dV and the dQ sums) on Hopper tensor cores (wgmma;
// sm_90a). Steps 1 and 3 (D = rowsum(dO ∘ O), the dQ conversion) are shared with the sm80
// backward: cuda/common/bwd_common.cuh.
//
// One thread block per (key block, kv head, batch), two compute warpgroups, walking every query
// head of the GQA group and every query block of 64 rows that sees its keys (as the sm80 kernel).
// The scores are computed transposed, so that keys are the rows of every fragment:
//   Sᵀ = K Qᵀ and dPᵀ = V dOᵀ            (SS: K, V, Q, dO from swizzled shared memory)
//   Pᵀ = exp2(Sᵀ·scale·log2e − LSE), dSᵀ = Pᵀ ∘ (dPᵀ − D)   (registers; LSE, D per column)
//   dV += Pᵀ dO and dK += dSᵀ Q
//   dQ += dS K                            (dSᵀ through shared memory, read M-major), added to
//                                          the fp32 accumulator with 16-byte reductions.
// Two shapes, by what the registers hold:
//   d ≤ 128: 128 keys a block, 64 a warpgroup, each holding dK and dV for all d columns of its
//            keys; Pᵀ and dSᵀ are the A operands of dV/dK straight from the registers (RS).
//            A third warpgroup (the dQ warpgroup, 24 registers; the compute warpgroups get 240
//            through setmaxnreg) adds each step's dQ sums, which the compute warpgroups leave in
//            one of two fp32 buffers in shared memory (mbarriers "full" and "empty" a buffer):
//            the compute warpgroups neither issue the reductions nor, in the deterministic mode,
//            wait for turns (the measurements behind this split: docs/tuning.md).
//   d = 256: 64 keys a block (dK + dV for 64 keys × 256 columns is 256 floats a thread, twice
//            what a warpgroup can hold next to the rest). The warpgroups split Sᵀ and dPᵀ by
//            query columns (32 each), meet through shared memory (Pᵀ and dSᵀ), and split dV, dK
//            and dQ by head-dim columns (128 each), all SS.
// Both variants: plain, and score mods (softmax_scale of any sign, softcap, ALiBi, dropout: the
// elementwise terms of common/masking.cuh, applied per transposed element, and the forward's
// dropout decisions fetched from the lanes that draw them, as the comment at the dropout says).
//
// Deterministic mode (kDeterministic; ws.dq_turn holds the counters): the key blocks that see a
// query block add their dQ to it in a fixed order, highest key block first. A counter per (batch,
// query head, query block) says whose turn it is; a block waits for its turn (its rank, from the
// top, among the key blocks that see the query block), adds, and passes the turn on. At d ≤ 128
// the dQ warpgroup does all three (the compute warpgroups run up to two steps ahead of it). At
// d = 256 the compute warpgroups do: they read the counter early, under the matmuls of the step
// that needs it, and pass the turn on during the next step's matmuls.
// The order, and the launch order that goes with it (dkdv_grid, bwd_launch.cuh):
//   - Highest first, because every key block walks its query blocks upwards: under a causal or
//     local mask a higher key block starts higher, so it reaches each query block steps before
//     the next lower one and its turn is over when that one comes (lowest first, each block
//     waited for key block 0 to come up from query block 0: 0.44–0.56× of the atomic mode, causal).
//   - Launched key block by key block, the highest first, over groups of (kv head, batch) pairs
//     (det_grid_shape, det_pair_group: common/block_schedule.h): without a mask every key block
//     reaches a query block on the same step, and launched together (key blocks fastest, as the
//     atomic mode) they queued for every query block, each one turn behind the one above
//     (0.70–0.77×); launched a group's worth of blocks apart, the one above is well ahead. A
//     group is about two waves of blocks: larger ones slowed the long causal rows (0.64× at 16k,
//     d = 256, with 8 pairs a group).
//   - A block waits only on key blocks above it of the same (kv head, batch), which were launched
//     before it, so every wait ends; a counter that never comes round (a bug) traps after about
//     ten seconds instead of hanging.
// The deterministic mode runs at 0.92–1.08× of the atomic mode at d ≤ 128 and 0.82–0.94× at
// d = 256 (H200, full sweep); the sm80 kernels' deterministic mode (a separate dQ pass) runs at
// 0.60–0.79×.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/block_schedule.h"
#include "common/params.h"
#include "common/philox.h"
#include "cuda/common/bwd_common.cuh"
#include "cuda/common/masking.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/sm90/tma.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace flashattn::detail::cuda::sm90 {

// Query rows of one step (every head dim): also the granularity of the deterministic turns
// (turn_blocks, cuda/common/bwd_common.cuh).
constexpr int kBwdBlockM = kDqTurnRows;

template <int kHeadDim_>
struct BwdTile {
  static constexpr int kHeadDim = kHeadDim_;
  // Split by queries and head-dim columns (d = 256), or by keys (d ≤ 128); see above.
  static constexpr bool kSplitQuery = kHeadDim > 128;
  static constexpr int kBlockN = kSplitQuery ? 64 : 128;  // keys of a thread block
  static constexpr int kBlockM = kBwdBlockM;
  static constexpr int kThreads = 2 * kWarpgroupThreads;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;  // sK, sV
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;   // sQ[2], sdO[2]
  static constexpr int kDsBytes = kBlockN * kBlockM * 2;   // sdS (and sP when split): [key][query]
  static constexpr int kStatsBytes = 2 * 2 * kBlockM * 4;  // LSE and D, two buffers
  static constexpr int kSmemBytes =
      2 * kKvBytes + 4 * kQBytes + (kSplitQuery ? 2 : 1) * kDsBytes + kStatsBytes + 1024;
  // d ≤ 128: a third warpgroup (the dQ warpgroup) adds each step's dQ sums to the fp32
  // accumulator, taking them from shared memory: two buffers of fp32, rows 8 floats apart from
  // a multiple of 32 (conflict-free fragment stores); then what it needs of the two buffers'
  // steps (two DqStage, kDqInfoBytes) and the buffers' four mbarriers (full[2], empty[2]).
  static constexpr bool kDqWarpgroup = !kSplitQuery;
  static constexpr int kDqStride = kHeadDim + 8;
  static constexpr int kDqStageBytes = kBlockM * kDqStride * 4;
  static constexpr int kDqInfoBytes = 64;
  static constexpr int kDqHandoffBytes = kDqInfoBytes + 4 * 8;
  static constexpr int kThreadsAll = kThreads + (kDqWarpgroup ? kWarpgroupThreads : 0);
  static constexpr int kSmemBytesAll =
      kSmemBytes + (kDqWarpgroup ? 2 * kDqStageBytes + kDqHandoffBytes : 0);
  static_assert(kHeadDim % 64 == 0, "whole 128-byte swizzle blocks");
  static_assert(kSmemBytesAll <= 227 * 1024, "fits an SM");
};

template <int kHeadDim>
inline constexpr bool kHasBwdTile = kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256;

// The deterministic turns. A turn is taken with a load that is seen to hold this block's rank:
// a relaxed one followed by an acquire fence (d = 256), or an acquire load (the dQ warpgroup). It
// is passed on by one thread, after a barrier of the threads that added, with a release store:
// the barrier orders their dQ additions before it, and release is cumulative, so a block that
// sees the turn sees them.
template <bool kAcquire>
__device__ __forceinline__ int load_turn(const int* ptr) {
  int v = 0;
#if defined(__CUDA_ARCH__)
  if constexpr (kAcquire) {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(ptr) : "memory");
  } else {
    asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];\n" : "=r"(v) : "l"(ptr) : "memory");
  }
#endif
  return v;
}

// One thread spins until the counter holds `mine`; `seen` is the value last read (any other value
// to read it first). A counter that never comes round (a bug) traps after about ten seconds of
// L2 round trips instead of hanging.
template <bool kAcquire>
__device__ __forceinline__ void wait_for_turn(const int* turn, int mine, int seen,
                                              unsigned sleep_ns) {
#if defined(__CUDA_ARCH__)
  for (long long spins = 0; seen != mine; ++spins) {
    if (spins > (1LL << 24)) __trap();
    __nanosleep(sleep_ns);
    seen = load_turn<kAcquire>(turn);
  }
#endif
}

__device__ __forceinline__ void fence_acq_rel_gpu() {
#if defined(__CUDA_ARCH__)
  asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void store_release(int* ptr, int v) {
#if defined(__CUDA_ARCH__)
  asm volatile("st.release.gpu.global.b32 [%0], %1;\n" ::"l"(ptr), "r"(v) : "memory");
#endif
}

// What the dQ warpgroup needs of a staged step (shared memory, written by thread 0).
struct DqStage {
  float* rows;  // the step's first dQ row in the fp32 accumulator
  int* turn;    // its turn counter
  int my_turn;  // the turn to wait for
  int n_rows;   // rows in the sequence (≤ kBlockM)
};

// dst[0..3] += v, without a result: a fire-and-forget reduction (REDG). Written out because
// atomicAdd(float4*) compiles to ATOMG, which waits for its result, once the kernel holds the
// turns' fences (the backward ran at 0.7–0.85× of this with it).
__device__ __forceinline__ void red_add_f32x4(float* dst, float4 v) {
#if defined(__CUDA_ARCH__)
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "f"(v.x), "f"(v.y),
               "f"(v.z), "f"(v.w)
               : "memory");
#endif
}

template <class T, class Tile, bool kDeterministic, bool kScoreMods>
__global__ void __launch_bounds__(Tile::kThreadsAll, 1)
    flash_bwd_dkdv_kernel(const __grid_constant__ AttentionParams p,
                          const __grid_constant__ BwdWorkspace ws) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kHeadDim = Tile::kHeadDim;
  constexpr bool kSplit = Tile::kSplitQuery;
  constexpr bool kDqWg = Tile::kDqWarpgroup;
  // Named barriers: the compute warpgroups among themselves (when the dQ warpgroup runs), and
  // the dQ warpgroup's threads among themselves.
  constexpr int kBarCompute = 1, kBarDq = 2;
  // Pᵀ before the dPᵀ wait: registers for it at d = 64 (not with score mods, whose dS needs the
  // softcap's derivative of every element, there recomputed with dS).
  constexpr bool kEarlyP = kHeadDim <= 64 && !kScoreMods;
  constexpr float kInf = __builtin_huge_valf();
  constexpr int kSCols = kSplit ? kBlockM / 2 : kBlockM;     // query columns of Sᵀ a warpgroup
  constexpr int kKvCols = kSplit ? kHeadDim / 2 : kHeadDim;  // dK, dV columns a warpgroup
  using MmaS = Wgmma<T, kSCols>;                             // m64 n(kSCols): Sᵀ, dPᵀ
  using MmaKv = Wgmma<T, kKvCols>;                           // m64 n(kKvCols): dV, dK

  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_address(smem_raw) & 1023)) & 1023);
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = reinterpret_cast<T*>(smem + Tile::kKvBytes);
  auto sQ = [&](int buf) {
    return reinterpret_cast<T*>(smem + 2 * Tile::kKvBytes + buf * Tile::kQBytes);
  };
  auto sdO = [&](int buf) {
    return reinterpret_cast<T*>(smem + 2 * Tile::kKvBytes + (2 + buf) * Tile::kQBytes);
  };
  unsigned char* sdS = smem + 2 * Tile::kKvBytes + 4 * Tile::kQBytes;
  unsigned char* sP = sdS + Tile::kDsBytes;  // split shape only
  float* sLse0 = reinterpret_cast<float*>(sdS + (kSplit ? 2 : 1) * Tile::kDsBytes);  // [2][kBlockM]
  float* sDsum0 = sLse0 + 2 * kBlockM;                                               // [2][kBlockM]
  // (d ≤ 128) dQ staging: [2][kBlockM][kDqStride] floats, then two DqStage, then the buffers'
  // mbarriers: full[2] (the compute warpgroups' 256 threads arrive), empty[2] (the dQ
  // warpgroup's 128).
  static_assert(2 * sizeof(DqStage) <= Tile::kDqInfoBytes, "two DqStage before the mbarriers");
  float* sDq0 = sDsum0 + 2 * kBlockM;
  DqStage* sStage = reinterpret_cast<DqStage*>(sDq0 + 2 * kBlockM * Tile::kDqStride);
  uint64_t* sFull =
      reinterpret_cast<uint64_t*>(reinterpret_cast<unsigned char*>(sStage) + Tile::kDqInfoBytes);
  uint64_t* sEmpty = sFull + 2;

  // (key block, kv head, batch) of this thread block (dkdv_grid, bwd_launch.cuh).
  const DetBlock det = det_block(blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y);
  if (kDeterministic && det.pair >= p.heads_kv * p.batch) return;  // the last group's tail
  const int64_t b = kDeterministic ? det.pair / p.heads_kv : blockIdx.z;
  const int64_t hk = kDeterministic ? det.pair % p.heads_kv : blockIdx.y;
  const int n_block = kDeterministic ? det.n_block : static_cast<int>(blockIdx.x);
  const int64_t n0 = static_cast<int64_t>(n_block) * kBlockN;
  const SequenceInfo seq = sequence_info(p, b);
  const int64_t k_rows = key_rows(p, b);
  if (n0 >= k_rows) return;

  const int wg = static_cast<int>(threadIdx.x) / kWarpgroupThreads;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  // The warp's first key (fragment rows), and the warpgroup's first query (fragment columns).
  const int key0 = (kSplit ? 0 : wg * 64) + (static_cast<int>(threadIdx.x) / 32 % 4) * 16;
  const int qcol0 = kSplit ? wg * kSCols : 0;
  const int head_dim = static_cast<int>(p.head_dim);

  const QueryWalk walk = query_walk(p, seq, hk, n0, kBlockM, kBlockN);
  const int steps = walk.steps;

  if constexpr (kDqWg) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < 2; ++i) {
        mbar_init(sFull + i, Tile::kThreads);
        mbar_init(sEmpty + i, kWarpgroupThreads);
      }
    }
    __syncthreads();
    if (wg == 2) {
      // The dQ warpgroup: for each step, wait until the compute warpgroups have staged its dQ
      // sums, (deterministic) wait for the turn (one thread, polling), add them (16 bytes a
      // reduction, rows of the sequence only), hand the buffer back, and (deterministic) pass
      // the turn on. The compute warpgroups neither issue the reductions nor wait for turns, and
      // the release's memory barrier waits for this warpgroup's additions only.
      setmaxnreg_dec<24>();
      // A thread's float4 column of the tile, and its first row; rows kRowStep apart.
      const int wt = static_cast<int>(threadIdx.x) - Tile::kThreads;
      constexpr int kVecs = kHeadDim / 4;  // float4s a row
      constexpr int kRowStep = kWarpgroupThreads / kVecs;
      const int col = (wt % kVecs) * 4, row0 = wt / kVecs;
      for (int it = 0; it < steps; ++it) {
        const int buf = it & 1;
        mbar_wait(sFull + buf, (it >> 1) & 1);
        const DqStage st = sStage[buf];
        if constexpr (kDeterministic) {
          if (wt == 0) wait_for_turn<true>(st.turn, st.my_turn, load_turn<true>(st.turn), 32);
          named_barrier_sync(kBarDq, kWarpgroupThreads);
        }
        const float* staged = sDq0 + buf * kBlockM * Tile::kDqStride + col;
        if (col < head_dim) {
#pragma unroll 4
          for (int row = row0; row < st.n_rows; row += kRowStep) {
            red_add_f32x4(st.rows + row * head_dim + col,
                          *reinterpret_cast<const float4*>(staged + row * Tile::kDqStride));
          }
        }
        // The values are in registers (the reductions read them at issue): the buffer is free.
        if (it + 2 < steps) mbar_arrive(sEmpty + buf);
        if constexpr (kDeterministic) {
          named_barrier_sync(kBarDq, kWarpgroupThreads);  // every thread's additions issued
          if (wt == 0) store_release(st.turn, st.my_turn + 1);
        }
      }
      return;
    }
    setmaxnreg_inc<240>();
  }
  // The compute warpgroups' barrier: the whole block, or without the dQ warpgroup.
  auto compute_sync = [] {
    if constexpr (kDqWg) {
      named_barrier_sync(kBarCompute, Tile::kThreads);
    } else {
      __syncthreads();
    }
  };

  const T* k = static_cast<const T*>(p.k) + b * p.k_stride.batch +
               (seq.k_start + n0) * p.k_stride.row + hk * p.k_stride.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_stride.batch +
               (seq.k_start + n0) * p.v_stride.row + hk * p.v_stride.head;

  // A step's (query head of the GQA group, query block of the walk), counted rather than divided
  // out of the step index.
  auto step_head = [&](int head_i) { return walk.hk * walk.group + head_i; };
  auto step_m0 = [&](int m_i) { return static_cast<int64_t>(walk.m_block_min + m_i) * kBlockM; };
  // A step's fp32 dQ rows, and (deterministic) its turn: the counter, and this block's rank, from
  // the top, among the key blocks that see query block m0 (a contiguous run,
  // common/block_schedule.h).
  auto dq_rows_of = [&](int64_t h, int64_t m0) {
    return ws.dq_accum + ((b * p.heads_q + h) * ws.rows + m0) * head_dim;
  };
  auto turn_of = [&](int64_t h, int64_t m0) {
    return ws.dq_turn + (b * p.heads_q + h) * turn_blocks(ws.rows) + m0 / kBlockM;
  };
  auto rank_of = [&](int64_t m0) {
    return static_cast<int>(
        last_key_block_seen(seq.seqlen_q, seq.seqlen_k, p.window_right, m0, kBlockM, kBlockN) -
        n_block);
  };
  auto load_query_side = [&](int head_i, int m_i, int buf) {
    const int64_t h = step_head(head_i), m0 = step_m0(m_i);
    const QueryRows<T> rows = query_rows<T>(p, seq, b, h, m0);
    load_swizzled_async<Tile::kThreads, kBlockM, kHeadDim>(sQ(buf), rows.q, p.q_stride.row,
                                                           seq.seqlen_q - m0, head_dim);
    load_swizzled_async<Tile::kThreads, kBlockM, kHeadDim>(sdO(buf), rows.dout, p.dout_stride.row,
                                                           seq.seqlen_q - m0, head_dim);
    load_lse_dsum_async<kBlockM>(sLse0 + buf * kBlockM, sDsum0 + buf * kBlockM, p, ws, seq, b, h,
                                 m0);
  };

  constexpr int kORegs = kKvCols / 2;
  constexpr int kDqCols = kHeadDim / 2;  // dQ columns of a warpgroup
  using MmaDq = Wgmma<T, kDqCols>;
  float acc_dk[kORegs], acc_dv[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i) acc_dk[i] = acc_dv[i] = 0.0f;

  if (steps > 0) {
    load_swizzled_async<Tile::kThreads, kBlockN, kHeadDim>(sK, k, p.k_stride.row, seq.seqlen_k - n0,
                                                           head_dim);
    load_swizzled_async<Tile::kThreads, kBlockN, kHeadDim>(sV, v, p.v_stride.row, seq.seqlen_k - n0,
                                                           head_dim);
    load_query_side(0, 0, 0);
    cp_async_commit();
  }

  // Rows of K and V (and of sdS) of this warpgroup's keys.
  const int wg_key_bytes = kSplit ? 0 : wg * 64 * 128;
  const unsigned char* sK_wg = reinterpret_cast<const unsigned char*>(sK) + wg_key_bytes;
  const unsigned char* sV_wg = reinterpret_cast<const unsigned char*>(sV) + wg_key_bytes;
  unsigned char* sdS_wg = sdS + wg_key_bytes;

  // A step's dQ sums (acc_dq) go to rows [m0, m0 + kBlockM) of query head h; in the
  // deterministic mode after the turn (turn, my_turn; seen: the counter as thread 0 last read it)
  // has come, which is then passed on during the next step's matmuls (pending_turn).
  float acc_dq[kDqCols / 2];
  int* pending_turn = nullptr;
  int pending_next = 0;
  auto add_dq = [&](int64_t h, int64_t m0, int* turn, int my_turn, int seen) {
    if (kDeterministic) {
      if (threadIdx.x == 0) {
        wait_for_turn<false>(turn, my_turn, seen, 64);
        fence_acq_rel_gpu();  // acquire: the additions below come after the previous block's
      }
      __syncthreads();
    }
    // Four consecutive columns a thread, one 16-byte reduction: lanes t and t ^ 1 swap halves, so
    // that even lanes hold row g and odd lanes row g + 8 of their pair's four columns.
    float* dq_rows = dq_rows_of(h, m0);
    const int q_row = (static_cast<int>(threadIdx.x) / 32 % 4) * 16 + g + 8 * (t & 1);
    const bool row_ok = m0 + q_row < seq.seqlen_q;
#pragma unroll
    for (int nt = 0; nt < kDqCols / 8; ++nt) {
      const float* f = acc_dq + 4 * nt;
      const float give_x = (t & 1) ? f[0] : f[2], give_y = (t & 1) ? f[1] : f[3];
      const float got_x = __shfl_xor_sync(0xffffffffu, give_x, 1);
      const float got_y = __shfl_xor_sync(0xffffffffu, give_y, 1);
      const int col = wg * kDqCols + nt * 8 + 2 * (t & 2);
      const float4 add =
          (t & 1) ? make_float4(got_x, got_y, f[2], f[3]) : make_float4(f[0], f[1], got_x, got_y);
      if (row_ok && col < head_dim) {
        red_add_f32x4(dq_rows + q_row * head_dim + col, add);
      }
    }
    if constexpr (kDeterministic) {
      pending_turn = turn;  // passed on after the next barrier
      pending_next = my_turn + 1;
    }
  };
  int head_i = 0, m_i = 0;  // step it's, as above
  for (int it = 0; it < steps; ++it) {
    const int buf = it & 1;
    const int64_t h = step_head(head_i), m0 = step_m0(m_i);
    int next_head_i = head_i, next_m_i = m_i + 1;
    if (next_m_i == walk.m_blocks) {
      next_m_i = 0;
      ++next_head_i;
    }
    cp_async_wait<0>();  // Q, dO, LSE, D of this step (and K, V) landed
    fence_async_shared();
    compute_sync();  // … for every thread; everyone is done with the previous step
    if (it + 1 < steps) {
      load_query_side(next_head_i, next_m_i, buf ^ 1);
      cp_async_commit();
    }
    const unsigned char* q_tile = reinterpret_cast<const unsigned char*>(sQ(buf));
    const unsigned char* do_tile = reinterpret_cast<const unsigned char*>(sdO(buf));

    // Deterministic mode without the dQ warpgroup: thread 0 looks at this step's counter now,
    // so that the load's latency passes under the step's matmuls.
    int* turn = nullptr;
    int my_turn = 0, seen = -1;
    if constexpr (kDeterministic && !kDqWg) {
      my_turn = rank_of(m0);
      turn = turn_of(h, m0);
      if (threadIdx.x == 0) seen = load_turn<false>(turn);
    }

    // Sᵀ = K Qᵀ, then dPᵀ = V dOᵀ: (64 keys × kSCols queries) a warpgroup, committed apart (at
    // d = 64, Pᵀ is computed between the two waits).
    float s[kSCols / 2], dp[kSCols / 2];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const int off = (kk / 4) * kBlockN * 128 + (kk % 4) * 32;  // column block, k16 step
      const int off_q = (kk / 4) * kBlockM * 128 + qcol0 * 128 + (kk % 4) * 32;
      MmaS::template ss<0, 0>(s, make_desc(sK_wg + off, 16), make_desc(q_tile + off_q, 16), kk > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const int off = (kk / 4) * kBlockN * 128 + (kk % 4) * 32;
      const int off_q = (kk / 4) * kBlockM * 128 + qcol0 * 128 + (kk % 4) * 32;
      MmaS::template ss<0, 0>(dp, make_desc(sV_wg + off, 16), make_desc(do_tile + off_q, 16),
                              kk > 0);
    }
    wgmma_commit();
    // The turn of the last dQ sums, passed on while the tensor cores work: the sums came before
    // the barrier at the top of this step, and by now they have mostly landed, so the release
    // (which waits for them) is short.
    if (kDeterministic && !kDqWg && pending_turn != nullptr) {
      if (threadIdx.x == 0) {
        store_release(pending_turn, pending_next);
      }
      pending_turn = nullptr;
    }

    // Pᵀ and dSᵀ. Column c (query m0 + c) takes LSE and D from shared memory. Queries without
    // any visible key (LSE = −inf) get P = 0. Queries past the sequence need no test: their Q, dO,
    // LSE and D were zero-filled, so S = dP = 0, P = 1 (or 0 where masked) and dS = 0, which
    // adds nothing to dV = Pᵀ dO or dK = dSᵀ Q, and their dQ rows are not written.
    const ScoreGeometry geo = score_geometry(p, seq, m0, n0, kBlockM, kBlockN, 0, 0);
    float alibi_slope = 0.0f;
    if (kScoreMods && p.alibi_slopes != nullptr) {
      alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
    }
    const float* lse = sLse0 + buf * kBlockM;
    const float* dsum = sDsum0 + buf * kBlockM;
    uint32_t pf[kSCols / 16][4], dsf[kSCols / 16][4];
    // Keys past the sequence or outside the causal/local window → −inf. The test is uniform over
    // the step (most steps need none), and each column's bounds are computed once.
    auto apply_mask = [&] {
      if (!geo.need_mask) return;
#pragma unroll
      for (int nt = 0; nt < kSCols / 8; ++nt) {
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {
          const RowWindow query = row_window(geo, qcol0 + nt * 8 + 2 * t + cc);
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int j = key0 + g + 8 * rh;  // key, relative to n0
            float& x = s[4 * nt + 2 * rh + cc];
            x = query.hides(j) ? -kInf : x;
          }
        }
      }
    };
    // LSE in log2 units of a column; −inf (no visible key) → +inf, so that P = 0.
    auto lse_log2 = [](float l) { return l == -kInf ? kInf : l * kLog2e; };
    // (The score-mods variant has applied softmax_scale already: modify_score.)
    auto prob = [&](float x, float l2) {
      return exp2_approx(fmaf(x, kScoreMods ? kLog2e : p.scale_log2, -l2));
    };
    if constexpr (kEarlyP) {
      // Pᵀ while dPᵀ is still in the tensor cores, and dV += Pᵀ dO queued behind it: the wait for
      // dPᵀ comes after that issue, so the compiler cannot hoist it above the exp2 work.
      wgmma_wait<1>();
      fence_registers(s);
      apply_mask();
#pragma unroll
      for (int nt = 0; nt < kSCols / 8; ++nt) {
        const float2 l2 = *reinterpret_cast<const float2*>(lse + qcol0 + nt * 8 + 2 * t);
        const float lx = lse_log2(l2.x), ly = lse_log2(l2.y);
#pragma unroll
        for (int e = 0; e < 4; ++e) s[4 * nt + e] = prob(s[4 * nt + e], (e & 1) ? ly : lx);
        const int kk = nt / 2, half = (nt % 2) * 2;
        pf[kk][half] = pack2<T>(s[4 * nt], s[4 * nt + 1]);
        pf[kk][half + 1] = pack2<T>(s[4 * nt + 2], s[4 * nt + 3]);
      }
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockM / 16; ++kk) {
        MmaKv::template rs<1>(acc_dv, pf[kk], make_desc(do_tile + kk * 16 * 128, kBlockM * 128),
                              true);
      }
      wgmma_commit();
      wgmma_wait<1>();  // dPᵀ (dV stays in flight)
      fence_registers(dp);
    } else {
      // (d ≥ 128: Pᵀ and dSᵀ a fragment at a time, after both; Pᵀ held as floats next to dPᵀ
      // spills there.)
      wgmma_wait<0>();
      fence_registers(s);
      fence_registers(dp);
      if constexpr (!kScoreMods) apply_mask();  // (with score mods: after them, below)
    }
    // Dropout (score mods): the forward's keep decisions (common/philox.h) of the 16 × 16 block
    // (queries qcol0 + 16·np …, this warp's 16 keys). Lane L draws the forward's lane L of the
    // block; a thread's elements come from two lanes, one a query column of its pair
    // (transposed_dropout_source): two shuffles bring them.
    const bool dropout = kScoreMods && p.dropout_p > 0.0f;
    const uint64_t dropout_stream_id =
        kScoreMods ? detail::dropout_stream(p.dropout_offset, b, h, p.heads_q) : 0;
    // ALiBi's distance (the query's diagonal − the key) is dist0 plus constants.
    const float dist0 = static_cast<float>(geo.diag_local + qcol0 + 2 * t - key0 - g);
    uint32_t keep_even = 0xffu, keep_odd = 0xffu;  // query columns 2t, 2t + 1
#pragma unroll
    for (int nt = 0; nt < kSCols / 8; ++nt) {
      const int c = qcol0 + nt * 8 + 2 * t;
      if (dropout && nt % 2 == 0) {
        const uint32_t bits = dropout_keep_bits(
            p.dropout_seed, dropout_stream_id, static_cast<uint32_t>((m0 + qcol0 + nt * 8) >> 4),
            static_cast<uint32_t>((n0 + key0) >> 4), static_cast<uint32_t>(lane),
            p.dropout_threshold);
        keep_even = __shfl_sync(0xffffffffu, bits, transposed_dropout_source(g, t, 0, 0, 0).lane);
        keep_odd = __shfl_sync(0xffffffffu, bits, transposed_dropout_source(g, t, 0, 0, 1).lane);
      }
      const float2 d2 = *reinterpret_cast<const float2*>(dsum + c);
      float lx = 0.0f, ly = 0.0f;
      if constexpr (!kEarlyP) {
        const float2 l2 = *reinterpret_cast<const float2*>(lse + c);
        lx = lse_log2(l2.x);
        ly = lse_log2(l2.y);
      }
      float pr[4], ds[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        // Element e: key key0 + g + 8·(e / 2), query c + e % 2.
        float x = s[4 * nt + e], dcap = 1.0f, dpv = dp[4 * nt + e];
        if constexpr (kScoreMods) {
          const int query = c + (e & 1), key = key0 + g + 8 * (e >> 1);
          x = modify_score(p, x, alibi_slope,
                           dist0 + static_cast<float>(nt * 8 + (e & 1) - 8 * (e >> 1)), dcap);
          if (geo.need_mask && row_window(geo, query).hides(key)) x = -kInf;
        }
        pr[e] = kEarlyP ? x : prob(x, (e & 1) ? ly : lx);
        const float p_undropped = pr[e];
        if (dropout) {
          const uint32_t slot = transposed_dropout_source(g, t, e >> 1, nt & 1, e & 1).slot;
          const bool keep = (((e & 1) ? keep_odd : keep_even) >> slot) & 1u;
          dpv = keep ? dpv * p.dropout_scale : 0.0f;
          pr[e] = keep ? pr[e] : 0.0f;  // Pᵀ for dV (scaled by 1/(1 − p) at the end)
        }
        ds[e] = p_undropped * (dpv - ((e & 1) ? d2.y : d2.x)) * dcap;
      }
      // Accumulator (key rows, query columns) → A fragments of the k16 step nt / 2.
      const int kk = nt / 2, half = (nt % 2) * 2;
      if constexpr (!kEarlyP) {
        pf[kk][half] = pack2<T>(pr[0], pr[1]);
        pf[kk][half + 1] = pack2<T>(pr[2], pr[3]);
      }
      dsf[kk][half] = pack2<T>(ds[0], ds[1]);
      dsf[kk][half + 1] = pack2<T>(ds[2], ds[3]);
      // dSᵀ (and, split, Pᵀ) → shared memory [key][query] (one 128-byte line a key).
      const int r0 = key0 - (kSplit ? 0 : wg * 64) + g;
      const uint32_t at0 = swizzled_offset<64>(r0, qcol0 + nt * 8) + 4 * t;
      const uint32_t at8 = swizzled_offset<64>(r0 + 8, qcol0 + nt * 8) + 4 * t;
      *reinterpret_cast<uint32_t*>(sdS_wg + at0) = dsf[kk][half];
      *reinterpret_cast<uint32_t*>(sdS_wg + at8) = dsf[kk][half + 1];
      if constexpr (kSplit) {
        *reinterpret_cast<uint32_t*>(sP + at0) = pf[kk][half];
        *reinterpret_cast<uint32_t*>(sP + at8) = pf[kk][half + 1];
      }
    }

    // dV += Pᵀ dO, dK += dSᵀ Q (B read N-major: [query][dim]).
    if constexpr (kSplit) {
      // Both warpgroups' query columns of Pᵀ and dSᵀ (A, K-major [key][query]), this
      // warpgroup's 128 columns of dO and Q (two 64-column blocks).
      fence_async_shared();
      __syncthreads();
      const int cb = wg * (kKvCols / 64) * kBlockM * 128;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockM / 16; ++kk) {
        MmaKv::template ss<0, 1>(acc_dv, make_desc(sP + kk * 32, 16),
                                 make_desc(do_tile + cb + kk * 16 * 128, kBlockM * 128), true);
      }
#pragma unroll
      for (int kk = 0; kk < kBlockM / 16; ++kk) {
        MmaKv::template ss<0, 1>(acc_dk, make_desc(sdS + kk * 32, 16),
                                 make_desc(q_tile + cb + kk * 16 * 128, kBlockM * 128), true);
      }
      wgmma_commit();
    } else {
      wgmma_fence();
      if constexpr (!kEarlyP) {  // (issued above when early)
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk) {
          MmaKv::template rs<1>(acc_dv, pf[kk], make_desc(do_tile + kk * 16 * 128, kBlockM * 128),
                                true);
        }
      }
#pragma unroll
      for (int kk = 0; kk < kBlockM / 16; ++kk) {
        MmaKv::template rs<1>(acc_dk, dsf[kk], make_desc(q_tile + kk * 16 * 128, kBlockM * 128),
                              true);
      }
      wgmma_commit();
    }

    // dQ (64 queries × d) += dS (read M-major from [key][query]) · K (read N-major). Each
    // warpgroup takes half the columns over all the block's keys (after a block-wide barrier:
    // all of dS), so every dQ element gets one atomic a block. (Each taking all columns over its
    // own keys, both adding with 8-byte atomics, ran d = 128 at 0.74–0.80× of this on an H100.)
    if constexpr (!kSplit) {
      fence_async_shared();
      compute_sync();
    }
    {
      // Columns [wg · kDqCols, +kDqCols) of K: a 64-column block, or half of one (d = 64: the
      // descriptor starts 64 bytes into the swizzled line).
      const int col0 = wg * kDqCols;
      const unsigned char* bk = reinterpret_cast<const unsigned char*>(sK) +
                                (col0 / 64) * kBlockN * 128 + (col0 % 64) * 2;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        MmaDq::template ss<1, 1>(acc_dq, make_desc(sdS + kk * 16 * 128, 64 * 128),
                                 make_desc(bk + kk * 16 * 128, kBlockN * 128), kk > 0);
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(acc_dv);
    fence_registers(acc_dk);
    fence_registers(acc_dq);
    if constexpr (kDqWg) {
      // Stage the sums for the dQ warpgroup, in a buffer it has finished with (two steps ago).
      if (it >= 2) mbar_wait(sEmpty + buf, ((it - 2) >> 1) & 1);
      float* staged = sDq0 + buf * kBlockM * Tile::kDqStride;
      const int row0 = (static_cast<int>(threadIdx.x) / 32 % 4) * 16 + g;
#pragma unroll
      for (int nt = 0; nt < kDqCols / 8; ++nt) {
        const int col = wg * kDqCols + nt * 8 + 2 * t;
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) {
          *reinterpret_cast<float2*>(staged + (row0 + 8 * rh) * Tile::kDqStride + col) =
              make_float2(acc_dq[4 * nt + 2 * rh], acc_dq[4 * nt + 2 * rh + 1]);
        }
      }
      if (threadIdx.x == 0) {
        DqStage st{};
        st.rows = dq_rows_of(h, m0);
        if constexpr (kDeterministic) {
          st.turn = turn_of(h, m0);
          st.my_turn = rank_of(m0);
        }
        st.n_rows = static_cast<int>(seq.seqlen_q - m0 < kBlockM ? seq.seqlen_q - m0 : kBlockM);
        sStage[buf] = st;
      }
      mbar_arrive(sFull + buf);
    } else {
      add_dq(h, m0, turn, my_turn, seen);
    }
    head_i = next_head_i;
    m_i = next_m_i;
  }
  if (kDeterministic && !kDqWg && pending_turn != nullptr) {
    __syncthreads();
    if (threadIdx.x == 0) {
      store_release(pending_turn, pending_next);
    }
  }

  // ---- Epilogue: dK = scale · Σ dSᵀ Q, dV = Σ Pᵀ dO ----
  T* dk = static_cast<T*>(p.dk) + b * p.dk_stride.batch + (seq.k_start + n0) * p.dk_stride.row +
          hk * p.dk_stride.head;
  T* dv = static_cast<T*>(p.dv) + b * p.dv_stride.batch + (seq.k_start + n0) * p.dv_stride.row +
          hk * p.dv_stride.head;
  const int kv_col0 = kSplit ? wg * kKvCols : 0;
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int row = key0 + g + 8 * rh;
    if (n0 + row >= k_rows) continue;
#pragma unroll
    for (int nt = 0; nt < kKvCols / 8; ++nt) {
      const int col = kv_col0 + nt * 8 + 2 * t;
      if (col < head_dim) {
        *reinterpret_cast<uint32_t*>(dk + row * p.dk_stride.row + col) =
            pack2<T>(acc_dk[4 * nt + 2 * rh] * p.scale, acc_dk[4 * nt + 2 * rh + 1] * p.scale);
        const float dv_scale = kScoreMods ? p.dropout_scale : 1.0f;
        *reinterpret_cast<uint32_t*>(dv + row * p.dv_stride.row + col) =
            pack2<T>(acc_dv[4 * nt + 2 * rh] * dv_scale, acc_dv[4 * nt + 2 * rh + 1] * dv_scale);
      }
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace flashattn::detail::cuda::sm90
