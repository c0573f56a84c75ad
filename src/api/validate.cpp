#include "api/validate.h"

#include "common/device_memory.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace flashattn::detail {
namespace {

constexpr int64_t kMaxHeadDim = 256;
constexpr int64_t kMaxSeqlen = (int64_t{1} << 31) - 1;  // int32 offsets; the dropout counter

std::string shape_str(const Tensor& t) {
  std::ostringstream s;
  s << '(';
  for (int d = 0; d < t.rank; ++d) s << (d ? ", " : "") << t.shape[d];
  s << ')';
  return s.str();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '(';
  for (size_t d = 0; d < shape.size(); ++d) s << (d ? ", " : "") << shape[d];
  s << ')';
  return s.str();
}

const char* device_name(DeviceType t) { return t == DeviceType::cpu ? "cpu" : "cuda"; }

std::string device_str(const Device& d) {
  return std::string(device_name(d.type)) + ":" + std::to_string(d.index);
}

// Collects the checks of one call, so that every message starts with the function's name.
class Checker {
 public:
  explicit Checker(const char* fn) : fn_(fn) {}

  template <class E = Error>
  [[noreturn]] void fail(std::string_view arg, const std::string& what) const {
    throw E(std::string(fn_) + ": argument '" + std::string(arg) + "': " + what);
  }

  // `what`: the message, as text or as a callable that builds it. A call runs some forty checks,
  // so messages that take work are built only when a check fails.
  template <class What>
  void require(bool ok, std::string_view arg, const What& what) const {
    if (ok) return;
    if constexpr (std::is_invocable_v<const What&>) {
      fail(arg, what());
    } else {
      fail(arg, std::string(what));
    }
  }

  // A tensor that must be there, with this rank, dtype and device; last dimension contiguous.
  // (The checks below build their messages only on failure: a call runs some forty of them.)
  void tensor(const Tensor& t, std::string_view name, int rank, const char* dims,
              const Device& device) const {
    if (!t.defined()) {
      fail(name, std::string("required tensor is missing (expected rank ") +
                     std::to_string(rank) + " " + dims + ")");
    }
    if (t.rank != rank) {
      fail(name, "expected rank " + std::to_string(rank) + " " + dims + ", got rank " +
                     std::to_string(t.rank) + " with shape " + shape_str(t));
    }
    for (int d = 0; d < t.rank; ++d) {
      if (t.shape[d] < 0) fail(name, "negative size in shape " + shape_str(t));
    }
    if (!(t.device == device)) {
      fail(name, "expected device " + device_str(device) + " (that of q), got " +
                     device_str(t.device));
    }
    if (t.shape[rank - 1] > 1 && t.stride[rank - 1] != 1) {
      fail<LayoutError>(name, "the last dimension must be contiguous (stride 1), got stride " +
                     std::to_string(t.stride[rank - 1]));
    }
    if (t.data == nullptr && t.numel() != 0) fail(name, "data pointer is null");
  }

  void dtype(const Tensor& t, std::string_view name, DType expected, const char* why) const {
    if (t.dtype != expected) {
      fail(name, std::string("expected dtype ") + dtype_name(expected) + " (" + why + "), got " +
                     dtype_name(t.dtype));
    }
  }

  void shape(const Tensor& t, std::string_view name, const int64_t* expected, int rank,
             const char* dims) const {
    bool same = t.rank == rank;
    for (int d = 0; same && d < t.rank; ++d) same = t.shape[d] == expected[d];
    if (!same) {
      fail(name, "expected shape " + shape_str(std::vector<int64_t>(expected, expected + rank)) +
                     " " + dims + ", got " + shape_str(t));
    }
  }
  void shape(const Tensor& t, std::string_view name, std::initializer_list<int64_t> expected,
             const char* dims) const {
    shape(t, name, expected.begin(), static_cast<int>(expected.size()), dims);
  }

  // Outputs are written by many threads: no two elements may share an address.
  void writable(const Tensor& t, std::string_view name) const {
    if (t.numel() == 0) return;  // nothing to write, nothing to alias (NumPy gives such stride 0)
    for (int d = 0; d < t.rank; ++d) {
      if (t.shape[d] > 1 && t.stride[d] == 0) {
        fail(name, "an output may not have stride 0 (dimension " + std::to_string(d) +
                       " of shape " + shape_str(t) + ")");
      }
    }
  }

