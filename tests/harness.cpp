#include "harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace fa_test {

// ---- Names ------------------------------------------------------------------------------------

namespace {

std::string num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", x);
  std::string s;
  for (char ch : std::string(buf)) {
    if (ch == '.') s += 'p';
    else if (ch == '-') s += 'm';
    else if (ch == '+') continue;
    else s += ch;
  }
  return s;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "x" : "") + std::to_string(v[i]);
  return s;
}

const char* layout_tag(Layout l) {
  switch (l) {
    case Layout::contiguous: return "";
    case Layout::gappy: return "_gappy";
    case Layout::packed_qkv: return "_packedqkv";
    case Layout::head_major: return "_headmajor";
  }
  return "";
}

}  // namespace

std::string Case::name() const {
  std::string s = label.empty() ? "" : label + "_";
  s += dtype_tag(dtype);
  if (varlen()) {
    s += "_varlen_q" + join(lens_q) + "_k" + join(lens_k);
  } else {
    s += "_b" + std::to_string(batch) + "_q" + std::to_string(seqlen_q) + "_k" +
         std::to_string(seqlen_k);
  }
  s += "_h" + std::to_string(heads_q) + "x" + std::to_string(heads_kv) + "_d" +
       std::to_string(head_dim);
  if (head_dim_v && head_dim_v != head_dim) s += "_dv" + std::to_string(head_dim_v);
  if (causal) s += "_causal";
  if (window_left != -1) s += "_wl" + std::to_string(window_left);
  if (window_right != -1) s += "_wr" + std::to_string(window_right);
  if (softcap != 0.0f) s += "_cap" + num(softcap);
  if (scale) s += "_scale" + num(*scale);
  if (alibi == Alibi::heads) s += "_alibiH";
  if (alibi == Alibi::batch_heads) s += "_alibiBH";
  if (dropout_p != 0.0f) s += "_drop" + num(dropout_p);
  if (!seqused_k.empty()) s += "_used";
  if (qk_scale != 1.0) s += "_qk" + num(qk_scale);
  s += layout_tag(layout);
  if (pad) s += "_pad" + std::to_string(pad);
  if (num_threads) s += "_thr" + std::to_string(num_threads);
  if (num_splits) s += "_split" + std::to_string(num_splits);
  if (page_size) s += "_page" + std::to_string(page_size);
  if (deterministic) s += "_det";
  return s;
}

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name(); }

Precision precision_of(DType d) {
  switch (d) {
    case DType::f16: return Precision::f16;
    case DType::bf16: return Precision::bf16;
    case DType::f64: return Precision::f64;
    default: return Precision::f32;
  }
}

// ---- Problem ----------------------------------------------------------------------------------

namespace {

// (outer, rows, heads, dim) memory order (outer, heads, rows, dim), viewed as (…, rows, heads, dim).
Buf head_major(DType dt, const std::vector<int64_t>& shape) {
  if (shape.size() == 4) {
    const int64_t B = shape[0], S = shape[1], H = shape[2], D = shape[3];
    return Buf::strided(dt, shape, {H * S * D, D, S * D, 1}, B * H * S * D);
  }
  const int64_t T = shape[0], H = shape[1], D = shape[2];
  return Buf::strided(dt, shape, {D, T * D, 1}, T * H * D);
}

Buf make_layout(DType dt, const std::vector<int64_t>& shape, Layout layout, int64_t pad) {
  switch (layout) {
    case Layout::contiguous: return Buf::contiguous(dt, shape);
    case Layout::head_major: return head_major(dt, shape);
    case Layout::gappy:
    case Layout::packed_qkv: return Buf::gappy(dt, shape, pad ? pad : 2);
  }
  return Buf::contiguous(dt, shape);
}

std::vector<int64_t> with_last(std::vector<int64_t> shape, int64_t heads, int64_t dim) {
  shape[shape.size() - 2] = heads;
  shape[shape.size() - 1] = dim;
  return shape;
}

}  // namespace

