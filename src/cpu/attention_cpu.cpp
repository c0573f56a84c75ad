// CPU forward and backward: FlashAttention-2, block by block, accumulating in the compute type
// Acc: float for fp16/bf16/fp32 inputs, double for fp64 inputs (for gradcheck-grade references).
//
// Forward, per (batch, query head, query block of kBlockM rows):
//   for each key block that some row of the block can see:
//     S = Q Kᵀ;  scores = mask(alibi(softcap(scale · S)))            (log2 units)
//     m_new = max(m, rowmax(scores));  P = exp2(scores − m_new)
//     l = l · exp2(m − m_new) + rowsum(P);  acc = acc · exp2(m − m_new) + dropout(P) V
//   O = acc / l (the one rescale at the end);  LSE = (m + log2 l) · ln 2
// Backward, in two passes that never write the same element from two threads (so it is
// deterministic for any thread count):
//   D = rowsum(dO ∘ O)
//   per (batch, kv head, key block):  over its query heads and the query blocks that see it,
//     P = exp(scores − LSE), dV += dropout(P)ᵀ dO, dP = dropout(dO Vᵀ), dS = P ∘ (dP − D),
//     dK += dSᵀ Q
//   per (batch, query head, query block): the same P and dS, dQ += dS K
#include "cpu/attention_cpu.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/numeric.h"
#include "common/philox.h"
#include "cpu/parallel.h"

namespace flashattn::detail::cpu {
namespace {

constexpr int64_t kBlockM = 64;  // query rows of one task; a multiple of 16 (dropout blocks)
constexpr int64_t kBlockN = 64;  // keys of one inner step; a multiple of 16
template <class Acc>
constexpr Acc kLog2e = static_cast<Acc>(1.44269504088896340735992468100189214L);
template <class Acc>
constexpr Acc kLn2 = static_cast<Acc>(0.693147180559945309417232121458176568L);
template <class Acc>
constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
// The fp32 constants are the literals this file had before it computed in double too.
static_assert(kLog2e<float> == 1.4426950408889634f && kLn2<float> == 0.6931471805599453f);

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- Compute type ------------------------------------------------------------------------------

// The storage types T and their compute type Acc<T>: float, except double for double.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

inline double to_acc(double x) { return x; }
template <class T>
float to_acc(T x) {
  return to_float(x);
}

template <class T>
T from_acc(Acc<T> x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_float<T>(x);
  }
}

// The softmax scale in the compute type: fp64 inputs get it exactly (validate.cpp keeps both).
template <class A>
A scale_of(const AttentionParams& p) {
  if constexpr (std::is_same_v<A, double>) {
    return p.scale_f64;
  } else {
    return p.scale;
  }
}

// The LSE buffer, in the compute type (null when the forward's caller did not ask for it).
template <class A>
A* lse_data(const AttentionParams& p) {
  if constexpr (std::is_same_v<A, double>) {
    return p.lse_f64;
  } else {
    return p.lse;
  }
}

// ---- Tiles: small row-major matrices of the compute type --------------------------------------

// C[m][n] += Σ_k A[m][k] · B[k][n]   (A: rows × depth, lda; B: depth × cols, ldb; C: ldc)
template <class A>
void matmul_acc(A* __restrict__ c, int64_t ldc, const A* __restrict__ a, int64_t lda,
                const A* __restrict__ b, int64_t ldb, int64_t rows, int64_t depth, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    A* ci = c + i * ldc;
    for (int64_t kk = 0; kk < depth; ++kk) {
      const A aik = a[i * lda + kk];
      const A* bk = b + kk * ldb;
      for (int64_t j = 0; j < cols; ++j) ci[j] += aik * bk[j];
    }
  }
}

// C[m][n] += Σ_k A[k][m] · B[k][n]   (Aᵀ B; A: depth × rows, lda)
template <class A>
void matmul_tn_acc(A* __restrict__ c, int64_t ldc, const A* __restrict__ a, int64_t lda,
                   const A* __restrict__ b, int64_t ldb, int64_t rows, int64_t depth,
                   int64_t cols) {
  for (int64_t kk = 0; kk < depth; ++kk) {
    const A* bk = b + kk * ldb;
    for (int64_t i = 0; i < rows; ++i) {
      const A aki = a[kk * lda + i];
      if (aki == A(0)) continue;  // masked or dropped: common in boundary tiles
      A* ci = c + i * ldc;
      for (int64_t j = 0; j < cols; ++j) ci[j] += aki * bk[j];
    }
  }
}