  // An int32 vector (cu_seqlens, seqused_k). Its values, read on the host (a copy for device
  // memory) when `read`, or nothing: not asked for, or not readable now (a CUDA stream being
  // captured).
  std::optional<std::vector<int64_t>> int_vector(const Tensor& t, std::string_view name,
                                                 int64_t length, const Device& device,
                                                 void* stream, bool read) const {
    tensor(t, name, 1, "(length)", device);
    dtype(t, name, DType::i32, "sequence lengths are int32");
    require(t.shape[0] == length, name,
            [&] { return "expected length " + std::to_string(length) + ", got " + std::to_string(t.shape[0]); });
    require(t.shape[0] <= 1 || t.stride[0] == 1, name, "must be contiguous (stride 1)");
    if (!read) return std::nullopt;
    std::vector<int32_t> raw(static_cast<size_t>(length));
    if (device.type == DeviceType::cpu) {
      const auto* p = static_cast<const int32_t*>(t.data);
      std::copy(p, p + length, raw.begin());
    } else if (!read_device_int32(raw.data(), static_cast<const int32_t*>(t.data), length,
                                  device.index, stream)) {
      return std::nullopt;
    }
    return std::vector<int64_t>(raw.begin(), raw.end());
  }

 private:
  const char* fn_;
};

OperandStrides strides_of(const Tensor& t, bool varlen) {
  if (varlen) return OperandStrides{0, t.stride[0], t.stride[1]};
  return OperandStrides{t.stride[0], t.stride[1], t.stride[2]};
}

// Checks q, k, v, the options, and (if given) out and lse; fills the params.
AttentionParams check_common(const Checker& c, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& out, const Tensor& lse, bool lse_required,
                             const Options& o) {
  AttentionParams p;
  c.require(q.defined(), "q", "required tensor is missing");
  const Device dev = q.device;
  c.require(dev.type == DeviceType::cpu || dev.type == DeviceType::cuda, "q",
            [&] { return "unknown device type " + std::to_string(static_cast<int>(dev.type)); });
  c.require(q.dtype == DType::f16 || q.dtype == DType::bf16 || q.dtype == DType::f32 ||
                q.dtype == DType::f64,
            "q",
            [&] { return std::string("expected dtype float16, bfloat16, float32 or float64, got ") +
                dtype_name(q.dtype); });
  c.require(dev.type != DeviceType::cuda || q.dtype == DType::f16 || q.dtype == DType::bf16, "q",
            [&] { return "on device " + device_str(dev) + " the CUDA kernels take float16 or bfloat16, got " +
                dtype_name(q.dtype) + " (float32 and float64 run on the CPU)"; });

  // Varlen: both cu_seqlens or neither.
  c.require(o.cu_seqlens_q.has_value() == o.cu_seqlens_k.has_value(),
            o.cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q",
            "varlen needs both cu_seqlens_q and cu_seqlens_k, got only one");
  const bool varlen = o.cu_seqlens_q.has_value();
  const bool paged = o.block_table.has_value();
  const int rank = varlen ? 3 : 4;
  const int k_rank = varlen && !paged ? 3 : 4;  // a paged cache is 4-d, varlen or not
  const char* q_dims = varlen ? "[total_q, heads_q, head_dim]" : "[batch, seqlen_q, heads_q, head_dim]";
  const char* k_dims = paged    ? "[num_pages, page_size, heads_kv, head_dim]"
                      : varlen ? "[total_k, heads_kv, head_dim]"
                               : "[batch, seqlen_k, heads_kv, head_dim]";
  const char* v_dims = paged    ? "[num_pages, page_size, heads_kv, head_dim_v]"
                      : varlen ? "[total_k, heads_kv, head_dim_v]"
                               : "[batch, seqlen_k, heads_kv, head_dim_v]";
  c.tensor(q, "q", rank, q_dims, dev);
  c.tensor(k, "k", k_rank, k_dims, dev);
  c.tensor(v, "v", k_rank, v_dims, dev);
  c.dtype(k, "k", q.dtype, "that of q");
  c.dtype(v, "v", q.dtype, "that of q");

  const int hd = rank - 2, hdk = k_rank - 2;  // index of the heads dimension: q, k/v
  p.is_varlen = varlen;
  p.dtype = q.dtype;
  p.device = dev;
  p.heads_q = q.shape[hd];
  p.heads_kv = k.shape[hdk];
  p.head_dim = q.shape[hd + 1];
  p.head_dim_v = v.shape[hdk + 1];
  c.require(p.head_dim >= 1 && p.head_dim <= kMaxHeadDim, "q",
            [&] { return "head_dim must be in [1, " + std::to_string(kMaxHeadDim) + "], got " +
                std::to_string(p.head_dim); });
  c.require(p.head_dim_v >= 1 && p.head_dim_v <= kMaxHeadDim, "v",
            [&] { return "head_dim_v must be in [1, " + std::to_string(kMaxHeadDim) + "], got " +
                std::to_string(p.head_dim_v); });
  c.require(k.shape[hdk + 1] == p.head_dim, "k",
            [&] { return "head_dim must equal that of q (" + std::to_string(p.head_dim) + "), got " +
                std::to_string(k.shape[hdk + 1]); });
  c.require(p.heads_q >= 1, "q", [&] { return "heads_q must be ≥ 1, got " + std::to_string(p.heads_q); });
  c.require(p.heads_kv >= 1, "k", [&] { return "heads_kv must be ≥ 1, got " + std::to_string(p.heads_kv); });
  c.require(p.heads_q % p.heads_kv == 0, "k",
            [&] { return "heads_q (" + std::to_string(p.heads_q) + ") must be a multiple of heads_kv (" +
                std::to_string(p.heads_kv) + ")"; });
  c.require(v.shape[hdk] == p.heads_kv, "v",
            [&] { return "heads_kv must equal that of k (" + std::to_string(p.heads_kv) + "), got " +
                std::to_string(v.shape[hdk]); });
  c.require(v.shape[0] == k.shape[0] && (k_rank == 3 || v.shape[1] == k.shape[1]), "v",
            [&] { return "expected the leading dimensions of k " + shape_str(k) + ", got " + shape_str(v); });
  p.group = p.heads_q / p.heads_kv;

  std::vector<int64_t> k_lengths;  // varlen: seqlen_k of each sequence, where readable
  if (varlen) {
    const int64_t batch = o.cu_seqlens_q->shape[0] - 1;
    c.require(o.cu_seqlens_q->rank == 1 && batch >= 0, "cu_seqlens_q",
              [&] { return "expected a vector of length batch + 1 ≥ 1, got shape " + shape_str(*o.cu_seqlens_q); });
    p.batch = batch;
    // On CUDA, bounds given are trusted: no copy to the host, no wait for the stream.
    const bool read = dev.type == DeviceType::cpu || o.max_seqlen_q <= 0 || o.max_seqlen_k <= 0;
    const auto cq = c.int_vector(*o.cu_seqlens_q, "cu_seqlens_q", batch + 1, dev, o.stream, read);
    const auto ck = c.int_vector(*o.cu_seqlens_k, "cu_seqlens_k", batch + 1, dev, o.stream, read);
    c.require(o.max_seqlen_q >= 0, "max_seqlen_q", [&] { return "must be ≥ 0, got " + std::to_string(o.max_seqlen_q); });
    c.require(o.max_seqlen_k >= 0, "max_seqlen_k", [&] { return "must be ≥ 0, got " + std::to_string(o.max_seqlen_k); });
    p.seqlen_q = o.max_seqlen_q;
    p.seqlen_k = o.max_seqlen_k;
    if (cq && ck) {
      const std::pair<const std::vector<int64_t>*, const char*> lists[] = {{&*cq, "cu_seqlens_q"},
                                                                           {&*ck, "cu_seqlens_k"}};
      for (const auto& [cu, name] : lists) {
        const bool is_q = cu == &*cq;
        // (A paged cache's sequences are bounded by the block table, below.)
        const int64_t total = is_q || !paged ? (is_q ? q : k).shape[0] : INT64_MAX;
        c.require((*cu)[0] == 0, name, [&] { return "must start at 0, got " + std::to_string((*cu)[0]); });
        for (int64_t b = 0; b < batch; ++b) {
          const int64_t len = (*cu)[b + 1] - (*cu)[b];
          c.require(len >= 0, name,
                    [&] { return "must be non-decreasing, got " + std::to_string((*cu)[b]) + " then " +
                        std::to_string((*cu)[b + 1]) + " at index " + std::to_string(b); });
          int64_t& max_len = is_q ? p.seqlen_q : p.seqlen_k;
          const int64_t given = is_q ? o.max_seqlen_q : o.max_seqlen_k;
          c.require(given == 0 || len <= given, is_q ? "max_seqlen_q" : "max_seqlen_k",
                    [&] { return "is " + std::to_string(given) + " but sequence " + std::to_string(b) +
                        " has length " + std::to_string(len); });
          if (len > max_len) max_len = len;
        }
        c.require((*cu)[batch] <= total, name,
                  [&] { return "last value " + std::to_string((*cu)[batch]) +
                      " exceeds the packed length " + std::to_string(total) + " of " +
                      (is_q ? "q" : "k"); });
      }
      for (int64_t b = 0; b < batch; ++b) {
        k_lengths.push_back((*ck)[b + 1] - (*ck)[b]);
      }
    } else {
      // Values not read (trusted bounds, or stream capture): the caller's bounds size the work.
      c.require(o.max_seqlen_q > 0 || batch == 0, "max_seqlen_q",
                "required (> 0) when cu_seqlens cannot be read on the host (stream capture)");
      c.require(o.max_seqlen_k > 0 || batch == 0, "max_seqlen_k",
                "required (> 0) when cu_seqlens cannot be read on the host (stream capture)");
    }
    p.cu_seqlens_q = static_cast<const int32_t*>(o.cu_seqlens_q->data);
    p.cu_seqlens_k = static_cast<const int32_t*>(o.cu_seqlens_k->data);
    p.total_q = q.shape[0];
    p.total_k = paged ? 0 : k.shape[0];
  } else {
    p.batch = q.shape[0];
    p.seqlen_q = q.shape[1];
    p.seqlen_k = k.shape[1];
    if (!paged) {
      c.require(k.shape[0] == p.batch, "k", [&] {
        return "batch must equal that of q (" + std::to_string(p.batch) + "), got " +
               std::to_string(k.shape[0]);
      });
    }
    c.require(o.max_seqlen_q == 0, "max_seqlen_q",
              [&] { return "is for varlen batches only (cu_seqlens_q given), got " + std::to_string(o.max_seqlen_q); });
    c.require(o.max_seqlen_k == 0, "max_seqlen_k",
              [&] { return "is for varlen batches only (cu_seqlens_k given), got " + std::to_string(o.max_seqlen_k); });
  }
  if (paged) {
    // k and v: (num_pages, page_size, heads_kv, d); row j of sequence b is row j % page_size of
    // page block_table[b][j / page_size]. A padded batch's seqlen_k is the table's capacity; a
    // varlen batch's sequences (cu_seqlens_k) must fit in it.
    const Tensor& t = *o.block_table;
    c.tensor(t, "block_table", 2, "[batch, max_pages_per_seq]", dev);
    c.dtype(t, "block_table", DType::i32, "page indices are int32");
    c.require(t.shape[0] == p.batch, "block_table", [&] {
      return "expected " + std::to_string(p.batch) + " rows (the batch of q), got shape " +
             shape_str(t);
    });
    const int64_t pages = k.shape[0];
    p.page_size = k.shape[1];
    c.require(p.page_size >= 1, "k", "a paged cache needs page_size (dimension 1) ≥ 1");
    const int64_t capacity = t.shape[1] * p.page_size;
    if (varlen) {
      c.require(p.seqlen_k <= capacity, "block_table", [&] {
        return "holds " + std::to_string(t.shape[1]) + " pages of " + std::to_string(p.page_size) +
               " rows a sequence, but a sequence has " + std::to_string(p.seqlen_k) +
               " keys (cu_seqlens_k, max_seqlen_k)";
      });
    } else {
      p.seqlen_k = capacity;
    }
    p.num_pages = pages;
    p.block_table = static_cast<const int32_t*>(t.data);
    p.block_table_stride = t.stride[0];
    if (dev.type == DeviceType::cpu) {
      for (int64_t b = 0; b < t.shape[0]; ++b) {
        for (int64_t i = 0; i < t.shape[1]; ++i) {
          const int64_t page = p.block_table[b * p.block_table_stride + i];
          c.require(page >= 0 && page < pages, "block_table", [&] {
            return "entry (" + std::to_string(b) + ", " + std::to_string(i) + ") is " +
                   std::to_string(page) + ", expected a page of k in [0, " +
                   std::to_string(pages) + ")";
          });
        }
      }
    }
  }
  c.require(p.seqlen_q <= kMaxSeqlen, "q", "seqlen_q must be < 2^31");
  c.require(p.seqlen_k <= kMaxSeqlen, "k", "seqlen_k must be < 2^31");

  // Per-sequence key counts (seqused_k, leftpad_k), each in [0, the sequence's seqlen_k]: checked
  // on the CPU only; the CUDA kernels clamp them (sequence_info).
  auto key_counts = [&](const Tensor& t, const char* name) {
    const auto values = c.int_vector(t, name, p.batch, dev, o.stream,
                                     /*read=*/dev.type == DeviceType::cpu);
    if (values && (!varlen || k_lengths.size() == static_cast<size_t>(p.batch))) {
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t len = varlen ? k_lengths[static_cast<size_t>(b)] : p.seqlen_k;
        const int64_t u = (*values)[static_cast<size_t>(b)];
        c.require(u >= 0 && u <= len, name,
                  [&] { return "entry " + std::to_string(b) + " is " + std::to_string(u) +
                      ", expected a value in [0, " + std::to_string(len) +
                      "] (the sequence's seqlen_k)"; });
      }
    }
    return static_cast<const int32_t*>(t.data);
  };
  if (o.seqused_k) p.seqused_k = key_counts(*o.seqused_k, "seqused_k");
  if (o.leftpad_k) {
    c.require(!paged, "leftpad_k", "not with a paged cache (block_table)");
    p.leftpad_k = key_counts(*o.leftpad_k, "leftpad_k");
  }