Problem::Problem(const Case& cs) : c(cs) {
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 12345);
  const int64_t B = c.nbatch(), H = c.heads_q, HK = c.heads_kv, D = c.head_dim, DV = c.dv();
  std::vector<int64_t> q_rows, k_rows;  // leading dims
  if (c.varlen()) {
    cu_q.assign(1, 0);
    cu_k.assign(1, 0);
    for (size_t b = 0; b < c.lens_q.size(); ++b) {
      cu_q.push_back(static_cast<int32_t>(cu_q.back() + c.lens_q[b]));
      cu_k.push_back(static_cast<int32_t>(cu_k.back() + c.lens_k[b]));
    }
    total_q = cu_q.back() + c.extra_q_rows;
    total_k = cu_k.back() + c.extra_k_rows;
    q_rows = {total_q};
    k_rows = {total_k};
  } else {
    total_q = B * c.seqlen_q;
    total_k = B * c.seqlen_k;
    q_rows = {B, c.seqlen_q};
    k_rows = {B, c.seqlen_k};
  }
  auto shape_of = [](std::vector<int64_t> rows, int64_t heads, int64_t dim) {
    rows.push_back(heads);
    rows.push_back(dim);
    return rows;
  };
  const auto q_shape = shape_of(q_rows, H, D), k_shape = shape_of(k_rows, HK, D),
             v_shape = shape_of(k_rows, HK, DV);

  if (c.layout == Layout::packed_qkv) {
    if (q_rows != k_rows || D != DV) throw std::invalid_argument("packed_qkv needs sq==sk, d==dv");
    const int64_t HT = H + 2 * HK;
    packed = Buf::contiguous(c.dtype, shape_of(q_rows, HT, D));
    std::vector<int64_t> st = packed.strides();
    st.pop_back();
    st.pop_back();
    st.push_back(D);
    st.push_back(1);
    q = packed.view(q_shape, st, 0);
    k = packed.view(k_shape, st, H * D);
    v = packed.view(v_shape, st, (H + HK) * D);
  } else {
    q = make_layout(c.dtype, q_shape, c.layout, c.pad);
    k = make_layout(c.dtype, k_shape, c.layout, c.pad);
    v = make_layout(c.dtype, v_shape, c.layout, c.pad);
  }
  q.fill_normal(rng, c.qk_scale);
  k.fill_normal(rng, c.qk_scale);
  v.fill_normal(rng, 1.0);

  used = c.seqused_k;
  if (!c.paged() && !c.varlen() && !used.empty()) {
    // The keys past seqused_k are memory the call must not use (a KV cache's unwritten rows):
    // NaN there fails any kernel that lets them into a score or into P V.
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = used[static_cast<size_t>(b)]; j < c.seqlen_k; ++j) {
        const int64_t row = b * c.seqlen_k + j;
        for (int64_t e = 0; e < HK * D; ++e) k.set(row * HK * D + e, std::nan(""));
        for (int64_t e = 0; e < HK * DV; ++e) v.set(row * HK * DV + e, std::nan(""));
      }
    }
  }
  if (c.paged()) {
    if (c.varlen() || c.layout != Layout::contiguous) {
      throw std::invalid_argument("paged cases: padded batches, contiguous layout");
    }
    // Each sequence's pages, drawn without replacement from a shuffled pool with one page to
    // spare; the forward's seqlen_k is then the table's capacity, so seqused_k (the case's, or
    // seqlen_k) says how many rows each sequence uses.
    const int64_t ps = c.page_size, per_seq = (c.seqlen_k + ps - 1) / ps;
    const int64_t num_pages = B * per_seq + 1;
    std::vector<int32_t> pool(static_cast<size_t>(num_pages));
    for (int64_t i = 0; i < num_pages; ++i) pool[i] = static_cast<int32_t>(i);
    std::shuffle(pool.begin(), pool.end(), rng);
    table.assign(pool.begin(), pool.begin() + B * per_seq);
    k_pages = Buf::contiguous(c.dtype, {num_pages, ps, HK, D});
    v_pages = Buf::contiguous(c.dtype, {num_pages, ps, HK, DV});
    for (Buf* pages : {&k_pages, &v_pages}) {
      for (int64_t i = 0; i < pages->numel(); ++i) pages->set(i, std::nan(""));
    }
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < c.seqlen_k; ++j) {
        const int64_t page = table[b * per_seq + j / ps], row = page * ps + j % ps;
        const int64_t src = b * c.seqlen_k + j;
        for (int64_t e = 0; e < HK * D; ++e) k_pages.set(row * HK * D + e, k.get(src * HK * D + e));
        for (int64_t e = 0; e < HK * DV; ++e) {
          v_pages.set(row * HK * DV + e, v.get(src * HK * DV + e));
        }
      }
    }
    if (used.empty()) used.assign(static_cast<size_t>(B), static_cast<int32_t>(c.seqlen_k));
    opts.block_table = flashattn::contiguous_view(table.data(), DType::i32, {B, per_seq});
  }

  if (c.alibi != Alibi::none) {
    // The standard ALiBi geometric slopes 2^(−8(h+1)/H), varied per sequence for (batch, heads).
    const int64_t rows = c.alibi == Alibi::heads ? 1 : B;
    for (int64_t b = 0; b < rows; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        alibi.push_back(static_cast<float>(std::exp2(-8.0 * (h + 1) / H) * (1.0 + 0.37 * b)));
      }
    }
  }

  opts.softmax_scale = c.scale;
  opts.causal = c.causal;
  opts.window_left = c.window_left;
  opts.window_right = c.window_right;
  opts.softcap = c.softcap;
  if (c.alibi == Alibi::heads) {
    opts.alibi_slopes = flashattn::contiguous_view(alibi.data(), DType::f32, {H});
  } else if (c.alibi == Alibi::batch_heads) {
    opts.alibi_slopes = flashattn::contiguous_view(alibi.data(), DType::f32, {B, H});
  }
  opts.dropout_p = c.dropout_p;
  opts.dropout_seed = c.dropout_seed;
  opts.dropout_offset = c.dropout_offset;
  if (c.varlen()) {
    opts.cu_seqlens_q = flashattn::contiguous_view(cu_q.data(), DType::i32, {B + 1});
    opts.cu_seqlens_k = flashattn::contiguous_view(cu_k.data(), DType::i32, {B + 1});
    opts.max_seqlen_q = c.max_seqlen_q;
    opts.max_seqlen_k = c.max_seqlen_k;
  }
  if (!used.empty()) opts.seqused_k = flashattn::contiguous_view(used.data(), DType::i32, {B});
  opts.deterministic = c.deterministic;
  opts.num_threads = c.num_threads;
  opts.num_splits = c.num_splits;
}

