// FlashAttention forward on Hopper, warp-specialised (wgmma + TMA; sm_90a).
//
// One thread block per (query block of 128 rows, query head, batch), three warpgroups:
// - the producer (warpgroup 0; one thread issues, its warp helps at a ragged tail): Q once, then
//   K and V of each key block by TMA into a ring of kStages shared-memory stages, each stage's
//   arrival counted by an mbarrier ("full"), each stage refilled only once both consumers have
//   released it ("empty"). It gives its registers up (setmaxnreg) to the consumers.
// - two consumers (warpgroups 1 and 2), each owning 64 whole rows of the query block, so the
//   online softmax never crosses warps. S = Q Kᵀ runs from shared memory (SS); O += P V takes P
//   from registers (RS) and V from shared memory read N-major. They never meet at a block-wide
//   barrier: only at the stages' mbarriers and (kPingPong) at two named barriers that take turns,
//   so that one consumer's softmax runs while the other's matrix products hold the tensor cores.
// - Inside a consumer, S(next) = Q K(next)ᵀ and O += P V(current) are issued together and the
//   softmax of S(next) runs while P V(current) is still on the tensor cores.
// Key blocks are walked from the last to the first; the mask is applied on boundary blocks only.
//
// TMA reads zeros past the tensor's rows, but keys past a sequence's end inside the tensor
// (varlen, seqused_k, leftpad) are real memory, possibly never written: masked scores hide them
// from S, but P V would still multiply their V rows by 0, and 0 · NaN is NaN. The producer
// zeroes those V rows in shared memory before it releases the stage (one key block a sequence).
//
// kScoreMods: the variant that applies softmax_scale before the max (any sign), softcap, ALiBi
// and dropout (the same Philox mapping as the sm80 kernel and the CPU: the accumulator fragments
// of a warp have the mma.sync m16n8 layout). The plain variant folds the scale into exp2.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/params.h"
#include "common/philox.h"
#include "cuda/common/masking.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/sm90/tensor_map.h"
#include "cuda/sm90/tma.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace flashattn::detail::cuda::sm90 {

template <int kHeadDim_, int kBlockN_, int kStages_, bool kPingPong_, int kConsumers_ = 2>
struct FwdTile {
  static constexpr int kHeadDim = kHeadDim_;  // compiled (padded) head dim, a multiple of 64
  static constexpr int kBlockN = kBlockN_;    // keys of one main-loop step
  static constexpr int kStages = kStages_;    // K and V stages in flight
  static constexpr bool kPingPong = kPingPong_;
  // Consumer warpgroups: two (one thread block an SM) or one (two blocks an SM, each with its
  // own producer: one block's pipeline fill and drain run under the other's work).
  static constexpr int kConsumers = kConsumers_;
  static constexpr int kMinBlocks = kConsumers == 1 ? 2 : 1;
  static constexpr int kBlockM = 64 * kConsumers;
  static constexpr int kThreads = kWarpgroupThreads * (kConsumers + 1);
  // setmaxnreg moves registers inside a block: what the producer gives up from the cap at entry
  // (65536 / (kThreads · kMinBlocks), a multiple of 8) is what the consumers take.
  static constexpr int kEntryRegs = 65536 / (kThreads * kMinBlocks) / 8 * 8;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = kEntryRegs + (kEntryRegs - kProducerRegs) / kConsumers / 8 * 8;
  static constexpr int kSRegs = kBlockN / 2;   // S accumulator registers a thread (m64 × kBlockN)
  static constexpr int kORegs = kHeadDim / 2;  // O accumulator registers a thread (m64 × kHeadDim)
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;
  static constexpr int kTileBytes = kQBytes + 2 * kStages * kKvBytes;
  // mbarriers after the tiles: Q full, the tail, then K full, V full, K empty, V empty a stage.
  static constexpr int kBarriers = 2 + 4 * kStages;
  // 1 KB of slack to align the base to a swizzle atom.
  static constexpr int kSmemBytes = kTileBytes + kBarriers * 8 + 1024;

