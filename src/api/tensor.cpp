#include <string>

#include "flashattn/flashattn.h"

namespace flashattn {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f32: return "float32";
    case DType::i32: return "int32";
    case DType::f64: return "float64";
  }
  throw Error("flashattn: unknown DType value " + std::to_string(static_cast<int>(dtype)));
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f16:
    case DType::bf16: return 2;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f64: return 8;
  }
  throw Error("flashattn: unknown DType value " + std::to_string(static_cast<int>(dtype)));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= shape[d];
  return n;
}

namespace {
Tensor make_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  if (shape.size() < 1 || shape.size() > static_cast<size_t>(kMaxRank)) {
    throw Error("flashattn: a tensor view has rank 1.." + std::to_string(kMaxRank) + ", got " +
                std::to_string(shape.size()));
  }
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size());
  int d = 0;
  for (int64_t s : shape) t.shape[d++] = s;
  return t;
}
}  // namespace

Tensor contiguous_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                       Device device) {
  Tensor t = make_view(data, dtype, shape, device);
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

Tensor strided_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                    std::initializer_list<int64_t> strides, Device device) {
  if (strides.size() != shape.size()) {
    throw Error("flashattn: strided_view: strides has " + std::to_string(strides.size()) +
                " entries, expected one per dimension (" + std::to_string(shape.size()) + ")");
  }
  Tensor t = make_view(data, dtype, shape, device);
  int d = 0;
  for (int64_t s : strides) t.stride[d++] = s;
  return t;
}

}  // namespace flashattn