Buf Problem::make_out() const {
  return make_layout(c.dtype, with_last(q.shape(), c.heads_q, c.dv()),
                     c.layout == Layout::packed_qkv ? Layout::gappy : c.layout, c.pad);
}

Buf Problem::make_lse() const {
  const std::vector<int64_t> shape = c.varlen()
                                         ? std::vector<int64_t>{c.heads_q, total_q}
                                         : std::vector<int64_t>{c.nbatch(), c.heads_q, c.seqlen_q};
  const DType dt = lse_dtype(c.dtype);
  if (c.layout == Layout::contiguous || c.layout == Layout::head_major) {
    return Buf::contiguous(dt, shape);
  }
  return Buf::gappy(dt, shape, 3);
}

Buf Problem::make_dout(std::mt19937_64& rng) const {
  Buf d = make_out();
  d.fill_normal(rng, 1.0);
  return d;
}

BackwardRun Problem::make_grads() const {
  BackwardRun g;
  if (c.layout == Layout::packed_qkv) {
    // dq, dk, dv as slices of one packed buffer, like the inputs.
    g.packed = Buf::contiguous(c.dtype, packed.shape());
    g.dq = g.packed.view(q.shape(), q.strides(), q.offset());
    g.dk = g.packed.view(k.shape(), k.strides(), k.offset());
    g.dv = g.packed.view(v.shape(), v.strides(), v.offset());
    return g;
  }
  g.dq = make_layout(c.dtype, q.shape(), c.layout, c.pad);
  g.dk = make_layout(c.dtype, k.shape(), c.layout, c.pad);
  g.dv = make_layout(c.dtype, v.shape(), c.layout, c.pad);
  return g;
}