  // Options that are plain numbers.
  if (o.softmax_scale) {
    c.require(std::isfinite(*o.softmax_scale) && std::fabs(*o.softmax_scale) <= FLT_MAX,
              "softmax_scale", [&] { return "must be finite (as a float), got " + std::to_string(*o.softmax_scale); });
  }
  // fp64 inputs compute with the unrounded scale; the others with it rounded to float.
  p.scale_f64 = o.softmax_scale ? *o.softmax_scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  p.scale = o.softmax_scale ? static_cast<float>(*o.softmax_scale)
                            : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  p.scale_log2 = p.scale * 1.4426950408889634f;
  c.require(std::isfinite(o.softcap) && o.softcap >= 0.0f, "softcap",
            [&] { return "must be ≥ 0 and finite (0 = off), got " + std::to_string(o.softcap); });
  p.softcap = o.softcap;
  p.softcap_exp2 = o.softcap > 0.0f
                      ? static_cast<float>(std::min(2.0 * 1.4426950408889634 / o.softcap,
                                                    static_cast<double>(FLT_MAX)))
                      : 0.0f;
  c.require(o.window_left >= -1, "window_left",
            [&] { return "must be ≥ 0, or −1 for unbounded, got " + std::to_string(o.window_left); });
  c.require(o.window_right >= -1, "window_right",
            [&] { return "must be ≥ 0, or −1 for unbounded, got " + std::to_string(o.window_right); });
  c.require(!o.causal || o.window_right == -1 || o.window_right == 0, "window_right",
            [&] { return "causal already sets window_right = 0, got " + std::to_string(o.window_right); });
  p.window_left = o.window_left;
  p.window_right = o.causal ? 0 : o.window_right;
  c.require(std::isfinite(o.dropout_p) && o.dropout_p >= 0.0f && o.dropout_p < 1.0f, "dropout_p",
            [&] { return "must be in [0, 1), got " + std::to_string(o.dropout_p); });
  p.dropout_p = o.dropout_p;
  p.dropout_scale = 1.0f / (1.0f - o.dropout_p);
  p.dropout_threshold = dropout_keep_threshold(o.dropout_p);
  p.dropout_seed = o.dropout_seed;
  p.dropout_offset = o.dropout_offset;
  c.require(o.num_splits >= 0, "num_splits",
            [&] { return "must be ≥ 0 (0 = chosen by the library), got " + std::to_string(o.num_splits); });
  c.require(o.num_splits <= 1 || (o.dropout_p == 0.0f && !o.cu_seqlens_q), "num_splits", [&] {
    return "a split of the keys (" + std::to_string(o.num_splits) +
           ") needs dropout_p = 0 and a padded batch (not varlen)";
  });
  p.num_splits = o.num_splits;
  c.require(o.num_threads >= 0, "num_threads",
            [&] { return "must be ≥ 0 (0 = all hardware threads), got " + std::to_string(o.num_threads); });
  p.num_threads = o.num_threads;
  p.deterministic = o.deterministic;
  p.stream = o.stream;

