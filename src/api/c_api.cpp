// The C ABI over the C++ API: translate the plain structs, catch every exception.
#include <cmath>
#include <exception>
#include <string>

#include "flashattn/flashattn.h"
#include "flashattn/flashattn_c.h"

namespace {

thread_local std::string last_error;

flashattn::Tensor to_tensor(const flashattn_tensor* t) {
  flashattn::Tensor r;
  if (t == nullptr) return r;
  if (t->rank < 0 || t->rank > flashattn::kMaxRank) {
    throw flashattn::Error("flashattn C API: a tensor has rank " + std::to_string(t->rank) +
                           ", expected 0.." + std::to_string(flashattn::kMaxRank));
  }
  if (t->dtype < FLASHATTN_F16 || t->dtype > FLASHATTN_F64) {
    throw flashattn::Error("flashattn C API: unknown dtype code " + std::to_string(t->dtype));
  }
  if (t->device_type != FLASHATTN_CPU && t->device_type != FLASHATTN_CUDA) {
    throw flashattn::Error("flashattn C API: unknown device type " + std::to_string(t->device_type));
  }
  r.data = t->data;
  r.dtype = static_cast<flashattn::DType>(t->dtype);
  r.rank = t->rank;
  for (int d = 0; d < t->rank; ++d) {
    r.shape[d] = t->shape[d];
    r.stride[d] = t->strides[d];
  }
  r.device = {t->device_type == FLASHATTN_CUDA ? flashattn::DeviceType::cuda
                                               : flashattn::DeviceType::cpu,
              t->device_id};
  return r;
}

std::optional<flashattn::Tensor> optional_tensor(const flashattn_tensor* t) {
  if (t == nullptr || t->rank == 0) return std::nullopt;
  return to_tensor(t);
}

flashattn::Options to_options(const flashattn_options* o, const flashattn_tensor* alibi,
                              const flashattn_tensor* cu_q, const flashattn_tensor* cu_k,
                              const flashattn_tensor* used_k) {
  flashattn_options defaults;
  flashattn_default_options(&defaults);
  if (o == nullptr) o = &defaults;
  flashattn::Options r;
  if (!std::isnan(o->softmax_scale)) r.softmax_scale = o->softmax_scale;
  r.causal = o->causal != 0;
  r.window_left = o->window_left;
  r.window_right = o->window_right;
  r.softcap = o->softcap;
  r.dropout_p = o->dropout_p;
  r.dropout_seed = o->dropout_seed;
  r.dropout_offset = o->dropout_offset;
  r.max_seqlen_q = o->max_seqlen_q;
  r.max_seqlen_k = o->max_seqlen_k;
  r.deterministic = o->deterministic != 0;
  r.num_threads = o->num_threads;
  r.stream = o->stream;
  r.workspace.data = o->workspace;
  r.workspace.bytes = static_cast<size_t>(o->workspace_bytes);
  r.workspace.zeroed = o->workspace_zeroed != 0;
  r.workspace.allocate = o->workspace_allocate;
  r.workspace.context = o->workspace_context;
  r.alibi_slopes = optional_tensor(alibi);
  r.cu_seqlens_q = optional_tensor(cu_q);
  r.cu_seqlens_k = optional_tensor(cu_k);
  r.seqused_k = optional_tensor(used_k);
  r.block_table = optional_tensor(o->block_table);
  r.num_splits = o->num_splits;
  r.leftpad_k = optional_tensor(o->leftpad_k);
  return r;
}

template <class Fn>
int guarded(Fn&& fn) {
  try {
    fn();
    last_error.clear();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "flashattn: unknown error";
  }
  return 1;
}

}  // namespace

extern "C" {

void flashattn_default_options(flashattn_options* o) {
  *o = flashattn_options{};
  o->softmax_scale = std::nan("");
  o->window_left = -1;
  o->window_right = -1;
}

int flashattn_forward(const flashattn_tensor* q, const flashattn_tensor* k,
                      const flashattn_tensor* v, const flashattn_tensor* out,
                      const flashattn_tensor* lse, const flashattn_tensor* alibi_slopes,
                      const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
                      const flashattn_tensor* seqused_k, const flashattn_options* options) {
  return guarded([&] {
    flashattn::forward(to_tensor(q), to_tensor(k), to_tensor(v), to_tensor(out), to_tensor(lse),
                       to_options(options, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k));
  });
}

int flashattn_backward(const flashattn_tensor* dout, const flashattn_tensor* q,
                       const flashattn_tensor* k, const flashattn_tensor* v,
                       const flashattn_tensor* out, const flashattn_tensor* lse,
                       const flashattn_tensor* dq, const flashattn_tensor* dk,
                       const flashattn_tensor* dv, const flashattn_tensor* alibi_slopes,
                       const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
                       const flashattn_tensor* seqused_k, const flashattn_options* options) {
  return guarded([&] {
    flashattn::backward(to_tensor(dout), to_tensor(q), to_tensor(k), to_tensor(v), to_tensor(out),
                        to_tensor(lse), to_tensor(dq), to_tensor(dk), to_tensor(dv),
                        to_options(options, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k));
  });
}

int flashattn_backward_workspace_size(
    const flashattn_tensor* dout, const flashattn_tensor* q, const flashattn_tensor* k,
    const flashattn_tensor* v, const flashattn_tensor* out, const flashattn_tensor* lse,
    const flashattn_tensor* dq, const flashattn_tensor* dk, const flashattn_tensor* dv,
    const flashattn_tensor* alibi_slopes, const flashattn_tensor* cu_seqlens_q,
    const flashattn_tensor* cu_seqlens_k, const flashattn_tensor* seqused_k,
    const flashattn_options* options, uint64_t* bytes) {
  return guarded([&] {
    if (bytes == nullptr) throw flashattn::Error("flashattn C API: argument 'bytes' is NULL");
    *bytes = flashattn::backward_workspace_size(
        to_tensor(dout), to_tensor(q), to_tensor(k), to_tensor(v), to_tensor(out), to_tensor(lse),
        to_tensor(dq), to_tensor(dk), to_tensor(dv),
        to_options(options, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k));
  });
}

int flashattn_forward_workspace_size(
    const flashattn_tensor* q, const flashattn_tensor* k, const flashattn_tensor* v,
    const flashattn_tensor* out, const flashattn_tensor* lse, const flashattn_tensor* alibi_slopes,
    const flashattn_tensor* cu_seqlens_q, const flashattn_tensor* cu_seqlens_k,
    const flashattn_tensor* seqused_k, const flashattn_options* options, uint64_t* bytes) {
  return guarded([&] {
    if (bytes == nullptr) throw flashattn::Error("flashattn C API: argument 'bytes' is NULL");
    *bytes = flashattn::forward_workspace_size(
        to_tensor(q), to_tensor(k), to_tensor(v), to_tensor(out), to_tensor(lse),
        to_options(options, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k));
  });
}

int flashattn_combine(const flashattn_tensor* out_partial, const flashattn_tensor* lse_partial,
                      const flashattn_tensor* out, const flashattn_tensor* lse,
                      const flashattn_options* options) {
  return guarded([&] {
    flashattn::combine(to_tensor(out_partial), to_tensor(lse_partial), to_tensor(out),
                       to_tensor(lse), to_options(options, nullptr, nullptr, nullptr, nullptr));
  });
}

int flashattn_release_workspace_pool(void) {
  return guarded([] { flashattn::release_workspace_pool(); });
}

const char* flashattn_last_error(void) { return last_error.c_str(); }

}  // extern "C"