RefSpec Problem::spec() const {
  RefSpec s;
  const int64_t B = c.nbatch();
  s.batch = B;
  s.heads_q = c.heads_q;
  s.heads_kv = c.heads_kv;
  s.head_dim = c.head_dim;
  s.head_dim_v = c.dv();
  for (int64_t b = 0; b <= B; ++b) {
    s.cu_q.push_back(c.varlen() ? cu_q[b] : b * c.seqlen_q);
    s.cu_k.push_back(c.varlen() ? cu_k[b] : b * c.seqlen_k);
  }
  for (int32_t u : used) s.used_k.push_back(u);
  s.scale = c.scale ? static_cast<double>(*c.scale) : 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  s.softcap = c.softcap;
  s.causal = c.causal;
  s.window_left = c.window_left;
  s.window_right = c.window_right;
  if (c.alibi != Alibi::none) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < c.heads_q; ++h) {
        s.alibi.push_back(alibi[(c.alibi == Alibi::heads ? 0 : b) * c.heads_q + h]);
      }
    }
  }
  if (c.dropout_p > 0.0f) {
    s.dropout_p = c.dropout_p;
    // docs/dropout.md: kept values are multiplied by 1/(1 − p) computed in fp32.
    s.dropout_scale = static_cast<double>(1.0f / (1.0f - c.dropout_p));
    const uint64_t seed = c.dropout_seed, offset = c.dropout_offset;
    const float p = c.dropout_p;
    const int64_t H = c.heads_q;
    s.keep = [=](int64_t b, int64_t h, int64_t i, int64_t j) {
      return flashattn::dropout_keep(seed, offset, p, b, h, H, i, j);
    };
  }
  return s;
}

std::vector<double> Problem::rows_values(const Buf& b, int64_t rows) const {
  std::vector<double> v = b.values();
  const int64_t per_row = b.shape()[b.rank() - 1] * b.shape()[b.rank() - 2];
  v.resize(static_cast<size_t>(rows * per_row));
  return v;
}

std::vector<double> Problem::q_values() const { return rows_values(q, c.varlen() ? cu_q.back() : total_q); }
std::vector<double> Problem::k_values() const { return rows_values(k, c.varlen() ? cu_k.back() : total_k); }
std::vector<double> Problem::v_values() const { return rows_values(v, c.varlen() ? cu_k.back() : total_k); }

std::vector<double> Problem::lse_values(const Buf& lse) const {
  const int64_t H = c.heads_q;
  const int64_t rows = c.varlen() ? cu_q.back() : total_q;
  std::vector<double> out(static_cast<size_t>(rows * H));
  const std::vector<double> all = lse.values();
  if (c.varlen()) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t r = 0; r < rows; ++r) out[r * H + h] = all[h * total_q + r];
    }
  } else {
    const int64_t S = c.seqlen_q;
    for (int64_t b = 0; b < c.nbatch(); ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < S; ++i) out[(b * S + i) * H + h] = all[(b * H + h) * S + i];
      }
    }
  }
  return out;
}

// ---- Library calls ----------------------------------------------------------------------------

namespace {

struct InputSnapshot {
  std::vector<std::pair<const Buf*, std::vector<unsigned char>>> bufs;
  void add(const Buf& b) { bufs.emplace_back(&b, b.snapshot()); }
  void expect_unchanged(const char* when) const {
    for (const auto& [b, snap] : bufs) {
      EXPECT_TRUE(b->same_bytes(snap)) << when << ": an input buffer was modified";
    }
  }
};

}  // namespace

