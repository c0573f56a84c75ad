#include "reference.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "half.h"

namespace fa_test {
namespace {

// Rounding of a matmul result / probability to the input dtype (identity for f64 and f32).
template <class T>
T round_to(Precision p, T x) {
  switch (p) {
    case Precision::f16: return static_cast<T>(round_f16(static_cast<double>(x)));
    case Precision::bf16: return static_cast<T>(round_bf16(static_cast<double>(x)));
    case Precision::f32: return static_cast<T>(static_cast<float>(x));
    default: return x;
  }
}

// Does the whole computation in arithmetic type T (double for the reference, float for the plain
// emulations), rounding the intermediate results to precision p. dout == nullptr: forward only.
template <class T>
void attention(const RefSpec& s, Precision p, const std::vector<double>& q_in,
               const std::vector<double>& k_in, const std::vector<double>& v_in,
               const std::vector<double>* dout_in, RefForward* fwd, RefGrads* grads) {
  const int64_t H = s.heads_q, HK = s.heads_kv, D = s.head_dim, DV = s.head_dim_v;
  if (H % HK != 0) throw std::invalid_argument("reference: heads_q % heads_kv != 0");
  const int64_t group = H / HK;
  const int64_t total_q = s.total_q(), total_k = s.total_k();
  if (static_cast<int64_t>(q_in.size()) != total_q * H * D ||
      static_cast<int64_t>(k_in.size()) != total_k * HK * D ||
      static_cast<int64_t>(v_in.size()) != total_k * HK * DV) {
    throw std::invalid_argument("reference: input sizes do not match the spec");
  }
  const bool dropout = static_cast<bool>(s.keep);
  const T scale = static_cast<T>(s.scale);
  const T cap = static_cast<T>(s.softcap);
  const T dscale = static_cast<T>(s.dropout_scale);

  // Inputs in T (they are values of the input dtype already).
  const std::vector<T> q(q_in.begin(), q_in.end()), k(k_in.begin(), k_in.end()),
      v(v_in.begin(), v_in.end());
  std::vector<T> dout;
  if (dout_in) dout.assign(dout_in->begin(), dout_in->end());

  std::vector<T> out(static_cast<size_t>(total_q * H * DV), T(0));
  std::vector<double> out_mag(out.size(), 0.0);
  std::vector<double> lse(static_cast<size_t>(total_q * H), 0.0);
  std::vector<char> empty(static_cast<size_t>(total_q * H), 0);
  std::vector<T> dq_acc, dk_acc, dv_acc;
  std::vector<double> dq_mag, dk_mag, dv_mag;
  if (dout_in) {
    dq_acc.assign(q.size(), T(0));
    dk_acc.assign(k.size(), T(0));
    dv_acc.assign(v.size(), T(0));
    dq_mag.assign(q.size(), 0.0);
    dk_mag.assign(k.size(), 0.0);
    dv_mag.assign(v.size(), 0.0);
  }

  std::vector<T> S, P, Pd, TH;  // scores, probabilities, dropped probabilities, tanh (softcap)
  std::vector<char> vis;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t q0 = s.cu_q[b], k0 = s.cu_k[b];
    const int64_t sq = s.cu_q[b + 1] - q0;
    const int64_t sk = s.used_k.empty() ? s.cu_k[b + 1] - k0 : s.used_k[b];
    if (sq < 0 || sk < 0 || sk > s.cu_k[b + 1] - k0) {
      throw std::invalid_argument("reference: bad sequence lengths");
    }
    const int64_t n = sq * sk;
    S.assign(n, T(0));
    P.assign(n, T(0));
    Pd.assign(n, T(0));
    TH.assign(n, T(0));
    vis.assign(n, 0);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / group;
      const T slope = s.alibi.empty() ? T(0) : static_cast<T>(s.alibi[b * H + h]);
      // Scores and softmax, row by row.
      for (int64_t i = 0; i < sq; ++i) {
        const T* qi = &q[((q0 + i) * H + h) * D];
        T row_max = -std::numeric_limits<T>::infinity();
        bool any = false;
        for (int64_t j = 0; j < sk; ++j) {
          if (!ref_visible(s, i, j, sq, sk)) continue;
          const T* kj = &k[((k0 + j) * HK + hk) * D];
          T dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
          dot = round_to(p, dot);  // S = QKᵀ in the dtype
          T x = scale * dot;
          if (cap > 0) {
            const T th = std::tanh(x / cap);
            TH[i * sk + j] = th;
            x = cap * th;
          }
          if (slope != T(0)) {
            x -= slope * static_cast<T>(std::llabs(i + sk - sq - j));
          }
          S[i * sk + j] = x;
          vis[i * sk + j] = 1;
          any = true;
          if (x > row_max) row_max = x;
        }
        const int64_t r = (q0 + i) * H + h;
        if (!any) {
          lse[r] = -std::numeric_limits<double>::infinity();
          empty[r] = 1;
          continue;  // P row stays 0, O row stays 0
        }
        T sum = 0;
        for (int64_t j = 0; j < sk; ++j) {
          if (vis[i * sk + j]) sum += std::exp(S[i * sk + j] - row_max);
        }
        lse[r] = static_cast<double>(row_max) + std::log(static_cast<double>(sum));
        for (int64_t j = 0; j < sk; ++j) {
          if (!vis[i * sk + j]) continue;
          const T pij = std::exp(S[i * sk + j] - row_max) / sum;
          P[i * sk + j] = pij;
          const T pr = round_to(p, pij);  // probabilities in the dtype
          Pd[i * sk + j] =
              dropout ? (s.keep(b, h, i, j) ? round_to(p, pr * dscale) : T(0)) : pr;
        }
        // O = Pdrop · V
        T* oi = &out[r * DV];
        for (int64_t j = 0; j < sk; ++j) {
          const T w = Pd[i * sk + j];
          if (w == T(0)) continue;
          const T* vj = &v[((k0 + j) * HK + hk) * DV];
          for (int64_t c = 0; c < DV; ++c) {
            oi[c] += w * vj[c];
            out_mag[r * DV + c] += std::fabs(static_cast<double>(w) * vj[c]);
          }
        }
        for (int64_t c = 0; c < DV; ++c) oi[c] = round_to(p, oi[c]);
      }
      if (!dout_in) continue;

      // Backward of loss = Σ dO·O for this (b, h).
      for (int64_t i = 0; i < sq; ++i) {
        const int64_t r = (q0 + i) * H + h;
        if (empty[r]) continue;  // no visible key: every gradient contribution is 0
        const T* doi = &dout[r * DV];
        const T* qi = &q[r * D];
        // dPdrop = dO Vᵀ (in the dtype), dP = dPdrop ∘ dropout, D_i = Σ_j P dP
        std::vector<T> dp(static_cast<size_t>(sk), T(0));
        if (s.saved_lse_f32) {  // P recomputed from the LSE as stored in fp32
          const T l = static_cast<T>(static_cast<float>(lse[r]));
          for (int64_t j = 0; j < sk; ++j) {
            if (vis[i * sk + j]) P[i * sk + j] = std::exp(S[i * sk + j] - l);
          }
        }
        T Di = 0;
        for (int64_t j = 0; j < sk; ++j) {
          if (!vis[i * sk + j]) continue;
          const T* vj = &v[((k0 + j) * HK + hk) * DV];
          T dot = 0;
          for (int64_t c = 0; c < DV; ++c) dot += doi[c] * vj[c];
          dot = round_to(p, dot);
          if (dropout) dot = s.keep(b, h, i, j) ? dot * dscale : T(0);
          dp[j] = dot;
          Di += P[i * sk + j] * dot;
        }
        if (s.saved_out != Precision::f64) {  // D = rowsum(dO ∘ O) from the stored O
          Di = 0;
          for (int64_t c = 0; c < DV; ++c) Di += doi[c] * round_to(s.saved_out, out[r * DV + c]);
        }
        T* dqi = &dq_acc[r * D];
        for (int64_t j = 0; j < sk; ++j) {
          if (!vis[i * sk + j]) continue;
          // dS = P ∘ (dP − D); through the softcap: d(c·tanh(x/c))/dx = 1 − tanh²
          T ds = P[i * sk + j] * (dp[j] - Di);
          double ds_mag = static_cast<double>(P[i * sk + j]) *
                          (std::fabs(static_cast<double>(dp[j])) + std::fabs(static_cast<double>(Di)));
          if (cap > 0) {
            const T deriv = T(1) - TH[i * sk + j] * TH[i * sk + j];
            ds *= deriv;
            ds_mag *= static_cast<double>(deriv);
          }
          ds = round_to(p, ds);
          ds_mag *= std::fabs(static_cast<double>(scale));
          const int64_t kr = (k0 + j) * HK + hk;
          const T* kj = &k[kr * D];
          T* dkj = &dk_acc[kr * D];
          T* dvj = &dv_acc[kr * DV];
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += scale * ds * kj[d];
            dkj[d] += scale * ds * qi[d];
            dq_mag[r * D + d] += ds_mag * std::fabs(static_cast<double>(kj[d]));
            dk_mag[kr * D + d] += ds_mag * std::fabs(static_cast<double>(qi[d]));
          }
          const T w = Pd[i * sk + j];
          for (int64_t c = 0; c < DV; ++c) {
            dvj[c] += w * doi[c];
            dv_mag[kr * DV + c] += std::fabs(static_cast<double>(w) * doi[c]);
          }
        }
      }
    }
  }

  if (grads) {
    grads->row_empty = empty;
    grads->dq_mag = std::move(dq_mag);
    grads->dk_mag = std::move(dk_mag);
    grads->dv_mag = std::move(dv_mag);
  }
  if (fwd) {
    fwd->out.assign(out.begin(), out.end());
    fwd->lse = std::move(lse);
    fwd->row_empty = std::move(empty);
    fwd->out_mag = std::move(out_mag);
  }
  if (grads) {
    grads->dq.resize(dq_acc.size());
    grads->dk.resize(dk_acc.size());
    grads->dv.resize(dv_acc.size());
    for (size_t i = 0; i < dq_acc.size(); ++i) grads->dq[i] = round_to(p, dq_acc[i]);
    for (size_t i = 0; i < dk_acc.size(); ++i) grads->dk[i] = round_to(p, dk_acc[i]);
    for (size_t i = 0; i < dv_acc.size(); ++i) grads->dv[i] = round_to(p, dv_acc[i]);
  }
}

}  // namespace