  static_assert(kHeadDim % 64 == 0 && kBlockN % 16 == 0, "whole 128-byte swizzle blocks");
  static_assert(kKvBytes % 1024 == 0 && kQBytes % 1024 == 0, "stages start on swizzle atoms");
  static_assert(kConsumerRegs <= 256 && (kConsumerRegs - kEntryRegs) * kConsumers <=
                                            kEntryRegs - kProducerRegs,
                "the consumers take no more registers than the producer gives up");
  static_assert(kConsumers == 2 || !kPingPong, "ping-pong takes two consumers");
};

// Tiles per head dim, chosen with bench/tune_fwd_sm90.cu on an H200 (docs/tuning.md, bf16):
// 128 keys a step at d ≤ 128, 64 at d = 256 (its O accumulator is 128 registers a thread); two
// stages; S(next) overlapped with P V(current); ping-pong between the consumers. The score-mods
// variant takes the same tile.
template <int kHeadDim, bool kScoreMods>
struct FwdTileFor;
template <bool kScoreMods>
struct FwdTileFor<64, kScoreMods> : FwdTile<64, 128, 2, true> {};
template <bool kScoreMods>
struct FwdTileFor<128, kScoreMods> : FwdTile<128, 128, 2, true> {};
template <bool kScoreMods>
struct FwdTileFor<256, kScoreMods> : FwdTile<256, 64, 2, true> {};

template <int kHeadDim>
inline constexpr bool kHasFwdTile = kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256;