ForwardRun run_forward(Problem& p) {
  ForwardRun f{p.make_out(), p.make_lse()};
  InputSnapshot snap;
  snap.add(p.q);
  snap.add(p.k_in());
  snap.add(p.v_in());
  const auto cu_q = p.cu_q, cu_k = p.cu_k, used = p.used;
  const auto alibi = p.alibi;
  flashattn::forward(p.q.tensor(), p.k_in().tensor(), p.v_in().tensor(), f.out.tensor(),
                     f.lse.tensor(), p.opts);
  snap.expect_unchanged("forward");
  EXPECT_TRUE(cu_q == p.cu_q && cu_k == p.cu_k && used == p.used && alibi == p.alibi)
      << "forward modified cu_seqlens/seqused_k/alibi_slopes";
  EXPECT_EQ(f.out.gaps_written(), 0) << "forward wrote outside the view of out";
  EXPECT_EQ(f.lse.gaps_written(), 0) << "forward wrote outside the view of lse";
  return f;
}

BackwardRun run_backward(Problem& p, const ForwardRun& f, const Buf& dout) {
  BackwardRun g = p.make_grads();
  InputSnapshot snap;
  for (const Buf* b : std::initializer_list<const Buf*>{&p.q, &p.k, &p.v, &f.out, &f.lse, &dout}) {
    snap.add(*b);
  }
  flashattn::backward(dout.tensor(), p.q.tensor(), p.k.tensor(), p.v.tensor(), f.out.tensor(),
                      f.lse.tensor(), g.dq.tensor(), g.dk.tensor(), g.dv.tensor(), p.opts);
  snap.expect_unchanged("backward");
  if (p.c.layout != Layout::packed_qkv) {
    EXPECT_EQ(g.dq.gaps_written(), 0) << "backward wrote outside the view of dq";
    EXPECT_EQ(g.dk.gaps_written(), 0) << "backward wrote outside the view of dk";
    EXPECT_EQ(g.dv.gaps_written(), 0) << "backward wrote outside the view of dv";
  }
  return g;
}

// ---- Tolerance --------------------------------------------------------------------------------

double rule_eps(DType dtype, const std::vector<double>& mag) {
  double m = 1.0;
  for (double x : mag) {
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  }
  // eps only matters where the plain computation happens to be exact, e.g. a single visible key
  // (P = 1, O = v; in the backward dP − D cancels to exactly 0 in the naive order of operations,
  // but not when D is summed as rowsum(dO ∘ O) with FMAs). Its scale m is the largest size of
  // the summands of an element (RefForward::out_mag, RefGrads::*_mag; for LSE its value), ≥ 1:
  // rounding errors are relative to the summands, not to a result that cancels.
  //  * fp32: 16 unit roundoffs (2^-20 ≈ 9.5e-7) of m: a few roundings in a different order.
  //  * fp16/bf16: half a unit roundoff of m (2^-12 for fp16, 2^-9 for bf16): less than the one
  //    final rounding of the output to the dtype, which both computations make.
  //  * fp64: here "plain" is the float64 reference itself, so eps is the whole bound: 2^-40·m
  //    (≈ 9e-13, 8192 unit roundoffs), room for a few hundred roundings of the blocked order and
  //    exp2 against the naive sums and exp, and 5 orders of magnitude below one fp32 rounding.
  // Each is far below the error of a wrong mask, scale or probability.
  const double u = unit_roundoff(dtype);
  if (dtype == DType::f64) return std::ldexp(1.0, -40) * m;
  return (dtype == DType::f32 ? 16.0 * u : 0.5 * u) * m;
}