bool ref_visible(const RefSpec& s, int64_t i, int64_t j, int64_t sq, int64_t sk) {
  // Bottom-right alignment: the diagonal of row i is at column i + sk − sq.
  const int64_t diag = i + sk - sq;
  if (j < 0 || j >= sk) return false;
  if (s.window_left >= 0 && j < diag - s.window_left) return false;
  const int64_t right = s.causal ? 0 : s.window_right;
  if (right >= 0 && j > diag + right) return false;
  return true;
}

RefForward reference_forward(const RefSpec& s, const std::vector<double>& q,
                             const std::vector<double>& k, const std::vector<double>& v) {
  RefForward f;
  attention<double>(s, Precision::f64, q, k, v, nullptr, &f, nullptr);
  return f;
}

RefGrads reference_backward(const RefSpec& s, const std::vector<double>& q,
                            const std::vector<double>& k, const std::vector<double>& v,
                            const std::vector<double>& dout) {
  RefGrads g;
  attention<double>(s, Precision::f64, q, k, v, &dout, nullptr, &g);
  return g;
}

RefForward plain_forward(const RefSpec& s, Precision p, const std::vector<double>& q,
                         const std::vector<double>& k, const std::vector<double>& v) {
  RefForward f;
  if (p == Precision::f64) {
    attention<double>(s, p, q, k, v, nullptr, &f, nullptr);
  } else {
    attention<float>(s, p, q, k, v, nullptr, &f, nullptr);
  }
  return f;
}

RefGrads plain_backward(const RefSpec& s, Precision p, const std::vector<double>& q,
                        const std::vector<double>& k, const std::vector<double>& v,
                        const std::vector<double>& dout) {
  RefGrads g;
  if (p == Precision::f64) {
    attention<double>(s, p, q, k, v, &dout, nullptr, &g);
  } else {
    attention<float>(s, p, q, k, v, &dout, nullptr, &g);
  }
  return g;
}

double reference_loss(const RefSpec& s, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v, const std::vector<double>& dout) {
  const RefForward f = reference_forward(s, q, k, v);
  double loss = 0;
  for (size_t i = 0; i < f.out.size(); ++i) loss += dout[i] * f.out[i];
  return loss;
}

}  // namespace fa_test
