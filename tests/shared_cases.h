// Case grids that a CPU test file and the GPU tests (tests/gpu) both run, kept once here so that
// the GPU grids stay the CPU ones: each returns the cases before the dtype sweep (for_dtypes on
// the CPU, gpu::gpu_cases on the GPU).
#pragma once

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

}  // namespace fa_test
