// flashattn._ext: the C++ API for Python, through nanobind. Tensors cross as DLPack (nb::ndarray),
// so this module needs no PyTorch headers: it takes torch tensors, NumPy arrays, or anything else
// that implements __dlpack__, on the CPU or on a CUDA device. The torch layer (custom ops,
// autograd, the drop-in API) is Python: see ops.py and interface.py.
//
// Every tensor argument is a strided view of the caller's memory: nothing is copied, outputs are
// written in place. flashattn::Error becomes flashattn.FlashAttnError (a RuntimeError) carrying
// the library's message.
#include <cstdint>
#include <optional>
#include <string>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "flashattn/flashattn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Any dtype, shape and device. Inputs are read-only views (the cheaper DLPack export); outputs are
// written, so a read-only NumPy array is refused as an output.
using Array = nb::ndarray<nb::ro>;
using OutArray = nb::ndarray<>;

std::string dlpack_dtype_name(const nb::dlpack::dtype& t) {
  std::string code;
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: code = "int"; break;
    case nb::dlpack::dtype_code::UInt: code = "uint"; break;
    case nb::dlpack::dtype_code::Float: code = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: code = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: code = "complex"; break;
    case nb::dlpack::dtype_code::Bool: code = "bool"; break;
    default: code = "code" + std::to_string(t.code) + "_"; break;
  }
  std::string name = code + std::to_string(t.bits);
  if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
  return name;
}

// The dtypes an argument takes, for the message about one that no argument takes.
const char* dtypes_taken(const char* name) {
  const std::string arg(name);
  if (arg.rfind("cu_seqlens", 0) == 0 || arg == "seqused_k" || arg == "leftpad_k" ||
      arg == "block_table") {
    return "int32 (torch.cumsum returns int64: convert with .int())";
  }
  if (arg == "alibi_slopes" || arg == "lse") return "float32 (float64 with float64 inputs)";
  return "float16 or bfloat16 (float32 and float64 on the CPU)";
}

flashattn::DType to_dtype(const nb::dlpack::dtype& t, const char* name) {
  using C = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    const auto code = static_cast<C>(t.code);
    if (code == C::Float && t.bits == 16) return flashattn::DType::f16;
    if (code == C::Bfloat && t.bits == 16) return flashattn::DType::bf16;
    if (code == C::Float && t.bits == 32) return flashattn::DType::f32;
    if (code == C::Float && t.bits == 64) return flashattn::DType::f64;
    if (code == C::Int && t.bits == 32) return flashattn::DType::i32;
  }
  throw flashattn::Error(std::string("flashattn: argument '") + name + "': dtype " +
                         dlpack_dtype_name(t) + " is not supported, expected " +
                         dtypes_taken(name));
}

template <class A>
flashattn::Device to_device(const A& a, const char* name) {
  const int type = a.device_type();
  if (type == nb::device::cpu::value) return {flashattn::DeviceType::cpu, 0};
  if (type == nb::device::cuda::value) return {flashattn::DeviceType::cuda, a.device_id()};
  throw flashattn::Error(std::string("flashattn: argument '") + name + "': DLPack device type " +
                         std::to_string(type) + " is not supported (cpu or cuda)");
}

// A DLPack array as a flashattn::Tensor view (shape and strides in elements, as DLPack gives).
template <class A>
flashattn::Tensor to_tensor(const A& a, const char* name) {
  flashattn::Tensor t;
  const size_t rank = a.ndim();
  if (rank < 1 || rank > static_cast<size_t>(flashattn::kMaxRank)) {
    throw flashattn::Error(std::string("flashattn: argument '") + name + "': rank " +
                           std::to_string(rank) + " is not supported (1.." +
                           std::to_string(flashattn::kMaxRank) + ")");
  }
  t.data = const_cast<void*>(a.data());
  t.dtype = to_dtype(a.dtype(), name);
  t.rank = static_cast<int>(rank);
  for (size_t d = 0; d < rank; ++d) {
    t.shape[d] = static_cast<int64_t>(a.shape(d));
    t.stride[d] = a.stride(d);
  }
  t.device = to_device(a, name);
  return t;
}

std::optional<flashattn::Tensor> to_optional(const std::optional<Array>& a, const char* name) {
  if (!a) return std::nullopt;
  return to_tensor(*a, name);
}