  if (o.alibi_slopes) {
    const Tensor& a = *o.alibi_slopes;
    c.require(a.defined() && (a.rank == 1 || a.rank == 2), "alibi_slopes",
              [&] { return "expected rank 1 (heads_q) or 2 (batch, heads_q), got rank " + std::to_string(a.rank); });
    c.tensor(a, "alibi_slopes", a.rank, a.rank == 1 ? "[heads_q]" : "[batch, heads_q]", dev);
    c.dtype(a, "alibi_slopes", DType::f32, "slopes are float32");
    if (a.rank == 1) {
      c.shape(a, "alibi_slopes", {p.heads_q}, "[heads_q]");
    } else {
      c.shape(a, "alibi_slopes", {p.batch, p.heads_q}, "[batch, heads_q]");
      p.alibi_batch_stride = a.stride[0];
    }
    p.alibi_slopes = static_cast<const float*>(a.data);
  }

  // Outputs (forward) or saved forward results (backward).
  const int64_t out_shape[4] = {varlen ? q.shape[0] : p.batch, varlen ? p.heads_q : p.seqlen_q,
                                varlen ? p.head_dim_v : p.heads_q, p.head_dim_v};
  const char* out_dims =
      varlen ? "[total_q, heads_q, head_dim_v]" : "[batch, seqlen_q, heads_q, head_dim_v]";
  c.tensor(out, "out", rank, out_dims, dev);
  c.dtype(out, "out", q.dtype, "that of q");
  c.shape(out, "out", out_shape, rank, out_dims);
  if (lse_required || lse.defined()) {
    const int lse_rank = varlen ? 2 : 3;
    const char* lse_dims = varlen ? "[heads_q, total_q]" : "[batch, heads_q, seqlen_q]";
    c.tensor(lse, "lse", lse_rank, lse_dims, dev);
    const bool lse_f64 = q.dtype == DType::f64;
    c.dtype(lse, "lse", lse_f64 ? DType::f64 : DType::f32,
            lse_f64 ? "the log-sum-exp of float64 inputs is float64"
                    : "the log-sum-exp is float32");
    const int64_t lse_shape[3] = {varlen ? p.heads_q : p.batch, varlen ? q.shape[0] : p.heads_q,
                                  p.seqlen_q};
    c.shape(lse, "lse", lse_shape, lse_rank, lse_dims);
    if (lse_f64) {
      p.lse_f64 = static_cast<double*>(lse.data);
    } else {
      p.lse = static_cast<float*>(lse.data);
    }
    p.lse_batch_stride = varlen ? 0 : lse.stride[0];
    p.lse_head_stride = varlen ? lse.stride[0] : lse.stride[1];
  }

  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_stride = strides_of(q, varlen);
  p.k_stride = strides_of(k, k_rank == 3);
  p.v_stride = strides_of(v, k_rank == 3);
  p.out_stride = strides_of(out, varlen);
  return p;
}

}  // namespace

