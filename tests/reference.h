// The oracle of the tests: naive attention, forward and backward, written from DESIGN.md §1 and the
// comments of include/flashattn/flashattn.h, independently of the library's code.
//
// Two precisions of the same naive algorithm:
//  * reference_*: float64 throughout (the "ref64" of the tolerance rule);
//  * plain_*: what a naive attention computes in the input dtype (the "plain" of the rule):
//      fp32 inputs: the naive algorithm in float;
//      fp16/bf16 inputs: matmuls accumulated in fp32 and their results rounded to the dtype
//      (S = QKᵀ, O = PV, and in the backward dPdrop = dO Vᵀ, dQ, dK, dV), scale/softcap/bias/
//      softmax in fp32 with the probabilities rounded to the dtype, dS rounded to the dtype.
//
// Data layout of every array: packed rows, row-major, as the varlen API:
//   q (total_q, heads_q, head_dim), k (total_k, heads_kv, head_dim), v (total_k, heads_kv, head_dim_v),
//   out/dout (total_q, heads_q, head_dim_v), lse (total_q, heads_q).
// A padded batch is the special case cu_q[b] = b·seqlen_q, cu_k[b] = b·seqlen_k.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace fa_test {

enum class Precision { f64, f32, f16, bf16 };

struct RefSpec {
  int64_t batch = 1;
  int64_t heads_q = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 1;
  int64_t head_dim_v = 1;
  std::vector<int64_t> cu_q;     // batch + 1 row offsets into the packed q rows
  std::vector<int64_t> cu_k;     // batch + 1 row offsets into the packed k/v rows
  std::vector<int64_t> used_k;   // batch: keys visible per sequence (seqused_k), ≤ cu_k[b+1]−cu_k[b]
  double scale = 1.0;
  double softcap = 0.0;          // 0 = off
  bool causal = false;
  int64_t window_left = -1;      // −1 = unbounded
  int64_t window_right = -1;
  std::vector<double> alibi;     // empty, or batch·heads_q slopes (b-major)
  double dropout_p = 0.0;
  double dropout_scale = 1.0;    // multiplies kept probabilities (1/(1−p), computed in fp32)
  // keep(b, h, i, j) with i, j counted from the start of sequence b. Unset = no dropout.
  std::function<bool(int64_t, int64_t, int64_t, int64_t)> keep;
  // Backward given saved forward results, as the API's backward is (only for yardsticks where the
  // storage of O and LSE dominates the error, see test_masking.cpp's large logits):
  //   saved_out ≠ f64: D_i = Σ_c dO_ic·O_ic with O rounded to saved_out (else D_i = Σ_j P_ij dP_ij);
  //   saved_lse_f32:   P_ij = exp(S_ij − LSE_i) with LSE rounded to fp32.
  Precision saved_out = Precision::f64;
  bool saved_lse_f32 = false;

  int64_t total_q() const { return cu_q.back(); }
  int64_t total_k() const { return cu_k.back(); }
};

struct RefForward {
  std::vector<double> out;        // (total_q, heads_q, head_dim_v)
  std::vector<double> lse;        // (total_q, heads_q); −inf for a row with no visible key
  std::vector<char> row_empty;    // (total_q, heads_q): 1 where no key is visible
  // Σ_j |Pdrop_ij|·|v_jc|: the size of the summands of each output element, the natural scale of
  // its rounding errors (it can be much larger than |out| where terms cancel).
  std::vector<double> out_mag;
};

struct RefGrads {
  std::vector<double> dq, dk, dv;  // shapes of q, k, v
  std::vector<char> row_empty;     // as RefForward::row_empty
  // Sizes of the summands of each gradient element (as RefForward::out_mag), e.g. for dq:
  // scale·Σ_j P_ij(|dP_ij| + |D_i|)·|k_j|, much larger than |dq| where dP_ij − D_i cancels.
  std::vector<double> dq_mag, dk_mag, dv_mag;
};

// Whether query row i of a sequence with sq queries and sk (used) keys sees key j.
bool ref_visible(const RefSpec& s, int64_t i, int64_t j, int64_t sq, int64_t sk);

RefForward reference_forward(const RefSpec& s, const std::vector<double>& q,
                             const std::vector<double>& k, const std::vector<double>& v);
RefGrads reference_backward(const RefSpec& s, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v,
                            const std::vector<double>& dout);

// The "plain" computation in precision p (f32, f16 or bf16; f64 gives the reference).
RefForward plain_forward(const RefSpec& s, Precision p, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v);
RefGrads plain_backward(const RefSpec& s, Precision p, const std::vector<double>& q,
                        const std::vector<double>& k, const std::vector<double>& v,
                        const std::vector<double>& dout);

// sum(dout · out) in float64: the loss whose gradients the backward computes.
double reference_loss(const RefSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v, const std::vector<double>& dout);

}  // namespace fa_test