// The options of a call: the names and order of the module's arguments after the tensors (one
// list for forward and backward; flashattn::Options says what each one means).
struct CallOptions {
  std::optional<double> softmax_scale;
  bool causal;
  int window_left, window_right;
  float softcap;
  std::optional<Array> alibi_slopes;
  float dropout_p;
  uint64_t dropout_seed, dropout_offset;
  std::optional<Array> cu_seqlens_q, cu_seqlens_k, seqused_k;
  int64_t max_seqlen_q, max_seqlen_k;
  bool deterministic;
  int num_threads;
  uintptr_t stream;
  std::optional<Array> block_table;  // forward only
  int num_splits;                    // forward only
  std::optional<Array> leftpad_k;    // forward only

  flashattn::Options to_options() const {
    flashattn::Options o;
    o.softmax_scale = softmax_scale;
    o.causal = causal;
    o.window_left = window_left;
    o.window_right = window_right;
    o.softcap = softcap;
    o.alibi_slopes = to_optional(alibi_slopes, "alibi_slopes");
    o.dropout_p = dropout_p;
    o.dropout_seed = dropout_seed;
    o.dropout_offset = dropout_offset;
    o.cu_seqlens_q = to_optional(cu_seqlens_q, "cu_seqlens_q");
    o.cu_seqlens_k = to_optional(cu_seqlens_k, "cu_seqlens_k");
    o.seqused_k = to_optional(seqused_k, "seqused_k");
    o.max_seqlen_q = max_seqlen_q;
    o.max_seqlen_k = max_seqlen_k;
    o.deterministic = deterministic;
    o.num_threads = num_threads;
    o.stream = reinterpret_cast<void*>(stream);
    o.block_table = to_optional(block_table, "block_table");
    o.num_splits = num_splits;
    o.leftpad_k = to_optional(leftpad_k, "leftpad_k");
    return o;
  }
};

// The GIL is let go for CPU work (it may run for seconds on all cores), and kept for the CUDA
// kernels, which only enqueue (releasing and taking it back would cost more than the launch).
struct ReleaseGilOnCpu {
  explicit ReleaseGilOnCpu(const flashattn::Tensor& q) {
    if (q.device.type == flashattn::DeviceType::cpu) state_ = PyEval_SaveThread();
  }
  ~ReleaseGilOnCpu() {
    if (state_ != nullptr) PyEval_RestoreThread(state_);
  }
  ReleaseGilOnCpu(const ReleaseGilOnCpu&) = delete;
  ReleaseGilOnCpu& operator=(const ReleaseGilOnCpu&) = delete;

 private:
  PyThreadState* state_ = nullptr;
};

// The workspace (split forward, backward): a device buffer given as (address, bytes), used when
// it is large enough (Workspace::data), and a Python callable, allocate(nbytes), for a call that
// needs more: it returns an object with data_ptr() (a torch tensor from PyTorch's caching
// allocator, say), which is kept alive until the call returns; the allocator's stream semantics
// cover the kernels enqueued before that. Neither: the library's own pool.
struct PyWorkspace {
  nb::object allocate;
  nb::object held;

  PyWorkspace(const std::optional<nb::object>& callable, uintptr_t buffer, size_t buffer_bytes,
              bool buffer_zeroed, flashattn::Options& options) {
    if (buffer != 0) {
      options.workspace.data = reinterpret_cast<void*>(buffer);
      options.workspace.bytes = buffer_bytes;
      options.workspace.zeroed = buffer_zeroed;
    }
    if (!callable || callable->is_none()) return;
    allocate = *callable;
    options.workspace.allocate = &PyWorkspace::call;
    options.workspace.context = this;
  }
  PyWorkspace(const PyWorkspace&) = delete;
  PyWorkspace& operator=(const PyWorkspace&) = delete;

  static void* call(size_t bytes, void* context) {
    auto* self = static_cast<PyWorkspace*>(context);
    const nb::gil_scoped_acquire gil;
    self->held = self->allocate(bytes);
    return reinterpret_cast<void*>(nb::cast<uintptr_t>(self->held.attr("data_ptr")()));
  }
};

