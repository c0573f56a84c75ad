// The case grids shared by the forward and backward tests.
#pragma once

#include <string>
#include <vector>

#include "harness.h"

namespace fa_test {

inline const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> d = {DType::f32, DType::f16, DType::bf16};
  return d;
}

// Every case of `base` for each dtype.
inline std::vector<Case> for_dtypes(const std::vector<Case>& base) {
  std::vector<Case> out;
  for (DType d : all_dtypes()) {
    for (Case c : base) {
      c.dtype = d;
      out.push_back(c);
    }
  }
  return out;
}

// gtest's name generator for Case parameters.
struct CaseName {
  std::string operator()(const ::testing::TestParamInfo<Case>& info) const {
    return info.param.name();
  }
};

// Options and their realistic combinations (DESIGN §1), on a base of batch 2, 4 query heads over
// 2 kv heads, head_dim 64 and seqlen_q ≠ seqlen_k (both ways).
inline std::vector<Case> option_cases() {
  std::vector<Case> v;
  auto base = [](const std::string& label, int64_t sq = 97, int64_t sk = 128) {
    Case c;
    c.label = label;
    c.batch = 2;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 64;
    return c;
  };
  Case c;
  // Causal, both alignments (seqlen_q < seqlen_k and > ).
  c = base("causal");
  c.causal = true;
  v.push_back(c);
  c = base("causal", 128, 97);
  c.causal = true;
  v.push_back(c);
  // Sliding windows.
  for (auto [l, r] : std::vector<std::pair<int, int>>{
           {16, 0}, {0, 16}, {32, 8}, {0, 0}, {5, -1}, {-1, 7}, {300, 300}}) {
    c = base("window");
    c.window_left = l;
    c.window_right = r;
    v.push_back(c);
  }
  c = base("window", 128, 97);
  c.window_left = 10;
  c.window_right = 3;
  v.push_back(c);
  c = base("causalwindow");
  c.causal = true;
  c.window_left = 20;
  v.push_back(c);
  // Softcap (q, k scaled so that |scores| ~ 4 and the cap bends them).
  c = base("softcap");
  c.softcap = 5.0f;
  c.qk_scale = 2.0;
  v.push_back(c);
  c = base("softcap");
  c.softcap = 30.0f;
  v.push_back(c);
  c = base("softcapcausal", 128, 97);
  c.softcap = 2.5f;
  c.qk_scale = 1.5;
  c.causal = true;
  v.push_back(c);
  // ALiBi.
  c = base("alibi");
  c.alibi = Alibi::heads;
  v.push_back(c);
  c = base("alibi", 128, 97);
  c.alibi = Alibi::batch_heads;
  v.push_back(c);
  c = base("alibicausal");
  c.alibi = Alibi::batch_heads;
  c.causal = true;
  c.heads_q = 8;
  c.heads_kv = 1;
  v.push_back(c);
  c = base("windowalibi");
  c.alibi = Alibi::batch_heads;
  c.window_left = 32;
  c.window_right = 16;
  v.push_back(c);
  c = base("softcapalibi");
  c.alibi = Alibi::heads;
  c.softcap = 4.0f;
  c.qk_scale = 1.5;
  v.push_back(c);
  // Custom softmax scale.
  c = base("scale");
  c.scale = 0.5f;
  v.push_back(c);
  c = base("scale");
  c.scale = 0.01f;
  v.push_back(c);
  c = base("scale");
  c.scale = 0.0f;  // uniform attention over the visible keys
  c.causal = true;
  v.push_back(c);
  // head_dim_v ≠ head_dim.
  c = base("dv");
  c.head_dim_v = 32;
  v.push_back(c);
  c = base("dv");
  c.head_dim = 32;
  c.head_dim_v = 96;
  c.causal = true;
  v.push_back(c);
  c = base("dv", 33, 40);
  c.head_dim = 59;
  c.head_dim_v = 13;
  v.push_back(c);
  // seqused_k on a padded batch.
  c = base("seqused");
  c.seqused_k = {100, 37};
  v.push_back(c);
  c = base("sequsedcausal");
  c.seqused_k = {128, 61};
  c.causal = true;
  v.push_back(c);
  // Dropout (the reference draws the same mask through flashattn::dropout_keep).
  for (float p : {0.1f, 0.5f}) {
    c = base("dropout");
    c.dropout_p = p;
    v.push_back(c);
  }
  c = base("dropoutcausal", 128, 97);
  c.dropout_p = 0.17f;
  c.causal = true;
  c.heads_q = 8;
  c.heads_kv = 2;
  c.alibi = Alibi::heads;
  c.dropout_seed = 0xfedcba9876543210ull;
  c.dropout_offset = 0xfffffffffffffff0ull;  // the counter's stream wraps around 2^64
  v.push_back(c);
  // Layouts: non-contiguous strides (values in the gaps are NaN), packed qkv, head-major.
  c = base("layout", 97, 97);
  c.layout = Layout::packed_qkv;
  c.causal = true;
  v.push_back(c);
  c = base("layout");
  c.layout = Layout::gappy;
  c.window_left = 40;
  v.push_back(c);
  c = base("layout", 128, 97);
  c.layout = Layout::head_major;
  v.push_back(c);
  // Everything at once.
  c = base("all");
  c.heads_q = 8;
  c.heads_kv = 2;
  c.causal = true;
  c.window_left = 24;
  c.softcap = 10.0f;
  c.qk_scale = 1.5;
  c.alibi = Alibi::batch_heads;
  c.dropout_p = 0.2f;
  c.scale = 0.2f;
  c.seqused_k = {120, 90};
  c.layout = Layout::gappy;
  v.push_back(c);
  return for_dtypes(v);
}