// One (rows, heads, dim) operand of one sequence and head; k and v may be paged.
template <class T>
struct Rows {
  const T* base;  // element (row 0, dim 0); paged: of page 0
  int64_t row_stride;
  const int32_t* pages = nullptr;  // paged: the sequence's row of the block table
  int64_t page_size = 1;
  int64_t page_stride = 0;

  const T* row(int64_t r) const {
    if (pages == nullptr) return base + r * row_stride;
    return base + pages[r / page_size] * page_stride + (r % page_size) * row_stride;
  }
};

template <class T>
Rows<T> operand_rows(const void* data, const OperandStrides& s, int64_t b, int64_t seq_start,
                     int64_t head) {
  const T* base = static_cast<const T*>(data) + b * s.batch + seq_start * s.row + head * s.head;
  return Rows<T>{base, s.row};
}

// k or v of sequence b and kv head `head`: through the block table when the cache is paged.
template <class T>
Rows<T> key_rows_of(const AttentionParams& p, const void* data, const OperandStrides& s, int64_t b,
                    int64_t seq_start, int64_t head) {
  if (p.block_table == nullptr) return operand_rows<T>(data, s, b, seq_start, head);
  return Rows<T>{static_cast<const T*>(data) + head * s.head, s.row,
                 p.block_table + b * p.block_table_stride, p.page_size, s.batch};
}

// dst[r][d] = src row (row0 + r), for r < nrows, d < dim
template <class T>
void load_tile(const Rows<T>& src, int64_t row0, int64_t nrows, int64_t dim, Acc<T>* dst,
               int64_t ld) {
  for (int64_t r = 0; r < nrows; ++r) {
    const T* s = src.row(row0 + r);
    Acc<T>* d = dst + r * ld;
    for (int64_t x = 0; x < dim; ++x) d[x] = to_acc(s[x]);
  }
}

// dst[d][r] = src row (row0 + r): the transposed tile, so Q Kᵀ runs along contiguous keys.
template <class T>
void load_tile_transposed(const Rows<T>& src, int64_t row0, int64_t nrows, int64_t dim,
                          Acc<T>* dst, int64_t ld) {
  for (int64_t r = 0; r < nrows; ++r) {
    const T* s = src.row(row0 + r);
    for (int64_t x = 0; x < dim; ++x) dst[x * ld + r] = to_acc(s[x]);
  }
}

template <class T>
void store_row(T* dst, const Acc<T>* src, int64_t n, Acc<T> mul) {
  for (int64_t x = 0; x < n; ++x) dst[x] = from_acc<T>(src[x] * mul);
}

template <class T>
T* mutable_row(void* data, const OperandStrides& s, int64_t b, int64_t seq_start, int64_t head,
               int64_t r) {
  return static_cast<T*>(data) + b * s.batch + (seq_start + r) * s.row + head * s.head;
}

// ---- Scores: scale, softcap, ALiBi, mask, dropout --------------------------------------------

// What every tile of one (batch, query head) shares.
struct HeadContext {
  const AttentionParams* p;
  SequenceInfo seq;
  int64_t b, h;
  float alibi_slope;  // 0 = no ALiBi
  uint64_t dropout_stream;

  HeadContext(const AttentionParams& params, int64_t batch_idx, int64_t head_idx)
      : p(&params), seq(sequence_info(params, batch_idx)), b(batch_idx), h(head_idx) {
    alibi_slope = params.alibi_slopes
                      ? params.alibi_slopes[batch_idx * params.alibi_batch_stride + head_idx]
                      : 0.0f;
    dropout_stream =
        detail::dropout_stream(params.dropout_offset, batch_idx, head_idx, params.heads_q);
  }

  KeyRange keys(int64_t row) const {
    KeyRange r = visible_keys(*p, row, seq.seqlen_q, seq.seqlen_k);
    r.first = std::max<int64_t>(r.first, 0);
    r.last = std::min<int64_t>(r.last, seq.seqlen_k - 1);
    return r;
  }

  // LSE of row i lives at lse[b·batch_stride + h·head_stride + q_start + i].
  template <class A>
  A* lse_row(int64_t row) const {
    return lse_data<A>(*p) + b * p->lse_batch_stride + h * p->lse_head_stride + seq.q_start + row;
  }
};