void forward(const Array& q, const Array& k, const Array& v, const OutArray& out,
             const std::optional<OutArray>& lse, std::optional<double> softmax_scale, bool causal,
             int window_left, int window_right, float softcap,
             const std::optional<Array>& alibi_slopes, float dropout_p, uint64_t dropout_seed,
             uint64_t dropout_offset, const std::optional<Array>& cu_seqlens_q,
             const std::optional<Array>& cu_seqlens_k, const std::optional<Array>& seqused_k,
             int64_t max_seqlen_q, int64_t max_seqlen_k, int num_threads, uintptr_t stream,
             const std::optional<Array>& block_table, int num_splits,
             const std::optional<nb::object>& workspace, const std::optional<Array>& leftpad_k,
             uintptr_t workspace_buffer, size_t workspace_bytes, bool workspace_zeroed) {
  const CallOptions call{softmax_scale, causal,       window_left,  window_right,  softcap,
                         alibi_slopes,  dropout_p,    dropout_seed, dropout_offset, cu_seqlens_q,
                         cu_seqlens_k,  seqused_k,    max_seqlen_q, max_seqlen_k,  false,
                         num_threads,   stream,       block_table,  num_splits,
                         leftpad_k};
  flashattn::Options options = call.to_options();
  PyWorkspace py_workspace(workspace, workspace_buffer, workspace_bytes, workspace_zeroed, options);
  const flashattn::Tensor tq = to_tensor(q, "q"), tk = to_tensor(k, "k"), tv = to_tensor(v, "v"),
                          to = to_tensor(out, "out");
  const flashattn::Tensor tl = lse ? to_tensor(*lse, "lse") : flashattn::Tensor{};
  const ReleaseGilOnCpu release(tq);
  flashattn::forward(tq, tk, tv, to, tl, options);
}

void backward(const Array& dout, const Array& q, const Array& k, const Array& v, const Array& out,
              const Array& lse, const OutArray& dq, const OutArray& dk, const OutArray& dv,
              std::optional<double> softmax_scale, bool causal, int window_left, int window_right,
              float softcap, const std::optional<Array>& alibi_slopes, float dropout_p,
              uint64_t dropout_seed, uint64_t dropout_offset,
              const std::optional<Array>& cu_seqlens_q, const std::optional<Array>& cu_seqlens_k,
              const std::optional<Array>& seqused_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
              bool deterministic, int num_threads, uintptr_t stream,
              const std::optional<nb::object>& workspace) {
  const CallOptions call{softmax_scale, causal,       window_left,  window_right,  softcap,
                         alibi_slopes,  dropout_p,    dropout_seed, dropout_offset, cu_seqlens_q,
                         cu_seqlens_k,  seqused_k,    max_seqlen_q, max_seqlen_k,  deterministic,
                         num_threads,   stream,       std::nullopt, 0,
                         std::nullopt};
  flashattn::Options options = call.to_options();
  PyWorkspace py_workspace(workspace, 0, 0, false, options);
  const flashattn::Tensor tdo = to_tensor(dout, "dout"), tq = to_tensor(q, "q"),
                          tk = to_tensor(k, "k"), tv = to_tensor(v, "v"),
                          to = to_tensor(out, "out"), tl = to_tensor(lse, "lse"),
                          tdq = to_tensor(dq, "dq"), tdk = to_tensor(dk, "dk"),
                          tdv = to_tensor(dv, "dv");
  const ReleaseGilOnCpu release(tq);
  flashattn::backward(tdo, tq, tk, tv, to, tl, tdq, tdk, tdv, options);
}

void combine(const Array& out_partial, const Array& lse_partial, const OutArray& out,
             const std::optional<OutArray>& lse, int num_threads, uintptr_t stream) {
  flashattn::Options options;
  options.num_threads = num_threads;
  options.stream = reinterpret_cast<void*>(stream);
  const flashattn::Tensor top = to_tensor(out_partial, "out_partial"),
                          tlp = to_tensor(lse_partial, "lse_partial"), to = to_tensor(out, "out");
  const flashattn::Tensor tl = lse ? to_tensor(*lse, "lse") : flashattn::Tensor{};
  const ReleaseGilOnCpu release(top);
  flashattn::combine(top, tlp, to, tl, options);
}

}  // namespace

