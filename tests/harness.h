// The test harness: one attention case (shapes, dtype, options, layout), the inputs it builds,
// the library calls with poisoned outputs, the reference/plain computations, and the tolerance
// rule of DESIGN.md §4.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "buffer.h"
#include "flashattn/flashattn.h"
#include "reference.h"

namespace fa_test {

// How tensors are laid out in memory.
enum class Layout {
  contiguous,  // row-major
  gappy,       // every dimension padded: gaps (holding NaN) before/between/after elements
  packed_qkv,  // q, k, v are slices of one (…, heads_q + 2·heads_kv, head_dim) buffer; outputs gappy
  head_major,  // memory (batch, heads, seqlen, dim) viewed as (batch, seqlen, heads, dim)
};

enum class Alibi { none, heads, batch_heads };

struct Case {
  std::string label;  // optional prefix of the test name
  DType dtype = DType::f32;
  int64_t batch = 1;
  int64_t seqlen_q = 1;
  int64_t seqlen_k = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 32;
  int64_t head_dim_v = 0;  // 0 = head_dim
  // Varlen when non-empty: per-sequence lengths (batch = lens_q.size()).
  std::vector<int64_t> lens_q, lens_k;
  int64_t extra_q_rows = 0;  // varlen: packed q has this many rows after the last sequence
  int64_t extra_k_rows = 0;
  std::vector<int32_t> seqused_k;  // empty = none
  int64_t max_seqlen_q = 0, max_seqlen_k = 0;  // varlen bounds to pass (0 = derive)
  bool causal = false;
  int window_left = -1, window_right = -1;
  float softcap = 0.0f;
  std::optional<float> scale;
  Alibi alibi = Alibi::none;
  float dropout_p = 0.0f;
  uint64_t dropout_seed = 0x1234567890abcdefull, dropout_offset = 7;
  double qk_scale = 1.0;  // q and k are normal(0,1)·qk_scale (large logits)
  Layout layout = Layout::contiguous;
  // gappy (and packed_qkv's out/dout): unused elements per gap; 0 = 2 (odd strides). 8 keeps the
  // rows 16-byte aligned for the CUDA kernels (fp16/bf16, head_dim a multiple of 8).
  int64_t pad = 0;
  int num_threads = 0;
  int num_splits = 0;  // Options::num_splits (the CPU ignores it)
  // > 0: the forward reads k and v as a paged cache of pages of this many rows, in a shuffled
  // order, through Options::block_table (padded batches, forward only); the reference reads the
  // contiguous k and v. Rows of the pages that no key fills are NaN.
  int64_t page_size = 0;
  bool deterministic = false;
  uint64_t seed = 1;  // of the random inputs

  bool varlen() const { return !lens_q.empty(); }
  bool paged() const { return page_size > 0; }
  int64_t dv() const { return head_dim_v ? head_dim_v : head_dim; }
  int64_t nbatch() const { return varlen() ? static_cast<int64_t>(lens_q.size()) : batch; }
  std::string name() const;  // a readable gtest name (alphanumerics and '_')
};

std::ostream& operator<<(std::ostream& os, const Case& c);

struct BackwardRun;

// Everything one call needs: inputs (filled), the options, and factories for the outputs.
struct Problem {
  Case c;
  Buf q, k, v;
  Buf packed;  // packed_qkv: the buffer that q, k, v slice
  std::vector<int32_t> cu_q, cu_k, used;
  Buf k_pages, v_pages;        // paged cases: the cache the forward reads (k, v: the reference's)
  std::vector<int32_t> table;  // paged cases: (batch, pages a sequence)
  std::vector<float> alibi;
  int64_t total_q = 0, total_k = 0;
  flashattn::Options opts;

  explicit Problem(const Case& c);
  // dq, dk, dv, poisoned, in the case's layout.
  BackwardRun make_grads() const;
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;

  // The k and v that the forward reads: the pages of a paged case, else k and v.
  const Buf& k_in() const { return c.paged() ? k_pages : k; }
  const Buf& v_in() const { return c.paged() ? v_pages : v; }

  // Outputs, poisoned, in the case's layout.
  Buf make_out() const;
  Buf make_lse() const;
  Buf make_dout(std::mt19937_64& rng) const;  // random, in the layout of out

  // The reference's input arrays (packed rows, extra varlen rows dropped).
  std::vector<double> q_values() const;
  std::vector<double> k_values() const;
  std::vector<double> v_values() const;
  // A library output shaped like q/out (rows first) in the reference's layout.
  std::vector<double> rows_values(const Buf& b, int64_t rows) const;

  // The reference's view of the problem.
  RefSpec spec() const;
  // lse of the library in the reference's (total_q, heads_q) layout.
  std::vector<double> lse_values(const Buf& lse) const;
};

struct ForwardRun {
  Buf out, lse;
};
struct BackwardRun {
  Buf dq, dk, dv;
  Buf packed;  // packed_qkv: the one buffer that dq, dk, dv slice
};

// Library calls (outputs poisoned first).
ForwardRun run_forward(Problem& p);
BackwardRun run_backward(Problem& p, const ForwardRun& f, const Buf& dout);

Precision precision_of(DType d);
// The dtype of the LSE for inputs of dtype d: float32, float64 for float64 inputs.
inline DType lse_dtype(DType d) { return d == DType::f64 ? DType::f64 : DType::f32; }

// DESIGN §4: max|ours − ref| ≤ factor · max|plain − ref| + eps, per tensor; ours must be finite
// where ref is finite and equal to ref where ref is ±inf; plain must be finite where ref is (else
// the bound would be vacuous and the check reports it).
::testing::AssertionResult within_rule(const std::string& what, const std::vector<double>& ours,
                                       const std::vector<double>& ref,
                                       const std::vector<double>& plain, double factor,
                                       double eps);
// eps of the rule for a tensor of this dtype whose elements are sums of terms of size `mag`
// (RefForward::out_mag, RefGrads::dq_mag…; for LSE, the reference values themselves).
double rule_eps(DType dtype, const std::vector<double>& mag);

// max|a − b| ≤ tol, all finite.
::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& a,
                                     const std::vector<double>& b, double tol);

// Whole checks used by most tests (gtest assertions inside). Each returns the library's outputs.
// check_forward runs the case through `run` (the CPU call by default; the GPU tests pass theirs).
using ForwardRunner = ForwardRun (*)(Problem& p);
ForwardRun check_forward(const Case& c, ForwardRunner run = run_forward);
// check_backward runs the forward through `forward` (its out and lse are the backward's saved
// tensors) and the backward through `run` (the CPU calls by default; the GPU tests pass theirs).
using BackwardRunner = BackwardRun (*)(Problem& p, const ForwardRun& f, const Buf& dout);
void check_backward(const Case& c, BackwardRunner run = run_backward,
                    ForwardRunner forward = run_forward);

// Gradient tolerance factor of the rule (see harness.cpp for the justification).
inline constexpr double kGradFactor = 2.0;

}  // namespace fa_test