// Turns raw Q·Kᵀ values of a tile into scores in log2 units, −inf where masked:
//   s = scale·x → softcap·tanh(s/softcap) → + alibi → mask; returns s·log2(e).
// If dtanh is non-null it receives 1 − tanh² (the softcap derivative) per element.
template <class A>
void scores_tile(const HeadContext& ctx, A* tile, int64_t ld, int64_t m0, int64_t mr, int64_t n0,
                 int64_t nc, A* dtanh) {
  const AttentionParams& p = *ctx.p;
  const A scale = scale_of<A>(p);
  const A softcap = p.softcap;
  const A inv_softcap = softcap > A(0) ? A(1) / softcap : A(0);
  const A alibi_slope = ctx.alibi_slope;
  for (int64_t r = 0; r < mr; ++r) {
    const int64_t i = m0 + r;
    const KeyRange keys = ctx.keys(i);
    const int64_t diag = i + ctx.seq.seqlen_k - ctx.seq.seqlen_q;
    A* s = tile + r * ld;
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t j = n0 + c;
      A x = s[c] * scale;
      if (softcap > A(0)) {
        const A t = std::tanh(x * inv_softcap);
        x = softcap * t;
        if (dtanh) dtanh[r * ld + c] = A(1) - t * t;
      }
      if (alibi_slope != A(0)) {
        x -= alibi_slope * static_cast<A>(std::llabs(diag - j));
      }
      s[c] = (j < keys.first || j > keys.last) ? kNegInf<A> : x * kLog2e<A>;
    }
  }
}

// keep[r][c] = 1 if element (m0 + r, n0 + c) survives dropout, else 0 (docs/dropout.md).
// m0 and n0 are multiples of 16: one Philox call per (16×16 block, lane) serves 8 elements.
template <class A>
void dropout_tile(const HeadContext& ctx, A* keep, int64_t ld, int64_t m0, int64_t mr, int64_t n0,
                  int64_t nc) {
  const AttentionParams& p = *ctx.p;
  for (int64_t bi = m0; bi < m0 + mr; bi += 16) {
    for (int64_t bj = n0; bj < n0 + nc; bj += 16) {
      for (int lane = 0; lane < 32; ++lane) {
        const int64_t lane_row = bi + lane / 4, lane_col = bj + 2 * (lane % 4);
        const uint32_t bits = dropout_keep_bits(
            p.dropout_seed, ctx.dropout_stream, static_cast<uint32_t>(bi >> 4),
            static_cast<uint32_t>(bj >> 4), static_cast<uint32_t>(lane), p.dropout_threshold);
        for (int slot = 0; slot < 8; ++slot) {
          const int64_t i = lane_row + 8 * ((slot >> 1) & 1);
          const int64_t j = lane_col + 8 * (slot >> 2) + (slot & 1);
          if (i >= m0 + mr || j >= n0 + nc) continue;
          keep[(i - m0) * ld + (j - n0)] = (bits >> slot) & 1u ? A(1) : A(0);
        }
      }
    }
  }
}

// Key blocks that some row of [m0, m0 + mr) can see: [first, end) (empty if none), the same
// convention as the CUDA kernels' BlockRange.
struct BlockRange {
  int64_t first, end;
};

BlockRange key_blocks(const HeadContext& ctx, int64_t m0, int64_t mr) {
  // The first and last visible keys grow with the row, so the block's span is set by its ends.
  const KeyRange top = ctx.keys(m0), bottom = ctx.keys(m0 + mr - 1);
  const int64_t first = top.first, last = bottom.last;
  if (first > last || ctx.seq.seqlen_k == 0) return {0, 0};
  return {first / kBlockN, last / kBlockN + 1};
}

// ---- Forward ---------------------------------------------------------------------------------

template <class A>
struct ForwardScratch {
  std::vector<A> q, kt, v, s, keep, acc, m, l;
  explicit ForwardScratch(const AttentionParams& p)
      : q(static_cast<size_t>(kBlockM * p.head_dim)),
        kt(static_cast<size_t>(p.head_dim * kBlockN)),
        v(static_cast<size_t>(kBlockN * p.head_dim_v)),
        s(static_cast<size_t>(kBlockM * kBlockN)),
        keep(p.dropout_p > 0.0f ? static_cast<size_t>(kBlockM * kBlockN) : 0),
        acc(static_cast<size_t>(kBlockM * p.head_dim_v)),
        m(kBlockM),
        l(kBlockM) {}
};