::testing::AssertionResult within_rule(const std::string& what, const std::vector<double>& ours,
                                       const std::vector<double>& ref,
                                       const std::vector<double>& plain, double factor,
                                       double eps) {
  if (ours.size() != ref.size() || plain.size() != ref.size()) {
    return ::testing::AssertionFailure() << what << ": size mismatch " << ours.size() << " / "
                                         << ref.size() << " / " << plain.size();
  }
  double err = 0, perr = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], o = ours[i], pl = plain[i];
    if (std::isnan(r)) {
      return ::testing::AssertionFailure() << what << ": the reference is NaN at " << i;
    }
    if (std::isinf(r)) {
      if (o != r) {
        return ::testing::AssertionFailure()
               << what << "[" << i << "] = " << o << ", expected " << r << " exactly";
      }
      continue;
    }
    if (!std::isfinite(o)) {
      return ::testing::AssertionFailure()
             << what << "[" << i << "] = " << o << " is not finite (reference " << r << ")";
    }
    if (!std::isfinite(pl)) {
      return ::testing::AssertionFailure()
             << what << ": the plain computation is not finite at " << i
             << " (the bound would be vacuous; the test case is wrong)";
    }
    const double e = std::fabs(o - r);
    if (e > err) {
      err = e;
      worst = i;
    }
    perr = std::max(perr, std::fabs(pl - r));
  }
  const double bound = factor * perr + eps;
  if (std::getenv("FA_TEST_REPORT")) {  // margins of the rule, for tuning and reporting
    std::fprintf(stderr, "[rule] %-4s err %.3e plain %.3e eps %.3e ratio %.3f\n", what.c_str(), err,
                 perr, eps, bound > 0 ? err / bound : 0.0);
  }
  if (err <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": max|ours − ref| = " << err << " at [" << worst << "] (ours " << ours[worst]
         << ", ref " << ref[worst] << ") exceeds " << factor << "·max|plain − ref| + eps = "
         << factor << "·" << perr << " + " << eps << " = " << bound;
}

::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& a,
                                     const std::vector<double>& b, double tol) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << what << ": size " << a.size() << " vs " << b.size();
  }
  double err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
      return ::testing::AssertionFailure() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
    }
    const double e = std::fabs(a[i] - b[i]);
    if (e > err) {
      err = e;
      worst = i;
    }
  }
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max diff " << err << " at [" << worst << "] ("
                                       << a[worst] << " vs " << b[worst] << ") > " << tol;
}

// ---- Whole checks -----------------------------------------------------------------------------