template <class T, class Tile, bool kScoreMods>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    flash_fwd_kernel(const __grid_constant__ AttentionParams p,
                        const __grid_constant__ FwdTensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN, kHeadDim = Tile::kHeadDim;
  constexpr int kStages = Tile::kStages;
  constexpr int kSRegs = Tile::kSRegs, kORegs = Tile::kORegs;
  constexpr int kNTiles = kBlockN / 8;  // n8 column tiles of S
  constexpr int kDTiles = kHeadDim / 8;
  constexpr int kColBlocks = kHeadDim / 64;  // 64-column TMA boxes of a row
  constexpr float kNegInf = -__builtin_huge_valf();
  constexpr int kConsumerThreads = Tile::kConsumers * kWarpgroupThreads;
  using Mma = Wgmma<T, kBlockN>;
  using MmaO = Wgmma<T, kHeadDim>;

  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_address(smem_raw) & 1023)) & 1023);
  unsigned char* sQ = smem;
  auto sK = [&](int stage) { return smem + Tile::kQBytes + stage * Tile::kKvBytes; };
  auto sV = [&](int stage) { return smem + Tile::kQBytes + (kStages + stage) * Tile::kKvBytes; };
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Tile::kTileBytes);
  uint64_t* q_full = bars;
  uint64_t* tail_landed = bars + 1;
  uint64_t* k_full = bars + 2;
  uint64_t* v_full = k_full + kStages;
  uint64_t* k_empty = v_full + kStages;
  uint64_t* v_empty = k_empty + kStages;

  // ---- Block geometry ----
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const SequenceInfo seq = sequence_info(p, b);
  const int64_t m0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kBlockM;
  if (m0 >= seq.seqlen_q) return;
  const int wg = static_cast<int>(threadIdx.x) / kWarpgroupThreads;
  const int warp = static_cast<int>(threadIdx.x) / 32 % 4;  // within the warpgroup
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t hk = h / p.group;
  const BlockRange key_blocks = visible_key_blocks(p, seq, m0, kBlockM, kBlockN);
  const int n_blocks = key_blocks.end - key_blocks.first;
  // Key block of step i (blocks are walked last to first) and its first key; the K/V stage of
  // step i and the parity of its use of that stage.
  auto key_start = [&](int i) { return static_cast<int64_t>(key_blocks.end - 1 - i) * kBlockN; };
  auto stage_of = [](int i) { return i % kStages; };
  auto parity_of = [](int i) { return static_cast<uint32_t>((i / kStages) & 1); };

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    mbar_init(tail_landed, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&k_empty[s], Tile::kConsumers * 4);  // one arrival a consumer warp
      mbar_init(&v_empty[s], Tile::kConsumers * 4);
    }
    mbar_fence_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ---------------- Producer ----------------
    setmaxnreg_dec<Tile::kProducerRegs>();
    if (warp != 0 || n_blocks == 0) return;
    // TMA coordinates: (column, row, head, batch); varlen maps have one batch of packed rows.
    const int bq = p.is_varlen ? 0 : static_cast<int>(b);
    const int q_row = static_cast<int>(seq.q_start + m0);
    const int k_row = static_cast<int>(seq.k_start);
    // Keys past the sequence's end that the tensor holds (not zero-filled by TMA).
    const bool ragged_tail = p.is_varlen || p.seqused_k != nullptr || p.leftpad_k != nullptr;
    if (lane == 0) {
      tma_prefetch_map(&maps.q);
      tma_prefetch_map(&maps.k);
      tma_prefetch_map(&maps.v);
      mbar_arrive_expect_tx(q_full, Tile::kQBytes);
#pragma unroll
      for (int c = 0; c < kColBlocks; ++c) {
        tma_load_4d(sQ + c * kBlockM * 128, &maps.q, q_full, c * 64, q_row, static_cast<int>(h), bq);
      }
    }
    for (int i = 0; i < n_blocks; ++i) {
      const int stage = stage_of(i);
      const uint32_t parity = parity_of(i) ^ 1;  // a free stage: the consumers' previous use
      const int64_t n0 = key_start(i);
      const int row = k_row + static_cast<int>(n0);
      if (lane == 0) {
        mbar_wait(&k_empty[stage], parity);
        mbar_arrive_expect_tx(&k_full[stage], Tile::kKvBytes);
#pragma unroll
        for (int c = 0; c < kColBlocks; ++c) {
          tma_load_4d(sK(stage) + c * kBlockN * 128, &maps.k, &k_full[stage], c * 64, row,
                      static_cast<int>(hk), bq);
        }
        mbar_wait(&v_empty[stage], parity);
      }
      const int keys = static_cast<int>(min(seq.seqlen_k - n0, static_cast<int64_t>(kBlockN)));
      if (!(ragged_tail && keys < kBlockN)) {
        if (lane == 0) {
          mbar_arrive_expect_tx(&v_full[stage], Tile::kKvBytes);
#pragma unroll
          for (int c = 0; c < kColBlocks; ++c) {
            tma_load_4d(sV(stage) + c * kBlockN * 128, &maps.v, &v_full[stage], c * 64, row,
                        static_cast<int>(hk), bq);
          }
        }
      } else {
        // The one block with keys past the sequence's end (the first step): land it, zero the
        // rows past the end (whole 128-byte lines: the swizzle stays inside a line), publish it.
        if (lane == 0) {
          mbar_arrive_expect_tx(tail_landed, Tile::kKvBytes);
#pragma unroll
          for (int c = 0; c < kColBlocks; ++c) {
            tma_load_4d(sV(stage) + c * kBlockN * 128, &maps.v, tail_landed, c * 64, row,
                        static_cast<int>(hk), bq);
          }
        }
        __syncwarp();
        mbar_wait(tail_landed, 0);
        const int chunks = (kBlockN - keys) * 8;  // 16-byte chunks of the tail, a column block
        for (int x = lane; x < chunks * kColBlocks; x += 32) {
          const int c = x / chunks, r = keys + (x % chunks) / 8, chunk = x % 8;
          *reinterpret_cast<uint4*>(sV(stage) + c * kBlockN * 128 + r * 128 + chunk * 16) =
              make_uint4(0, 0, 0, 0);
        }
        fence_async_shared();
        __syncwarp();
        if (lane == 0) mbar_arrive(&v_full[stage]);
      }
    }
    return;
  }

  // ---------------- Consumers ----------------
  setmaxnreg_inc<Tile::kConsumerRegs>();
  const int cw = wg - 1;  // consumer index: rows [64 · cw, 64 · cw + 64) of the block
  const int g = lane / 4, t = lane % 4;
  const int row0 = cw * 64 + warp * 16;  // warp's first row
  // Ping-pong: consumer cw issues its matrix products after barrier 1 + cw, then hands the turn
  // to the other one. Consumer 0 goes first.
  auto turn_wait = [&] {
    if constexpr (Tile::kPingPong) named_barrier_sync(1 + cw, kConsumerThreads);
  };
  auto turn_pass = [&] {
    if constexpr (Tile::kPingPong) named_barrier_arrive(2 - cw, kConsumerThreads);
  };
  if (Tile::kPingPong && cw == 1) named_barrier_arrive(1, kConsumerThreads);
  auto release = [&](uint64_t* bar) {
    if (lane == 0) mbar_arrive(bar);
  };

  const int head_dim = static_cast<int>(p.head_dim);
  float acc_o[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i) acc_o[i] = 0.0f;
  float row_max[2] = {kNegInf, kNegInf}, row_sum[2] = {0.0f, 0.0f};
  uint32_t pf[kBlockN / 16][4];  // P of the current block as wgmma A fragments
  const float mul = kScoreMods ? kLog2e : p.scale_log2;
  float alibi_slope = 0.0f;
  if (kScoreMods && p.alibi_slopes != nullptr) alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
  const uint64_t dropout_stream_id = detail::dropout_stream(p.dropout_offset, b, h, p.heads_q);

  // S = Q K(stage)ᵀ for this warpgroup's 64 rows, issued (not waited for).
  auto issue_s = [&](float (&s)[kSRegs], int stage) {
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const int block = kk / 4, within = (kk % 4) * 32;
      const uint64_t da = make_desc(sQ + block * kBlockM * 128 + cw * 64 * 128 + within, 16);
      const uint64_t db = make_desc(sK(stage) + block * kBlockN * 128 + within, 16);
      Mma::template ss<0, 0>(s, da, db, kk > 0);
    }
    wgmma_commit();
  };
  // O += P V(stage), issued.
  auto issue_pv = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint64_t db = make_desc(sV(stage) + kk * 16 * 128, kBlockN * 128);
      MmaO::template rs<1>(acc_o, pf[kk], db, true);
    }
    wgmma_commit();
  };

  // Score mods and mask of S(step i), then the online softmax: new row max and sum, P in place
  // (unnormalised, dropout applied); returns through `correction` the factor O must take.
  auto softmax = [&](float (&s)[kSRegs], int i, float (&correction)[2]) {
    const int64_t n0 = key_start(i);
    const ScoreGeometry geo = score_geometry(p, seq, m0, n0, kBlockM, kBlockN, row0, 0);
    auto mods_and_mask = [&](auto softcap) {
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const RowWindow row = row_window(geo, row0 + g + 8 * rh);
        [[maybe_unused]] const float dist0 = static_cast<float>(row.diag - 2 * t);  // less nt·8 + e
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int j = nt * 8 + 2 * t + e;
            float& x = s[4 * nt + 2 * rh + e];
            if constexpr (kScoreMods) {
              float dcap;
              x = modify_score_with<decltype(softcap)::value>(
                  p, x, alibi_slope, dist0 - static_cast<float>(nt * 8 + e), dcap);
            }
            if (geo.need_mask && row.hides(j)) x = kNegInf;
          }
        }
      }
    };
    if constexpr (kScoreMods) {
      with_softcap(p, mods_and_mask);
    } else if (geo.need_mask) {
      mods_and_mask(std::false_type{});
    }
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      float m_new = row_max[rh];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        m_new = fmaxf(m_new, fmaxf(s[4 * nt + 2 * rh], s[4 * nt + 2 * rh + 1]));
      }
      m_new = quad_max(m_new);
      const float m_scaled = m_new == kNegInf ? 0.0f : m_new * mul;
      correction[rh] = exp2_approx(row_max[rh] * mul - m_scaled);
      row_max[rh] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[4 * nt + 2 * rh + e];
          x = exp2_approx(fmaf(x, mul, -m_scaled));
          sum += x;
        }
      }
      row_sum[rh] = row_sum[rh] * correction[rh] + sum;
    }
    if (kScoreMods && p.dropout_p > 0.0f) {
      const uint32_t row_block = static_cast<uint32_t>((m0 + row0) >> 4);
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        const uint32_t col_block = static_cast<uint32_t>((n0 >> 4) + np);
        const uint32_t keep =
            dropout_keep_bits(p.dropout_seed, dropout_stream_id, row_block, col_block,
                              static_cast<uint32_t>(lane), p.dropout_threshold);
#pragma unroll
        for (int slot = 0; slot < 8; ++slot) {
          if (!((keep >> slot) & 1u)) s[4 * (2 * np + slot / 4) + slot % 4] = 0.0f;
        }
      }
    }
  };
  auto rescale_o = [&](const float (&correction)[2]) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      acc_o[4 * dt + 0] *= correction[0];
      acc_o[4 * dt + 1] *= correction[0];
      acc_o[4 * dt + 2] *= correction[1];
      acc_o[4 * dt + 3] *= correction[1];
    }
  };
  auto make_p_fragments = [&](const float (&s)[kSRegs]) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      pf[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      pf[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      pf[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      pf[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  if (n_blocks > 0) {
    mbar_wait(q_full, 0);
    {
      mbar_wait(&k_full[0], 0);
      float s[kSRegs];
      turn_wait();
      wgmma_fence();
      issue_s(s, 0);
      turn_pass();
      wgmma_wait<0>();
      fence_registers(s);
      release(&k_empty[0]);
      float correction[2];
      softmax(s, 0, correction);
      make_p_fragments(s);  // O is still zero: no rescale
    }
    // ---- Main loop: S(i + 1) and P V(i) in flight together; the last P V(i) after it ----
    // (No wgmma is issued under a condition: ptxas then keeps the pipeline asynchronous.)
    for (int i = 0; i + 1 < n_blocks; ++i) {
      const int next = stage_of(i + 1), cur = stage_of(i);
      mbar_wait(&k_full[next], parity_of(i + 1));
      mbar_wait(&v_full[cur], parity_of(i));
      float s[kSRegs];
      turn_wait();
      wgmma_fence();
      issue_s(s, next);
      issue_pv(cur);
      turn_pass();
      wgmma_wait<1>();  // S(i + 1) done; P V(i) may still run
      fence_registers(s);
      release(&k_empty[next]);
      float correction[2];
      softmax(s, i + 1, correction);
      wgmma_wait<0>();
      fence_registers(acc_o);
      fence_registers(pf);
      release(&v_empty[cur]);
      rescale_o(correction);
      make_p_fragments(s);
    }
    const int last = stage_of(n_blocks - 1);
    mbar_wait(&v_full[last], parity_of(n_blocks - 1));
    turn_wait();
    wgmma_fence();
    issue_pv(last);
    turn_pass();
    wgmma_wait<0>();
    fence_registers(acc_o);
    release(&v_empty[last]);
  }

  // ---- Epilogue: the one rescale by 1/l, O and LSE out ----
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const float l = quad_sum(row_sum[rh]);
    const int64_t i = m0 + row0 + g + 8 * rh;
    if (i >= seq.seqlen_q) continue;
    // l = 0: no visible key, O = 0 and LSE −inf; a NaN score makes l, O and LSE NaN.
    const float inv = l == 0.0f ? 0.0f : p.dropout_scale / l;
    T* o = static_cast<T*>(p.out) + b * p.out_stride.batch + (seq.q_start + i) * p.out_stride.row +
           h * p.out_stride.head;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + 2 * t;
      if (col < head_dim) {
        *reinterpret_cast<uint32_t*>(o + col) =
            pack2<T>(acc_o[4 * dt + 2 * rh] * inv, acc_o[4 * dt + 2 * rh + 1] * inv);
      }
    }
    if (t == 0 && p.lse != nullptr) {
      p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + i] =
          l == 0.0f ? kNegInf : row_max[rh] * mul * kLn2 + logf(l);
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

}  // namespace flashattn::detail::cuda::sm90
