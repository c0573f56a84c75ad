/* Uses the installed C ABI (flashattn::flashattn_c, a shared library) from C: a small forward
 * must succeed with finite output, and a bad argument must fail with a message. */
#include <flashattn/flashattn_c.h>
#include <math.h>
#include <stdio.h>

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
  printf("consumer_c: bad argument rejected: %s\nconsumer_c: forward ok\n", flashattn_last_error());
  return 0;
}