namespace {

// Rows (r, h) flagged in `row_empty` (no visible key, or for dk/dv: a key no query sees) must be
// exactly zero (dim values each).
::testing::AssertionResult empty_rows_zero(const std::string& what, const std::vector<double>& x,
                                           const std::vector<char>& row_empty, int64_t dim) {
  for (size_t rh = 0; rh < row_empty.size(); ++rh) {
    if (!row_empty[rh]) continue;
    for (int64_t c = 0; c < dim; ++c) {
      const double v = x[rh * dim + c];
      if (v != 0.0) {
        return ::testing::AssertionFailure()
               << what << ": (row·heads + head) " << rh << " is fully masked but element " << c
               << " is " << v << " (expected exactly 0)";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Varlen rows after the last sequence (rows `first` on of a (rows, heads, dim) output) belong to
// no sequence: every element must be exactly `expected` (0), not what the buffer held before.
::testing::AssertionResult tail_rows_are(const std::string& what, const Buf& b, int64_t first,
                                         double expected) {
  const std::vector<double> v = b.values();
  const int64_t per_row = b.shape()[b.rank() - 1] * b.shape()[b.rank() - 2];
  for (size_t i = static_cast<size_t>(first * per_row); i < v.size(); ++i) {
    if (!(v[i] == expected)) {
      return ::testing::AssertionFailure()
             << what << ": row " << static_cast<int64_t>(i) / per_row
             << ", after the last sequence (from row " << first << "), holds " << v[i]
             << " (expected exactly " << expected << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

ForwardRun check_forward(const Case& c, ForwardRunner run) {
  Problem p(c);
  ForwardRun f = run(p);
  const RefSpec s = p.spec();
  const auto qv = p.q_values(), kv = p.k_values(), vv = p.v_values();
  const RefForward ref = reference_forward(s, qv, kv, vv);
  const RefForward plain = plain_forward(s, precision_of(c.dtype), qv, kv, vv);
  const std::vector<double> out = p.rows_values(f.out, s.total_q());
  const std::vector<double> lse = p.lse_values(f.lse);
  EXPECT_TRUE(within_rule("out", out, ref.out, plain.out, 2.0, rule_eps(c.dtype, ref.out_mag)));
  EXPECT_TRUE(
      within_rule("lse", lse, ref.lse, plain.lse, 2.0, rule_eps(lse_dtype(c.dtype), ref.lse)));
  EXPECT_TRUE(empty_rows_zero("out", out, ref.row_empty, c.dv()));
  if (c.varlen()) {
    EXPECT_TRUE(tail_rows_are("out", f.out, p.cu_q.back(), 0.0));
    const std::vector<double> all_lse = f.lse.values();  // (heads_q, total_q)
    for (int64_t h = 0; h < c.heads_q; ++h) {
      for (int64_t r = p.cu_q.back(); r < p.total_q; ++r) {
        EXPECT_EQ(all_lse[static_cast<size_t>(h * p.total_q + r)], -INFINITY)
            << "lse of head " << h << ", row " << r << ", after the last sequence";
      }
    }
  }
  return f;
}

void check_backward(const Case& c, BackwardRunner run, ForwardRunner forward) {
  Problem p(c);
  const ForwardRun f = forward(p);
  std::mt19937_64 rng(c.seed * 31 + 7);
  const Buf dout = p.make_dout(rng);
  const BackwardRun g = run(p, f, dout);
  const RefSpec s = p.spec();
  const auto qv = p.q_values(), kv = p.k_values(), vv = p.v_values();
  const auto dov = p.rows_values(dout, s.total_q());
  const RefGrads ref = reference_backward(s, qv, kv, vv, dov);
  const RefGrads plain = plain_backward(s, precision_of(c.dtype), qv, kv, vv, dov);
  const auto dq = p.rows_values(g.dq, s.total_q());
  const auto dk = p.rows_values(g.dk, s.total_k());
  const auto dv = p.rows_values(g.dv, s.total_k());
  EXPECT_TRUE(within_rule("dq", dq, ref.dq, plain.dq, kGradFactor, rule_eps(c.dtype, ref.dq_mag)));
  EXPECT_TRUE(within_rule("dk", dk, ref.dk, plain.dk, kGradFactor, rule_eps(c.dtype, ref.dk_mag)));
  EXPECT_TRUE(within_rule("dv", dv, ref.dv, plain.dv, kGradFactor, rule_eps(c.dtype, ref.dv_mag)));
  // Rows that see no key: their dq is exactly 0. Keys that no row sees (beyond seqused_k, or
  // outside every row's window): their dk and dv are exactly 0.
  EXPECT_TRUE(empty_rows_zero("dq", dq, ref.row_empty, c.head_dim));
  std::vector<char> key_unseen(static_cast<size_t>(s.total_k() * c.heads_kv), 0);
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t sq = s.cu_q[b + 1] - s.cu_q[b], len = s.cu_k[b + 1] - s.cu_k[b];
    const int64_t sk = s.used_k.empty() ? len : s.used_k[b];
    for (int64_t j = 0; j < len; ++j) {
      bool seen = false;
      for (int64_t i = 0; i < sq && !seen && j < sk; ++i) seen = ref_visible(s, i, j, sq, sk);
      for (int64_t h = 0; h < c.heads_kv; ++h) key_unseen[(s.cu_k[b] + j) * c.heads_kv + h] = !seen;
    }
  }
  EXPECT_TRUE(empty_rows_zero("dk", dk, key_unseen, c.head_dim));
  EXPECT_TRUE(empty_rows_zero("dv", dv, key_unseen, c.dv()));
  if (c.varlen()) {
    EXPECT_TRUE(tail_rows_are("dq", g.dq, p.cu_q.back(), 0.0));
    EXPECT_TRUE(tail_rows_are("dk", g.dk, p.cu_k.back(), 0.0));
    EXPECT_TRUE(tail_rows_are("dv", g.dv, p.cu_k.back(), 0.0));
  }
}

}  // namespace fa_test