template <class T>
void forward_block(const AttentionParams& p, int64_t b, int64_t h, int64_t m_block,
                   ForwardScratch<Acc<T>>& w) {
  using A = Acc<T>;
  const HeadContext ctx(p, b, h);
  const int64_t m0 = m_block * kBlockM;
  if (m0 >= ctx.seq.seqlen_q) return;
  const int64_t mr = std::min(kBlockM, ctx.seq.seqlen_q - m0);
  const int64_t hk = h / p.group, d = p.head_dim, dv = p.head_dim_v;
  const auto q = operand_rows<T>(p.q, p.q_stride, b, ctx.seq.q_start, h);
  const auto k = key_rows_of<T>(p, p.k, p.k_stride, b, ctx.seq.k_start, hk);
  const auto v = key_rows_of<T>(p, p.v, p.v_stride, b, ctx.seq.k_start, hk);

  // Prologue: the query tile and the running state (m, l, acc).
  load_tile(q, m0, mr, d, w.q.data(), d);
  std::fill(w.acc.begin(), w.acc.end(), A(0));
  std::fill(w.m.begin(), w.m.end(), kNegInf<A>);
  std::fill(w.l.begin(), w.l.end(), A(0));

  // Main loop over the key blocks this query block can see (the rest are skipped).
  const BlockRange blocks = key_blocks(ctx, m0, mr);
  for (int64_t nb = blocks.first; nb < blocks.end; ++nb) {
    const int64_t n0 = nb * kBlockN, nc = std::min(kBlockN, ctx.seq.seqlen_k - n0);
    load_tile_transposed(k, n0, nc, d, w.kt.data(), kBlockN);
    load_tile(v, n0, nc, dv, w.v.data(), dv);

    // S = Q Kᵀ, then scores in log2 units.
    std::fill(w.s.begin(), w.s.end(), A(0));
    matmul_acc(w.s.data(), kBlockN, w.q.data(), d, w.kt.data(), kBlockN, mr, d, nc);
    scores_tile<A>(ctx, w.s.data(), kBlockN, m0, mr, n0, nc, nullptr);
    if (p.dropout_p > 0.0f) dropout_tile(ctx, w.keep.data(), kBlockN, m0, mr, n0, nc);

    // Online softmax: new running max, rescale of the running sum and accumulator, P.
    for (int64_t r = 0; r < mr; ++r) {
      A* s = w.s.data() + r * kBlockN;
      A row_max = kNegInf<A>;
      for (int64_t c = 0; c < nc; ++c) row_max = std::max(row_max, s[c]);
      const A m_new = std::max(w.m[r], row_max);
      if (m_new == kNegInf<A>) {  // nothing visible yet in this row (std::max passes NaN over)
        if (std::any_of(s, s + nc, [](A x) { return std::isnan(x); })) {
          w.l[r] = std::numeric_limits<A>::quiet_NaN();  // a NaN score: the row's O and LSE
        }
        std::fill(s, s + nc, A(0));
        continue;
      }
      const A correction = std::exp2(w.m[r] - m_new);  // 0 when m was −inf
      A row_sum = A(0);
      for (int64_t c = 0; c < nc; ++c) {
        s[c] = std::exp2(s[c] - m_new);
        row_sum += s[c];
      }
      w.l[r] = w.l[r] * correction + row_sum;
      w.m[r] = m_new;
      if (correction != A(1)) {
        A* acc = w.acc.data() + r * dv;
        for (int64_t x = 0; x < dv; ++x) acc[x] *= correction;
      }
      if (p.dropout_p > 0.0f) {
        const A* keep = w.keep.data() + r * kBlockN;
        for (int64_t c = 0; c < nc; ++c) s[c] *= keep[c];
      }
    }
    // acc += P V
    matmul_acc(w.acc.data(), dv, w.s.data(), kBlockN, w.v.data(), dv, mr, nc, dv);
  }

  // Epilogue: the one rescale by 1/l (and the dropout scale), the LSE.
  for (int64_t r = 0; r < mr; ++r) {
    T* o = mutable_row<T>(p.out, p.out_stride, b, ctx.seq.q_start, h, m0 + r);
    const bool empty = w.l[r] == A(0);  // no visible key: O = 0, LSE = −inf
    store_row(o, w.acc.data() + r * dv, dv, empty ? A(0) : A(p.dropout_scale) / w.l[r]);
    if (lse_data<A>(p)) {
      *ctx.lse_row<A>(m0 + r) = empty ? kNegInf<A> : w.m[r] * kLn2<A> + std::log(w.l[r]);
    }
  }
}

// Multiply-adds of the two matmuls of a forward pass, masks ignored (an upper bound).
double attention_work(const AttentionParams& p) {
  return static_cast<double>(p.batch * p.heads_q) * static_cast<double>(p.seqlen_q) *
         static_cast<double>(p.seqlen_k) * static_cast<double>(p.head_dim + p.head_dim_v);
}

// Varlen rows past the last sequence belong to none (params.h, total_q): the forward writes them
// as zeros with LSE −inf, the backward's dq, dk and dv as zeros.
template <class T>
void zero_rows(void* data, const OperandStrides& st, int64_t first, int64_t last, int64_t heads,
               int64_t dim) {
  for (int64_t r = first; r < last; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      std::fill_n(static_cast<T*>(data) + r * st.row + h * st.head, dim, from_acc<T>(0));
    }
  }
}