// Sequence-length pairs of DESIGN §4 (1, 2, 97, 128, 257; seqlen_q ≠ seqlen_k both ways).
inline std::vector<std::pair<int64_t, int64_t>> seqlen_pairs(bool backward) {
  if (backward) {
    return {{1, 1}, {2, 2}, {97, 97}, {128, 128}, {257, 257},
            {1, 128}, {128, 1}, {97, 128}, {128, 97}, {2, 257}};
  }
  return {{1, 1},    {2, 2},   {97, 97},   {128, 128}, {257, 257}, {1, 128},
          {128, 1},  {2, 97},  {97, 128},  {128, 97},  {257, 64},  {64, 257}};
}

inline std::vector<Case> shape_cases(bool backward) {
  std::vector<Case> v;
  for (auto [sq, sk] : seqlen_pairs(backward)) {
    for (bool causal : {false, true}) {
      Case c;
      c.batch = 2;
      c.seqlen_q = sq;
      c.seqlen_k = sk;
      c.heads_q = 4;
      c.heads_kv = 2;
      c.head_dim = 64;
      c.causal = causal;
      c.seed = static_cast<uint64_t>(sq * 1000 + sk);
      v.push_back(c);
    }
  }
  return for_dtypes(v);
}

inline std::vector<Case> head_dim_cases() {
  std::vector<Case> v;
  int i = 0;
  // DESIGN's list, plus the extremes the CPU implementation supports (1 and 255).
  for (int64_t d : {1, 32, 40, 59, 64, 80, 96, 128, 192, 255, 256}) {
    Case c;
    c.batch = 1;
    c.seqlen_q = 97;
    c.seqlen_k = 113;
    c.heads_q = 2;
    c.heads_kv = 1;
    c.head_dim = d;
    c.causal = (i++ % 2) == 1;
    c.seed = static_cast<uint64_t>(d);
    v.push_back(c);
  }
  return for_dtypes(v);
}

inline std::vector<Case> heads_cases() {
  std::vector<Case> v;
  for (auto [hq, hk] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {4, 1}, {4, 4}, {8, 1}, {8, 2}, {8, 4}, {8, 8}}) {
    Case c;
    c.batch = 2;
    c.seqlen_q = 65;
    c.seqlen_k = 80;
    c.heads_q = hq;
    c.heads_kv = hk;
    c.head_dim = 32;
    c.causal = hq == 8 && hk == 2;
    c.seed = static_cast<uint64_t>(hq * 10 + hk);
    v.push_back(c);
  }
  return for_dtypes(v);
}

// seqlen 1025 with a tiny configuration only (one head of dim 32).
inline std::vector<Case> long_cases(bool backward) {
  std::vector<Case> v;
  auto add = [&](int64_t sq, int64_t sk, bool causal) {
    Case c;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.head_dim = 32;
    c.causal = causal;
    v.push_back(c);
  };
  add(1025, 1025, true);
  {
    Case c;  // a window far narrower than the sequence: key blocks skipped on both sides
    c.seqlen_q = 1025;
    c.seqlen_k = 1025;
    c.head_dim = 16;
    c.window_left = 100;
    c.window_right = 30;
    c.alibi = Alibi::heads;
    c.dropout_p = backward ? 0.1f : 0.0f;
    v.push_back(c);
  }
  if (!backward) {
    add(1025, 1025, false);
    add(1, 1025, false);
    add(1025, 97, true);
  }
  return for_dtypes(v);
}

// Forward over a paged KV cache (Case::page_size: pages shuffled, the rows no key fills NaN):
// page sizes of 1, 5 (not a power of two), 16, 64 and 256 rows against 300 keys (no page size
// divides it), a decode step of 1 and 4 query tokens (GQA packed; 16/2 heads at d 128 is the
// 32-row decode tile) and a 97-row prefill, sequences of different used lengths (one of a
// single key), and the score options.
inline std::vector<Case> paged_cases() {
  std::vector<Case> v;
  auto base = [](int64_t page, int64_t sq, int64_t d = 64) {
    Case c;
    c.label = "paged";
    c.batch = 2;
    c.seqlen_q = sq;
    c.seqlen_k = 300;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = d;
    c.page_size = page;
    c.causal = sq > 1;
    return c;
  };
  for (int64_t page : {1, 5, 16, 64, 256}) {
    for (int64_t sq : {1, 4, 97}) v.push_back(base(page, sq));
  }
  Case c = base(16, 1);
  c.seqused_k = {300, 1};
  v.push_back(c);
  c = base(5, 4, 128);
  c.heads_q = 16;
  c.seqused_k = {17, 300};
  v.push_back(c);
  c = base(16, 1, 256);
  v.push_back(c);
  c = base(16, 4);
  c.window_left = 40;
  v.push_back(c);
  c = base(64, 1);
  c.softcap = 5.0f;
  c.qk_scale = 2.0;
  c.alibi = Alibi::batch_heads;
  v.push_back(c);
  c = base(16, 1);
  c.num_splits = 3;
  v.push_back(c);
  return for_dtypes(v);
}

}  // namespace fa_test
