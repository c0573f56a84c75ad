/* Uses the installed C ABI (flashattn::flashattn_c, a shared library) from C: a small forward
 * must succeed with finite output, and a bad argument must fail with a message. */
#include <flashattn/flashattn_c.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { kSeqlen = 17, kHeads = 2, kHeadDim = 32, kN = kSeqlen * kHeads * kHeadDim };

static flashattn_tensor view(float* data, int64_t heads) {
  flashattn_tensor t = {0};
  t.data = data;
  t.dtype = FLASHATTN_F32;
  t.rank = 4;
  t.shape[0] = 1, t.shape[1] = kSeqlen, t.shape[2] = heads, t.shape[3] = kHeadDim;
  t.strides[3] = 1, t.strides[2] = kHeadDim, t.strides[1] = heads * kHeadDim;
  t.strides[0] = kSeqlen * heads * kHeadDim;
  t.device_type = FLASHATTN_CPU;
  return t;
}

int main(void) {
  static float q[kN], k[kN], v[kN], out[kN];
  for (int i = 0; i < kN; ++i) {
    q[i] = sinf(0.3f * (float)i);
    k[i] = cosf(0.7f * (float)i);
    v[i] = sinf(0.1f * (float)i + 2.0f);
  }
  const flashattn_tensor tq = view(q, kHeads), tk = view(k, kHeads), tv = view(v, kHeads);
  const flashattn_tensor tout = view(out, kHeads);
  flashattn_options options;
  flashattn_default_options(&options);
  options.causal = 1;

  if (flashattn_forward(&tq, &tk, &tv, &tout, NULL, NULL, NULL, NULL, NULL, &options) != 0) {
    fprintf(stderr, "consumer_c: forward failed: %s\n", flashattn_last_error());
    return 1;
  }
  for (int i = 0; i < kN; ++i) {
    if (!isfinite(out[i])) {
      fprintf(stderr, "consumer_c: non-finite output %g\n", (double)out[i]);
      return 1;
    }
  }
  const flashattn_tensor bad_v = view(v, 1); /* 1 kv head where k has 2 */
  if (flashattn_forward(&tq, &tk, &bad_v, &tout, NULL, NULL, NULL, NULL, NULL, &options) == 0) {
    fprintf(stderr, "consumer_c: a mismatched v was accepted\n");
    return 1;
  }
  printf("consumer_c: bad argument rejected: %s\n", flashattn_last_error());

  /* The same keys and values as a paged cache (pages of 4 rows, in shuffled order): the same
   * output. */
  enum { kPage = 4, kPages = (kSeqlen + kPage - 1) / kPage, kRow = kHeads * kHeadDim };
  static float kp[kPages * kPage * kRow], vp[kPages * kPage * kRow], paged_out[kN];
  int32_t table[kPages] = {3, 0, 4, 1, 2}, used = kSeqlen;
  for (int j = 0; j < kSeqlen; ++j) {
    for (int e = 0; e < kRow; ++e) {
      kp[(table[j / kPage] * kPage + j % kPage) * kRow + e] = k[j * kRow + e];
      vp[(table[j / kPage] * kPage + j % kPage) * kRow + e] = v[j * kRow + e];
    }
  }
  flashattn_tensor tkp = view(kp, kHeads), tvp = view(vp, kHeads);
  tkp.shape[0] = tvp.shape[0] = kPages;
  tkp.shape[1] = tvp.shape[1] = kPage;
  tkp.strides[0] = tvp.strides[0] = kPage * kRow;
  const flashattn_tensor ttable = {table, FLASHATTN_I32, 2, {1, kPages}, {kPages, 1}, FLASHATTN_CPU, 0};
  const flashattn_tensor tused = {&used, FLASHATTN_I32, 1, {1}, {1}, FLASHATTN_CPU, 0};
  const flashattn_tensor tpaged_out = view(paged_out, kHeads);
  flashattn_options paged = options;
  paged.block_table = &ttable;
  uint64_t bytes = 1;
  if (flashattn_forward_workspace_size(&tq, &tkp, &tvp, &tpaged_out, NULL, NULL, NULL, NULL, &tused,
                                       &paged, &bytes) != 0 || bytes != 0) {
    fprintf(stderr, "consumer_c: forward workspace size on the CPU: %s (%llu bytes)\n",
            flashattn_last_error(), (unsigned long long)bytes);
    return 1;
  }
  if (flashattn_forward(&tq, &tkp, &tvp, &tpaged_out, NULL, NULL, NULL, NULL, &tused, &paged) != 0) {
    fprintf(stderr, "consumer_c: paged forward failed: %s\n", flashattn_last_error());
    return 1;
  }
  for (int i = 0; i < kN; ++i) {
    if (!(fabsf(paged_out[i] - out[i]) <= 1e-5f)) {
      fprintf(stderr, "consumer_c: paged output %g at %d, contiguous %g\n", (double)paged_out[i],
              i, (double)out[i]);
      return 1;
    }
  }
  paged.num_splits = -1;
  if (flashattn_forward(&tq, &tkp, &tvp, &tpaged_out, NULL, NULL, NULL, NULL, &tused, &paged) == 0 ||
      strstr(flashattn_last_error(), "num_splits") == NULL) {
    fprintf(stderr, "consumer_c: num_splits -1 was not refused by name: %s\n",
            flashattn_last_error());
    return 1;
  }
  /* combine: a split that saw no keys (lse -inf) leaves the other's result. */
  static float partial[2 * kN], partial_lse[2 * kSeqlen * kHeads], merged[kN];
  for (int i = 0; i < kN; ++i) partial[i] = out[i], partial[kN + i] = 1e6f;
  for (int i = 0; i < kSeqlen * kHeads; ++i) partial_lse[i] = 0.5f, partial_lse[kSeqlen * kHeads + i] = -INFINITY;
  const flashattn_tensor top = {partial, FLASHATTN_F32, 4, {2, kSeqlen, kHeads, kHeadDim},
                                {kN, kHeads * kHeadDim, kHeadDim, 1}, FLASHATTN_CPU, 0};
  const flashattn_tensor tlp = {partial_lse, FLASHATTN_F32, 3, {2, kHeads, kSeqlen},
                                {kSeqlen * kHeads, kSeqlen, 1}, FLASHATTN_CPU, 0};
  const flashattn_tensor tmerged = {merged, FLASHATTN_F32, 3, {kSeqlen, kHeads, kHeadDim},
                                    {kHeads * kHeadDim, kHeadDim, 1}, FLASHATTN_CPU, 0};
  if (flashattn_combine(&top, &tlp, &tmerged, NULL, NULL) != 0) {
    fprintf(stderr, "consumer_c: combine failed: %s\n", flashattn_last_error());
    return 1;
  }
  for (int i = 0; i < kN; ++i) {
    if (!(fabsf(merged[i] - out[i]) <= 1e-6f * fabsf(out[i]) + 1e-7f)) {
      fprintf(stderr, "consumer_c: combined %g at %d, expected %g\n", (double)merged[i], i,
              (double)out[i]);
      return 1;
    }
  }
  printf("consumer_c: paged cache ok\nconsumer_c: combine ok\nconsumer_c: forward ok\n");
  return 0;
}
