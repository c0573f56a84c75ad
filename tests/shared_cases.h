// Case grids that a CPU test file and the GPU tests (tests/gpu) both run, kept once here so that
// the GPU grids stay the CPU ones: each returns the cases before the dtype sweep (for_dtypes on
// the CPU, gpu::gpu_cases on the GPU).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cases.h"
#include "harness.h"

namespace fa_test {

// Variable-length batches (test_varlen.cpp): empty sequences, causal/GQA/MQA, window, ALiBi,
// softcap, dropout, seqused_k, rows after the last sequence, max_seqlen bounds, layouts.
inline std::vector<Case> varlen_grid() {
  std::vector<Case> v;
  auto base = [](const std::string& label, std::vector<int64_t> lq, std::vector<int64_t> lk) {
    Case c;
    c.label = label;
    c.lens_q = std::move(lq);
    c.lens_k = std::move(lk);
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 32;
    return c;
  };
  Case c;
  // Empty sequences: a q of length 0, a k of length 0 (its rows see nothing), both.
  v.push_back(base("empty", {5, 0, 17, 64, 0}, {7, 3, 0, 64, 0}));
  c = base("emptycausal", {0, 33, 9, 20}, {12, 0, 9, 50});
  c.causal = true;
  v.push_back(c);
  // Causal + GQA, seqlen_q > seqlen_k and < per sequence.
  c = base("causalgqa", {30, 1, 70, 16}, {50, 64, 33, 16});
  c.causal = true;
  c.heads_q = 8;
  c.heads_kv = 2;
  v.push_back(c);
  c = base("mqa", {30, 45}, {61, 17});
  c.heads_q = 4;
  c.heads_kv = 1;
  c.head_dim = 64;
  c.head_dim_v = 40;
  v.push_back(c);
  c = base("window", {40, 0, 90}, {20, 60, 90});
  c.window_left = 8;
  c.window_right = 4;
  v.push_back(c);
  c = base("alibi", {40, 70, 3}, {40, 20, 100});
  c.alibi = Alibi::batch_heads;
  c.causal = true;
  v.push_back(c);
  c = base("softcap", {25, 50}, {80, 50});
  c.softcap = 3.0f;
  c.qk_scale = 1.5;
  v.push_back(c);
  // Dropout: the batch index of the mask is the sequence index.
  c = base("dropout", {33, 0, 65}, {47, 10, 65});
  c.dropout_p = 0.3f;
  c.causal = true;
  v.push_back(c);
  // seqused_k: keys beyond the used length are invisible (incl. used = 0: rows see nothing).
  c = base("seqused", {30, 12, 8, 16}, {50, 64, 33, 16});
  c.seqused_k = {20, 64, 0, 5};
  c.causal = true;
  v.push_back(c);
  c = base("sequsedwindow", {64, 64}, {100, 90});
  c.seqused_k = {77, 90};
  c.window_left = 16;
  c.window_right = 0;
  c.alibi = Alibi::heads;
  v.push_back(c);
  // Packed tensors longer than the last cu_seqlens entry.
  c = base("extrarows", {20, 31}, {25, 40});
  c.extra_q_rows = 3;
  c.extra_k_rows = 5;
  v.push_back(c);
  // max_seqlen: the exact maximum, and a larger upper bound.
  c = base("maxseqlen", {20, 31}, {25, 40});
  c.max_seqlen_q = 31;
  c.max_seqlen_k = 100;
  c.causal = true;
  v.push_back(c);
  // Layouts.
  c = base("gappy", {20, 0, 31}, {25, 7, 40});
  c.layout = Layout::gappy;
  c.causal = true;
  v.push_back(c);
  c = base("packedqkv", {20, 31, 1}, {20, 31, 1});
  c.layout = Layout::packed_qkv;
  c.causal = true;
  v.push_back(c);
  c = base("headmajor", {20, 31}, {44, 9});
  c.layout = Layout::head_major;
  c.window_left = 5;
  v.push_back(c);
  // A long sequence next to short ones (tiny heads).
  c = base("long", {1025, 3, 0}, {1025, 700, 5});
  c.heads_q = 1;
  c.heads_kv = 1;
  c.causal = true;
  v.push_back(c);
  return v;
}

// The layouts of test_layout.cpp, for one layout l: a causal GQA batch with ALiBi, and a varlen
// batch with a window and dropout (each checks that gaps stay untouched).
inline std::vector<Case> layout_grid(Layout l) {
  std::vector<Case> v;
  Case c;
  c.label = "layout";
  c.batch = 2;
  c.seqlen_q = 70;
  c.seqlen_k = 70;
  c.heads_q = 8;
  c.heads_kv = 2;
  c.head_dim = 48;
  c.layout = l;
  c.causal = true;
  c.alibi = Alibi::heads;
  v.push_back(c);
  c.label = "layoutvarlen";
  c.lens_q = {30, 0, 41};
  c.lens_k = {30, 0, 41};
  c.causal = false;
  c.window_left = 9;
  c.window_right = 2;
  c.alibi = Alibi::none;
  c.dropout_p = 0.3f;
  v.push_back(c);
  return v;
}

// Cases in which some query rows (or all) see no key (test_masking.cpp): causal with
// seqlen_q > seqlen_k, windows and seqused_k that leave rows empty, seqlen_k = 0, varlen.
inline std::vector<Case> masked_grid() {
  std::vector<Case> v;
  auto base = [](const std::string& label, int64_t sq, int64_t sk) {
    Case c;
    c.label = label;
    c.batch = 2;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 32;
    return c;
  };
  Case c = base("causalqlonger", 97, 64);  // rows 0..32 are above the bottom-right diagonal
  c.causal = true;
  v.push_back(c);
  c = base("window00", 50, 30);  // window (0, 0): only the diagonal, which misses 20 rows
  c.window_left = 0;
  c.window_right = 0;
  v.push_back(c);
  c = base("windowright", 40, 10);  // j ≤ i − 30 + 2: rows 0..27 see nothing
  c.window_right = 2;
  c.alibi = Alibi::heads;
  v.push_back(c);
  c = base("windowused", 10, 40);
  c.window_left = 3;
  c.window_right = 1;
  // Sequence 0 uses 5 keys: row i sees i − 8 ≤ j ≤ i − 4 (alignment on the used length), so
  // rows 0..3 see nothing; sequence 1 (40 keys) sees i + 27 ≤ j ≤ i + 31.
  c.seqused_k = {5, 40};
  v.push_back(c);
  c = base("sequsedzero", 33, 40);
  c.seqused_k = {0, 25};
  v.push_back(c);
  c = base("seqlenkzero", 17, 0);
  v.push_back(c);
  c = base("seqlenkzerocausal", 17, 0);
  c.causal = true;
  c.dropout_p = 0.5f;
  v.push_back(c);
  c = base("causalsoftcapdrop", 70, 20);
  c.causal = true;
  c.softcap = 5.0f;
  c.dropout_p = 0.25f;
  v.push_back(c);
  Case vl;
  vl.label = "varlenkzero";
  vl.lens_q = {9, 12, 4};
  vl.lens_k = {0, 20, 3};
  vl.heads_q = 2;
  vl.heads_kv = 1;
  vl.head_dim = 32;
  vl.causal = true;
  v.push_back(vl);
  return v;
}

// Large logits (test_masking.cpp): q, k ~ normal(0, 100²) with head_dim 64 and qk_scale 100,
// |scores| ~ 1e4 (the dtype sweeps lower qk_scale for fp16; see there).
inline std::vector<Case> large_grid() {
  std::vector<Case> v;
  auto base = [](const std::string& label) {
    Case c;
    c.label = label;
    c.batch = 1;
    c.seqlen_q = 80;
    c.seqlen_k = 97;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 64;
    c.qk_scale = 100.0;
    return c;
  };
  v.push_back(base("large"));
  Case c = base("large");
  c.causal = true;
  v.push_back(c);
  c = base("large");
  c.softcap = 50.0f;
  v.push_back(c);
  c = base("large");
  c.alibi = Alibi::heads;
  c.dropout_p = 0.2f;
  v.push_back(c);
  return v;
}

// Dropout (test_dropout.cpp): several keep probabilities (the last drops every element), varlen
// with causal, window with softcap.
inline std::vector<Case> dropout_grid() {
  std::vector<Case> v;
  for (float p : {0.1f, 0.5f, 0.9f, 0.999999f}) {  // the last drops every element (threshold 0)
    Case c;
    c.label = "dropout";
    c.batch = 2;
    c.seqlen_q = 70;  // rows and columns cross several 16×16 blocks, with partial ones
    c.seqlen_k = 83;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 32;
    c.dropout_p = p;
    c.dropout_seed = 0x0123456789abcdefull + static_cast<uint64_t>(p * 1000);
    v.push_back(c);
  }
  Case c = v[1];
  c.label = "dropoutvarlen";
  c.lens_q = {17, 0, 33, 40};
  c.lens_k = {50, 8, 33, 1};
  c.causal = true;
  v.push_back(c);
  c = v[0];
  c.label = "dropoutwindow";
  c.window_left = 20;
  c.window_right = 5;
  c.softcap = 8.0f;
  c.dropout_offset = 0;
  v.push_back(c);
  return v;
}

}  // namespace fa_test