template <class T>
void write_varlen_tails(const AttentionParams& p, bool backward) {
  if (!p.is_varlen) return;
  const int64_t q_end = p.cu_seqlens_q[p.batch], k_end = p.cu_seqlens_k[p.batch];
  if (backward) {
    zero_rows<T>(p.dq, p.dq_stride, q_end, p.total_q, p.heads_q, p.head_dim);
    zero_rows<T>(p.dk, p.dk_stride, k_end, p.total_k, p.heads_kv, p.head_dim);
    zero_rows<T>(p.dv, p.dv_stride, k_end, p.total_k, p.heads_kv, p.head_dim_v);
    return;
  }
  zero_rows<T>(p.out, p.out_stride, q_end, p.total_q, p.heads_q, p.head_dim_v);
  if (Acc<T>* lse = lse_data<Acc<T>>(p)) {
    for (int64_t h = 0; h < p.heads_q; ++h) {
      std::fill(lse + h * p.lse_head_stride + q_end, lse + h * p.lse_head_stride + p.total_q,
                kNegInf<Acc<T>>);
    }
  }
}

template <class T>
void forward_typed(const AttentionParams& p) {
  write_varlen_tails<T>(p, /*backward=*/false);
  const int64_t m_blocks = ceil_div(p.seqlen_q, kBlockM);
  const int64_t tasks = p.batch * p.heads_q * m_blocks;
  const int workers =
      static_cast<int>(std::min<int64_t>(threads_for(p.num_threads, attention_work(p)), tasks));
  std::vector<ForwardScratch<Acc<T>>> scratch;
  for (int i = 0; i < std::max(workers, 1); ++i) scratch.emplace_back(p);
  parallel_for(tasks, workers, [&](int64_t t, int worker) {
    const int64_t m_block = t % m_blocks, bh = t / m_blocks;
    forward_block<T>(p, bh / p.heads_q, bh % p.heads_q, m_block, scratch[static_cast<size_t>(worker)]);
  });
}

// ---- Backward --------------------------------------------------------------------------------

template <class A>
struct BackwardScratch {
  std::vector<A> q, dout, lse, delta;  // query side: lse in natural log, D = rowsum(dO ∘ O)
  std::vector<A> k, kt, vt;            // key side
  std::vector<A> p, ds, dp, keep, dtanh;
  std::vector<A> acc_a, acc_b;  // dK and dV, or dQ
  explicit BackwardScratch(const AttentionParams& ap)
      : q(static_cast<size_t>(kBlockM * ap.head_dim)),
        dout(static_cast<size_t>(kBlockM * ap.head_dim_v)),
        lse(kBlockM),
        delta(kBlockM),
        k(static_cast<size_t>(kBlockN * ap.head_dim)),
        kt(static_cast<size_t>(ap.head_dim * kBlockN)),
        vt(static_cast<size_t>(ap.head_dim_v * kBlockN)),
        p(static_cast<size_t>(kBlockM * kBlockN)),
        ds(static_cast<size_t>(kBlockM * kBlockN)),
        dp(static_cast<size_t>(kBlockM * kBlockN)),
        keep(static_cast<size_t>(kBlockM * kBlockN)),
        dtanh(static_cast<size_t>(kBlockM * kBlockN)),
        acc_a(static_cast<size_t>(std::max(kBlockM, kBlockN) * ap.head_dim)),
        acc_b(static_cast<size_t>(kBlockN * ap.head_dim_v)) {}
};

// D for every query row, laid out like the LSE of a padded batch: index (b·heads_q + h)·seqlen_q + i.
template <class T>
std::vector<Acc<T>> compute_delta(const AttentionParams& p, int workers) {
  std::vector<Acc<T>> delta(static_cast<size_t>(p.batch * p.heads_q * p.seqlen_q), Acc<T>(0));
  parallel_for(p.batch * p.heads_q, workers, [&](int64_t bh, int) {
    const int64_t b = bh / p.heads_q, h = bh % p.heads_q;
    const SequenceInfo seq = sequence_info(p, b);
    const auto o = operand_rows<T>(p.out, p.out_stride, b, seq.q_start, h);
    const auto dout = operand_rows<T>(p.dout, p.dout_stride, b, seq.q_start, h);
    for (int64_t i = 0; i < seq.seqlen_q; ++i) {
      Acc<T> sum = Acc<T>(0);
      for (int64_t x = 0; x < p.head_dim_v; ++x) {
        sum += to_acc(o.row(i)[x]) * to_acc(dout.row(i)[x]);
      }
      delta[static_cast<size_t>(bh * p.seqlen_q + i)] = sum;
    }
  });
  return delta;
}