AttentionParams check_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                              const Tensor& lse, const Options& options) {
  const Checker c("flashattn::forward");
  AttentionParams p = check_common(c, q, k, v, out, lse, /*lse_required=*/false, options);
  c.writable(out, "out");
  if (lse.defined()) c.writable(lse, "lse");
  return p;
}

AttentionParams check_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Options& options) {
  const Checker c("flashattn::backward");
  c.require(!options.block_table, "block_table", "paged caches are for the forward only");
  c.require(!options.leftpad_k, "leftpad_k", "is for the forward only (a KV cache)");
  // The backward writes its scratch from the buffer's first byte, where a zeroed buffer keeps the
  // forward's split counters (flashattn.h, Workspace::zeroed).
  c.require(!options.workspace.zeroed, "workspace",
            "a buffer marked zeroed is for the forward's calls only (Workspace::zeroed)");
  AttentionParams p = check_common(c, q, k, v, out, lse, /*lse_required=*/true, options);
  const int rank = q.rank;
  const struct {
    const Tensor& t;
    const char* name;
    const Tensor& like;
    const char* dims;
  } grads[] = {{dout, "dout", out, "[shape of out]"},
               {dq, "dq", q, "[shape of q]"},
               {dk, "dk", k, "[shape of k]"},
               {dv, "dv", v, "[shape of v]"}};
  for (const auto& g : grads) {
    c.tensor(g.t, g.name, rank, g.dims, p.device);
    c.dtype(g.t, g.name, q.dtype, "that of q");
    c.shape(g.t, g.name, g.like.shape, rank, g.dims);
  }
  c.writable(dq, "dq");
  c.writable(dk, "dk");
  c.writable(dv, "dv");
  p.dout = dout.data;
  p.dq = dq.data;
  p.dk = dk.data;
  p.dv = dv.data;
  p.dout_stride = strides_of(dout, p.is_varlen);
  p.dq_stride = strides_of(dq, p.is_varlen);
  p.dk_stride = strides_of(dk, p.is_varlen);
  p.dv_stride = strides_of(dv, p.is_varlen);
  return p;
}

