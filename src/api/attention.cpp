// The public entry points: check every argument, then hand the params to one implementation.
#include "api/validate.h"
#include "cpu/attention_cpu.h"
#include "flashattn/flashattn.h"

#if FLASHATTN_WITH_CUDA
#include "cuda/api.h"
#endif

namespace flashattn {
namespace {

void cuda_forward([[maybe_unused]] const detail::AttentionParams& p,
                  [[maybe_unused]] const Workspace& workspace) {
#if FLASHATTN_WITH_CUDA
  detail::cuda::forward(p, workspace);
#else
  throw Error("flashattn::forward: argument 'q': tensors are on device cuda:" +
              std::to_string(p.device.index) + " but this build has no CUDA support");
#endif
}

void cuda_backward([[maybe_unused]] const detail::AttentionParams& p,
                   [[maybe_unused]] const Workspace& workspace) {
#if FLASHATTN_WITH_CUDA
  detail::cuda::backward(p, workspace);
#else
  throw Error("flashattn::backward: argument 'q': tensors are on device cuda:" +
              std::to_string(p.device.index) + " but this build has no CUDA support");
#endif
}

}  // namespace

void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
             const Tensor& lse, const Options& options) {
  const detail::AttentionParams p = detail::check_forward(q, k, v, out, lse, options);
  switch (p.device.type) {
    case DeviceType::cpu: return detail::cpu::forward(p);
    case DeviceType::cuda: return cuda_forward(p, options.workspace);
  }
  throw Error("flashattn::forward: argument 'q': unknown device type " +
              std::to_string(static_cast<int>(p.device.type)));
}

void backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
              const Tensor& dv, const Options& options) {
  const detail::AttentionParams p =
      detail::check_backward(dout, q, k, v, out, lse, dq, dk, dv, options);
  switch (p.device.type) {
    case DeviceType::cpu: return detail::cpu::backward(p);
    case DeviceType::cuda: return cuda_backward(p, options.workspace);
  }
  throw Error("flashattn::backward: argument 'q': unknown device type " +
              std::to_string(static_cast<int>(p.device.type)));
}

size_t forward_workspace_size(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Options& options) {
  const detail::AttentionParams p = detail::check_forward(q, k, v, out, lse, options);
  switch (p.device.type) {
    case DeviceType::cpu: return 0;
    case DeviceType::cuda:
#if FLASHATTN_WITH_CUDA
      return detail::cuda::forward_workspace_bytes(p);
#else
      cuda_forward(p, options.workspace);  // throws: no CUDA in this build
      return 0;
#endif
  }
  throw Error("flashattn::forward_workspace_size: argument 'q': unknown device type " +
              std::to_string(static_cast<int>(p.device.type)));
}

size_t backward_workspace_size(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Options& options) {
  const detail::AttentionParams p =
      detail::check_backward(dout, q, k, v, out, lse, dq, dk, dv, options);
  switch (p.device.type) {
    case DeviceType::cpu: return 0;
    case DeviceType::cuda:
#if FLASHATTN_WITH_CUDA
      return detail::cuda::backward_workspace_bytes(p);
#else
      cuda_backward(p, options.workspace);  // throws: no CUDA in this build
      return 0;
#endif
  }
  throw Error("flashattn::backward_workspace_size: argument 'q': unknown device type " +
              std::to_string(static_cast<int>(p.device.type)));
}

void combine(const Tensor& out_partial, const Tensor& lse_partial, const Tensor& out,
             const Tensor& lse, const Options& options) {
  const detail::CombineParams p =
      detail::check_combine(out_partial, lse_partial, out, lse, options);
  switch (p.device.type) {
    case DeviceType::cpu: return detail::cpu::combine(p);
    case DeviceType::cuda:
#if FLASHATTN_WITH_CUDA
      return detail::cuda::combine(p);
#else
      throw Error("flashattn::combine: argument 'out_partial': tensors are on device cuda:" +
                  std::to_string(p.device.index) + " but this build has no CUDA support");
#endif
  }
  throw Error("flashattn::combine: argument 'out_partial': unknown device type " +
              std::to_string(static_cast<int>(p.device.type)));
}

void release_workspace_pool() {
#if FLASHATTN_WITH_CUDA
  detail::cuda::release_workspace_pool();
#endif
}

}  // namespace flashattn