template <class T>
void load_query_side(const AttentionParams& p, const HeadContext& ctx,
                     const std::vector<Acc<T>>& delta, int64_t m0, int64_t mr,
                     BackwardScratch<Acc<T>>& w) {
  load_tile(operand_rows<T>(p.q, p.q_stride, ctx.b, ctx.seq.q_start, ctx.h), m0, mr, p.head_dim,
            w.q.data(), p.head_dim);
  load_tile(operand_rows<T>(p.dout, p.dout_stride, ctx.b, ctx.seq.q_start, ctx.h), m0, mr,
            p.head_dim_v, w.dout.data(), p.head_dim_v);
  for (int64_t r = 0; r < mr; ++r) {
    w.lse[r] = *ctx.lse_row<Acc<T>>(m0 + r);
    w.delta[r] = delta[static_cast<size_t>((ctx.b * p.heads_q + ctx.h) * p.seqlen_q + m0 + r)];
  }
}

template <class T>
void load_key_side(const AttentionParams& p, const HeadContext& ctx, int64_t n0, int64_t nc,
                   BackwardScratch<Acc<T>>& w, bool row_major_k) {
  const int64_t hk = ctx.h / p.group;
  const auto k = operand_rows<T>(p.k, p.k_stride, ctx.b, ctx.seq.k_start, hk);
  load_tile_transposed(k, n0, nc, p.head_dim, w.kt.data(), kBlockN);
  if (row_major_k) load_tile(k, n0, nc, p.head_dim, w.k.data(), p.head_dim);
  load_tile_transposed(operand_rows<T>(p.v, p.v_stride, ctx.b, ctx.seq.k_start, hk), n0, nc,
                       p.head_dim_v, w.vt.data(), kBlockN);
}

// Recomputes, for one tile: w.p = dropout(P) (what multiplied V in the forward) and
// w.ds = dS with respect to the scaled, softcapped scores' inputs (scale·QKᵀ), i.e. without the
// final factor `scale`.
template <class A>
void backward_tile(const HeadContext& ctx, int64_t m0, int64_t mr, int64_t n0, int64_t nc,
                   BackwardScratch<A>& w) {
  const AttentionParams& p = *ctx.p;
  const int64_t d = p.head_dim, dv = p.head_dim_v;
  const bool dropout = p.dropout_p > 0.0f;
  const bool softcap = p.softcap > 0.0f;

  std::fill(w.p.begin(), w.p.end(), A(0));
  matmul_acc(w.p.data(), kBlockN, w.q.data(), d, w.kt.data(), kBlockN, mr, d, nc);
  scores_tile<A>(ctx, w.p.data(), kBlockN, m0, mr, n0, nc, softcap ? w.dtanh.data() : nullptr);
  if (dropout) dropout_tile<A>(ctx, w.keep.data(), kBlockN, m0, mr, n0, nc);

  // dP_dropped = dO Vᵀ
  std::fill(w.dp.begin(), w.dp.end(), A(0));
  matmul_acc(w.dp.data(), kBlockN, w.dout.data(), dv, w.vt.data(), kBlockN, mr, dv, nc);

  for (int64_t r = 0; r < mr; ++r) {
    const A lse_log2 = w.lse[r] * kLog2e<A>;
    A* prow = w.p.data() + r * kBlockN;
    A* dsrow = w.ds.data() + r * kBlockN;
    const A* dprow = w.dp.data() + r * kBlockN;
    for (int64_t c = 0; c < nc; ++c) {
      // A masked element, or a row with no visible key (LSE = −inf), has P = 0.
      const A prob = prow[c] == kNegInf<A> ? A(0) : std::exp2(prow[c] - lse_log2);
      const A z = dropout ? w.keep[r * kBlockN + c] * A(p.dropout_scale) : A(1);
      A ds = prob * (dprow[c] * z - w.delta[r]);
      if (softcap) ds *= w.dtanh[r * kBlockN + c];
      prow[c] = prob * z;
      dsrow[c] = ds;
    }
  }
}