CombineParams check_combine(const Tensor& out_partial, const Tensor& lse_partial, const Tensor& out,
                            const Tensor& lse, const Options& options) {
  const Checker c("flashattn::combine");
  c.require(out_partial.defined(), "out_partial", "required tensor is missing");
  const Device device = out_partial.device;
  c.tensor(out_partial, "out_partial", 4, "(splits, rows, heads, head_dim)", device);
  c.dtype(out_partial, "out_partial", DType::f32, "partial results are fp32");
  const int64_t splits = out_partial.shape[0], rows = out_partial.shape[1],
                heads = out_partial.shape[2], head_dim = out_partial.shape[3];
  c.require(splits >= 1, "out_partial", "needs at least one split (shape[0] ≥ 1)");
  c.tensor(lse_partial, "lse_partial", 3, "(splits, heads, rows)", device);
  c.dtype(lse_partial, "lse_partial", DType::f32, "partial results are fp32");
  c.shape(lse_partial, "lse_partial", {splits, heads, rows}, "(splits, heads, rows) of out_partial");
  c.tensor(out, "out", 3, "(rows, heads, head_dim)", device);
  c.require(out.dtype == DType::f16 || out.dtype == DType::bf16 || out.dtype == DType::f32, "out",
            [&] { return std::string("expected dtype float16, bfloat16 or float32, got ") + dtype_name(out.dtype); });
  c.shape(out, "out", {rows, heads, head_dim}, "(rows, heads, head_dim) of out_partial");
  c.writable(out, "out");
  CombineParams p;
  if (lse.defined()) {
    c.tensor(lse, "lse", 2, "(heads, rows)", device);
    c.dtype(lse, "lse", DType::f32, "the log-sum-exp is fp32");
    c.shape(lse, "lse", {heads, rows}, "(heads, rows) of out_partial");
    c.writable(lse, "lse");
    p.lse = static_cast<float*>(lse.data);
    p.l = {0, 0, lse.stride[1], lse.stride[0]};
  }
  p.dtype = out.dtype;
  p.device = device;
  p.splits = splits;
  p.batch = 1;
  p.seqlen = rows;
  p.heads = heads;
  p.head_dim = head_dim;
  p.out_partial = static_cast<const float*>(out_partial.data);
  p.op = {out_partial.stride[0], 0, out_partial.stride[1], out_partial.stride[2]};
  p.lse_partial = static_cast<const float*>(lse_partial.data);
  p.lp = {lse_partial.stride[0], 0, lse_partial.stride[2], lse_partial.stride[1]};
  p.out = out.data;
  p.o = {0, 0, out.stride[0], out.stride[1]};
  p.num_threads = options.num_threads;
  p.stream = options.stream;
  return p;
}

}  // namespace flashattn::detail