NB_MODULE(_ext, m) {
  m.doc() = "flashattn: exact attention (FlashAttention-2), the C++ API over DLPack tensors";
  m.attr("__version__") = FLASHATTN_VERSION;

  // flashattn::Error -> flashattn.FlashAttnError, a RuntimeError with the library's message;
  // flashattn::LayoutError -> its subclass LayoutError (the torch layer then copies the tensors).
  static nb::exception<flashattn::Error> error(m, "FlashAttnError", PyExc_RuntimeError);
  static nb::exception<flashattn::LayoutError> layout_error(m, "LayoutError", error.ptr());

  // The arguments after the tensors may be given by position too (in this order): the torch
  // layer does, since nanobind matches positional arguments faster than keywords.
  m.def("forward", &forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a.none() = nb::none(),
        "softmax_scale"_a.none() = nb::none(), "causal"_a = false,
        "window_left"_a = -1, "window_right"_a = -1, "softcap"_a = 0.0f,
        "alibi_slopes"_a.none() = nb::none(), "dropout_p"_a = 0.0f, "dropout_seed"_a = 0,
        "dropout_offset"_a = 0, "cu_seqlens_q"_a.none() = nb::none(),
        "cu_seqlens_k"_a.none() = nb::none(), "seqused_k"_a.none() = nb::none(),
        "max_seqlen_q"_a = 0, "max_seqlen_k"_a = 0, "num_threads"_a = 0, "stream"_a = 0,
        "block_table"_a.none() = nb::none(), "num_splits"_a = 0, "workspace"_a.none() = nb::none(),
        "leftpad_k"_a.none() = nb::none(), "workspace_buffer"_a = 0, "workspace_bytes"_a = 0,
        "workspace_zeroed"_a = false,
        "Writes out (and lse, if given): attention of q over k, v. Shapes as in flashattn.h:\n"
        "q (batch, seqlen_q, heads_q, d), k/v (batch, seqlen_k, heads_kv, d[_v]),\n"
        "out (batch, seqlen_q, heads_q, d_v), lse fp32 (fp64 for fp64 inputs)\n"
        "(batch, heads_q, seqlen_q); varlen\n"
        "(cu_seqlens_q/k given): q (total_q, heads_q, d), ..., lse (heads_q, total_q).\n"
        "stream: a cudaStream_t as an integer (0: the default stream).\n"
        "block_table: int32 (batch, max_pages): k/v are a paged cache (num_pages, page_size,\n"
        "heads_kv, d[_v]) (flashattn.h, Options::block_table).\n"
        "num_splits: splits of the keys (0: the library picks, 1: none; Options::num_splits).\n"
        "workspace: None (CUDA scratch from the library's own pool) or a callable\n"
        "allocate(nbytes) -> object with data_ptr(), for the split partials.\n"
        "leftpad_k: int32 (batch): sequence b's keys start at row leftpad_k[b]\n"
        "(Options::leftpad_k).\n"
        "workspace_buffer, workspace_bytes: a device buffer (address, size) for the split\n"
        "partials, used when large enough; else `workspace` (Workspace::data and allocate).\n"
        "workspace_zeroed: the buffer was zero-filled when allocated and has been the scratch of\n"
        "this library's forward calls only since (Workspace::zeroed).");
  m.def("backward", &backward, "dout"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dq"_a, "dk"_a,
        "dv"_a, "softmax_scale"_a.none() = nb::none(), "causal"_a = false,
        "window_left"_a = -1, "window_right"_a = -1, "softcap"_a = 0.0f,
        "alibi_slopes"_a.none() = nb::none(), "dropout_p"_a = 0.0f, "dropout_seed"_a = 0,
        "dropout_offset"_a = 0, "cu_seqlens_q"_a.none() = nb::none(),
        "cu_seqlens_k"_a.none() = nb::none(), "seqused_k"_a.none() = nb::none(),
        "max_seqlen_q"_a = 0, "max_seqlen_k"_a = 0, "deterministic"_a = false,
        "num_threads"_a = 0, "stream"_a = 0, "workspace"_a.none() = nb::none(),
        "Writes dq, dk, dv: the gradients of forward() with the same options.\n"
        "workspace: None (CUDA scratch from the library's own pool) or a callable\n"
        "allocate(nbytes) -> object with data_ptr(), a device buffer kept until the call returns.");
  m.def("combine", &combine, "out_partial"_a, "lse_partial"_a, "out"_a,
        "lse"_a.none() = nb::none(), "num_threads"_a = 0, "stream"_a = 0,
        "Writes out (and lse, if given): attention over the union of disjoint sets of keys from\n"
        "each set's out_partial fp32 (splits, rows, heads, d) and lse_partial fp32\n"
        "(splits, heads, rows); out (rows, heads, d), lse fp32 (heads, rows) (flashattn.h,\n"
        "combine()).");
  m.def("release_workspace_pool", &flashattn::release_workspace_pool,
        "Hands the memory of the library's own workspace pools back to the driver.");

  m.def("dropout_keep", &flashattn::dropout_keep, "seed"_a, "offset"_a, "dropout_p"_a,
        "batch_idx"_a, "head_idx"_a, "heads_q"_a, "row"_a, "col"_a,
        "Whether dropout keeps element (batch_idx, head_idx, row, col) (docs/dropout.md).");
  m.def("dropout_offset_increment", &flashattn::dropout_offset_increment, "batch"_a, "heads_q"_a);
  m.def("cuda_compiled", &flashattn::cuda_compiled,
        "Whether the library was built with its CUDA kernels.");
  m.def("cuda_device_count", &flashattn::cuda_device_count);
}