// dK, dV of one key block: sum over the query heads of its kv head and their query blocks.
template <class T>
void backward_dkdv_block(const AttentionParams& p, const std::vector<Acc<T>>& delta, int64_t b,
                         int64_t hk, int64_t n_block, BackwardScratch<Acc<T>>& w) {
  using A = Acc<T>;
  const SequenceInfo seq = sequence_info(p, b);
  const int64_t n0 = n_block * kBlockN;
  const int64_t d = p.head_dim, dv = p.head_dim_v;
  // Keys past seqused_k get zero gradients; the rows beyond seqlen_k of a varlen k don't exist.
  const int64_t k_rows = key_rows(p, b);
  if (n0 >= k_rows) return;
  const int64_t rows_here = std::min(kBlockN, k_rows - n0);
  const int64_t nc = std::max<int64_t>(0, std::min(kBlockN, seq.seqlen_k - n0));

  A* dk = w.acc_a.data();   // (rows_here, d)
  A* dvv = w.acc_b.data();  // (rows_here, dv)
  std::fill(dk, dk + kBlockN * d, A(0));
  std::fill(dvv, dvv + kBlockN * dv, A(0));

  if (nc > 0) {
    const int64_t m_blocks = ceil_div(seq.seqlen_q, kBlockM);
    for (int64_t h = hk * p.group; h < (hk + 1) * p.group; ++h) {
      const HeadContext ctx(p, b, h);
      bool key_side_loaded = false;
      for (int64_t mb = 0; mb < m_blocks; ++mb) {
        const int64_t m0 = mb * kBlockM, mr = std::min(kBlockM, seq.seqlen_q - m0);
        const BlockRange blocks = key_blocks(ctx, m0, mr);
        if (n_block < blocks.first || n_block >= blocks.end) continue;
        if (!key_side_loaded) {
          load_key_side<T>(p, ctx, n0, nc, w, /*row_major_k=*/false);
          key_side_loaded = true;
        }
        load_query_side<T>(p, ctx, delta, m0, mr, w);
        backward_tile(ctx, m0, mr, n0, nc, w);
        matmul_tn_acc(dvv, dv, w.p.data(), kBlockN, w.dout.data(), dv, nc, mr, dv);  // dV += Pᵀ dO
        matmul_tn_acc(dk, d, w.ds.data(), kBlockN, w.q.data(), d, nc, mr, d);        // dK += dSᵀ Q
      }
    }
  }
  for (int64_t r = 0; r < rows_here; ++r) {
    store_row(mutable_row<T>(p.dk, p.dk_stride, b, seq.k_start, hk, n0 + r), dk + r * d, d,
              scale_of<A>(p));
    store_row(mutable_row<T>(p.dv, p.dv_stride, b, seq.k_start, hk, n0 + r), dvv + r * dv, dv,
              A(1));
  }
}

// dQ of one query block: sum over the key blocks it sees.
template <class T>
void backward_dq_block(const AttentionParams& p, const std::vector<Acc<T>>& delta, int64_t b,
                       int64_t h, int64_t m_block, BackwardScratch<Acc<T>>& w) {
  using A = Acc<T>;
  const HeadContext ctx(p, b, h);
  const int64_t m0 = m_block * kBlockM;
  if (m0 >= ctx.seq.seqlen_q) return;
  const int64_t mr = std::min(kBlockM, ctx.seq.seqlen_q - m0), d = p.head_dim;
  A* dq = w.acc_a.data();  // (mr, d)
  std::fill(dq, dq + kBlockM * d, A(0));

  load_query_side<T>(p, ctx, delta, m0, mr, w);
  const BlockRange blocks = key_blocks(ctx, m0, mr);
  for (int64_t nb = blocks.first; nb < blocks.end; ++nb) {
    const int64_t n0 = nb * kBlockN, nc = std::min(kBlockN, ctx.seq.seqlen_k - n0);
    load_key_side<T>(p, ctx, n0, nc, w, /*row_major_k=*/true);
    backward_tile(ctx, m0, mr, n0, nc, w);
    matmul_acc(dq, d, w.ds.data(), kBlockN, w.k.data(), d, mr, nc, d);  // dQ += dS K
  }
  for (int64_t r = 0; r < mr; ++r) {
    store_row(mutable_row<T>(p.dq, p.dq_stride, b, ctx.seq.q_start, h, m0 + r), dq + r * d, d,
              scale_of<A>(p));
  }
}

template <class T>
void backward_typed(const AttentionParams& p) {
  write_varlen_tails<T>(p, /*backward=*/true);
  const int threads = threads_for(p.num_threads, 2 * attention_work(p));
  const std::vector<Acc<T>> delta = compute_delta<T>(p, threads);

  // The longest packed k sequence bounds the key blocks of a varlen batch.
  int64_t k_rows_max = p.seqlen_k;
  for (int64_t b = 0; p.is_varlen && b < p.batch; ++b) {
    k_rows_max = std::max<int64_t>(k_rows_max, p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b]);
  }
  const int64_t n_blocks = ceil_div(k_rows_max, kBlockN);
  const int64_t m_blocks = ceil_div(p.seqlen_q, kBlockM);
  const int64_t kv_tasks = p.batch * p.heads_kv * n_blocks;
  const int64_t q_tasks = p.batch * p.heads_q * m_blocks;
  const int workers = static_cast<int>(std::min<int64_t>(threads, std::max(kv_tasks, q_tasks)));
  std::vector<BackwardScratch<Acc<T>>> scratch;
  for (int i = 0; i < std::max(workers, 1); ++i) scratch.emplace_back(p);

  parallel_for(kv_tasks, workers, [&](int64_t t, int worker) {
    const int64_t nb = t % n_blocks, bh = t / n_blocks;
    backward_dkdv_block<T>(p, delta, bh / p.heads_kv, bh % p.heads_kv, nb,
                           scratch[static_cast<size_t>(worker)]);
  });
  parallel_for(q_tasks, workers, [&](int64_t t, int worker) {
    const int64_t mb = t % m_blocks, bh = t / m_blocks;
    backward_dq_block<T>(p, delta, bh / p.heads_q, bh % p.heads_q, mb,
                         scratch[static_cast<size_t>(worker)]);
  });
}

}  // namespace

