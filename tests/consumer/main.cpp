// Uses the installed flashattn: a small CPU forward whose output must be finite, and a bad
// argument that must throw flashattn::Error. Exit status 0 on success.
#include <flashattn/flashattn.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  constexpr int64_t kBatch = 2, kSeqlen = 33, kHeads = 4, kHeadsKv = 2, kHeadDim = 64;
  std::vector<float> q(kBatch * kSeqlen * kHeads * kHeadDim);
  std::vector<float> k(kBatch * kSeqlen * kHeadsKv * kHeadDim);
  std::vector<float> v(k.size());
  std::vector<float> out(q.size(), NAN);
  std::vector<float> lse(kBatch * kHeads * kSeqlen, NAN);
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * static_cast<float>(i));
  for (size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11f * static_cast<float>(i));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.05f * static_cast<float>(i) + 1.0f);

  using flashattn::DType;
  const auto q_t =
      flashattn::contiguous_view(q.data(), DType::f32, {kBatch, kSeqlen, kHeads, kHeadDim});
  const auto k_t =
      flashattn::contiguous_view(k.data(), DType::f32, {kBatch, kSeqlen, kHeadsKv, kHeadDim});
  const auto v_t =
      flashattn::contiguous_view(v.data(), DType::f32, {kBatch, kSeqlen, kHeadsKv, kHeadDim});
  const auto out_t =
      flashattn::contiguous_view(out.data(), DType::f32, {kBatch, kSeqlen, kHeads, kHeadDim});
  const auto lse_t = flashattn::contiguous_view(lse.data(), DType::f32, {kBatch, kHeads, kSeqlen});

  flashattn::Options options;
  options.causal = true;
  flashattn::forward(q_t, k_t, v_t, out_t, lse_t, options);
  for (float x : out) {
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "consumer: non-finite output %g\n", static_cast<double>(x));
      return 1;
    }
  }
  for (float x : lse) {
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "consumer: non-finite lse %g\n", static_cast<double>(x));
      return 1;
    }
  }

  // v with the wrong number of kv heads must be rejected before anything is written.
  const auto bad_v =
      flashattn::contiguous_view(v.data(), DType::f32, {kBatch, kSeqlen, 1, kHeadDim});
  try {
    flashattn::forward(q_t, k_t, bad_v, out_t, lse_t, options);
    std::fprintf(stderr, "consumer: a mismatched v was accepted\n");
    return 1;
  } catch (const flashattn::Error& e) {
    std::printf("consumer: bad argument rejected: %s\n", e.what());
  }

  std::printf("consumer: flashattn %s (CUDA compiled: %s), forward ok\n", FLASHATTN_VERSION,
              flashattn::cuda_compiled() ? "yes" : "no");
  return 0;
}