void forward(const AttentionParams& p) {
  switch (p.dtype) {
    case DType::f32: return forward_typed<float>(p);
    case DType::f16: return forward_typed<half_t>(p);
    case DType::bf16: return forward_typed<bfloat16_t>(p);
    case DType::f64: return forward_typed<double>(p);
    case DType::i32: break;
  }
  throw Error(std::string("flashattn::forward (cpu): argument 'q': no CPU implementation for dtype ") +
              dtype_name(p.dtype));
}

namespace {

template <class T>
void combine_typed(const CombineParams& p) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t rows = p.batch * p.seqlen;
  const int workers = threads_for(p.num_threads, double(rows * p.heads * p.splits * p.head_dim));
  // Per worker: the row's output, accumulated split by split (one weight a split, not one an
  // element).
  std::vector<std::vector<float>> scratch(static_cast<size_t>(workers),
                                          std::vector<float>(static_cast<size_t>(p.head_dim)));
  parallel_for(rows * p.heads, workers, [&](int64_t item, int worker) {
    const int64_t r = item / p.heads, h = item % p.heads, b = r / p.seqlen, i = r % p.seqlen;
    auto at = [&](const CombineStrides& st, int64_t s) {
      return s * st.split + b * st.batch + i * st.row + h * st.head;
    };
    // A NaN partial LSE makes the row's LSE and output NaN (std::max would pass it over).
    float m = neg_inf;
    for (int64_t s = 0; s < p.splits; ++s) {
      const float x = p.lse_partial[at(p.lp, s)];
      m = std::isnan(x) || std::isnan(m) ? std::numeric_limits<float>::quiet_NaN() : std::max(m, x);
    }
    float sum = 0.0f;
    if (m != neg_inf) {
      for (int64_t s = 0; s < p.splits; ++s) sum += std::exp(p.lse_partial[at(p.lp, s)] - m);
    }
    const float lse = sum == 0.0f ? neg_inf : m + std::log(sum);
    std::vector<float>& acc = scratch[static_cast<size_t>(worker)];
    std::fill(acc.begin(), acc.end(), 0.0f);
    if (lse != neg_inf) {
      for (int64_t s = 0; s < p.splits; ++s) {
        const float w = std::exp(p.lse_partial[at(p.lp, s)] - lse);
        const float* x = p.out_partial + at(p.op, s);
        for (int64_t c = 0; c < p.head_dim; ++c) acc[static_cast<size_t>(c)] += w * x[c];
      }
    }
    T* out = static_cast<T*>(p.out) + at(p.o, 0);
    for (int64_t c = 0; c < p.head_dim; ++c) out[c] = from_acc<T>(acc[static_cast<size_t>(c)]);
    if (p.lse != nullptr) p.lse[at(p.l, 0)] = lse;
  });
}

}  // namespace

void combine(const CombineParams& p) {
  switch (p.dtype) {
    case DType::f32: return combine_typed<float>(p);
    case DType::f16: return combine_typed<half_t>(p);
    case DType::bf16: return combine_typed<bfloat16_t>(p);
    case DType::f64:
    case DType::i32: break;
  }
  throw Error(std::string("flashattn::combine (cpu): argument 'out': no CPU implementation for dtype ") +
              dtype_name(p.dtype));
}

void backward(const AttentionParams& p) {
  switch (p.dtype) {
    case DType::f32: return backward_typed<float>(p);
    case DType::f16: return backward_typed<half_t>(p);
    case DType::bf16: return backward_typed<bfloat16_t>(p);
    case DType::f64: return backward_typed<double>(p);
    case DType::i32: break;
  }
  throw Error(std::string("flashattn::backward (cpu): argument 'q': no CPU implementation for dtype ") +
              dtype_name(p.dtype));
}

}  // namespace flashattn::detail::cpu
