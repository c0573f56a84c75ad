#include "buffer.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "half.h"

namespace fa_test {

double round_to_dtype(DType dtype, double x) {
  switch (dtype) {
    case DType::f32: return static_cast<double>(static_cast<float>(x));
    case DType::f16: return round_f16(x);
    case DType::bf16: return round_bf16(x);
    case DType::i32: return std::nearbyint(x);
    case DType::f64: return x;
  }
  return x;
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::f16: return std::ldexp(1.0, -11);
    case DType::bf16: return std::ldexp(1.0, -8);
    case DType::f64: return std::ldexp(1.0, -53);
    default: return std::ldexp(1.0, -24);
  }
}

const char* dtype_tag(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::f64: return "f64";
  }
  return "?";
}

namespace {
size_t size_of(DType d) { return flashattn::dtype_size(d); }

// Poison patterns: quiet NaNs with a payload, so that "still poisoned" is a bit-exact check.
uint64_t poison_bits(DType d) {
  switch (d) {
    case DType::f16: return 0x7e5au;
    case DType::bf16: return 0x7fdau;
    case DType::f32: return 0x7fc5a5a5u;
    case DType::i32: return 0x5a5a5a5au;
    case DType::f64: return 0x7ff8a5a5a5a5a5a5ull;
  }
  return 0;
}
}  // namespace

Buf Buf::strided(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                 int64_t storage_elems, int64_t offset) {
  if (shape.size() != strides.size()) throw std::invalid_argument("Buf: rank mismatch");
  Buf b;
  b.dtype_ = dtype;
  b.shape_ = std::move(shape);
  b.strides_ = std::move(strides);
  b.offset_ = offset;
  const int64_t n = storage_elems < 1 ? 1 : storage_elems;  // never a null data pointer
  b.storage_ = std::make_shared<std::vector<unsigned char>>(static_cast<size_t>(n) * size_of(dtype));
  b.poison();
  return b;
}

Buf Buf::contiguous(DType dtype, std::vector<int64_t> shape) {
  // PyTorch's convention: a dimension of size 0 counts as 1 for the strides of the outer ones.
  std::vector<int64_t> strides(shape.size());
  int64_t st = 1, n = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = st;
    st *= shape[d] > 1 ? shape[d] : 1;
    n *= shape[d];
  }
  return strided(dtype, std::move(shape), std::move(strides), n);
}

Buf Buf::gappy(DType dtype, std::vector<int64_t> shape, int64_t pad) {
  std::vector<int64_t> strides(shape.size());
  int64_t st = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = st;
    st = st * shape[d] + pad;  // `pad` unused elements after each block of this dimension
  }
  // The view starts at `pad` so that there is a gap before the first element too.
  return strided(dtype, std::move(shape), std::move(strides), st + pad, pad);
}

Buf Buf::view(std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset) const {
  Buf b = *this;
  b.shape_ = std::move(shape);
  b.strides_ = std::move(strides);
  b.offset_ = offset;
  return b;
}

int64_t Buf::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

int64_t Buf::storage_elems() const {
  return static_cast<int64_t>(storage_->size() / size_of(dtype_));
}

size_t Buf::elem_size() const { return size_of(dtype_); }

flashattn::Tensor Buf::tensor(flashattn::Device device) const {
  flashattn::Tensor t;
  t.data = static_cast<unsigned char*>(base()) + offset_ * static_cast<int64_t>(size_of(dtype_));
  t.dtype = dtype_;
  t.rank = rank();
  for (int d = 0; d < rank(); ++d) {
    t.shape[d] = shape_[d];
    t.stride[d] = strides_[d];
  }
  t.device = device;
  return t;
}

int64_t Buf::storage_index(int64_t logical) const {
  int64_t si = offset_;
  for (int d = rank() - 1; d >= 0; --d) {
    const int64_t idx = logical % shape_[d];
    logical /= shape_[d];
    si += idx * strides_[d];
  }
  return si;
}

uint64_t Buf::raw(int64_t si) const {
  const unsigned char* p = storage_->data() + static_cast<size_t>(si) * size_of(dtype_);
  switch (size_of(dtype_)) {
    case 2: {
      uint16_t u;
      std::memcpy(&u, p, 2);
      return u;
    }
    case 4: {
      uint32_t u;
      std::memcpy(&u, p, 4);
      return u;
    }
    default: {
      uint64_t u;
      std::memcpy(&u, p, 8);
      return u;
    }
  }
}

void Buf::set_raw(int64_t si, uint64_t bits) {
  unsigned char* p = storage_->data() + static_cast<size_t>(si) * size_of(dtype_);
  switch (size_of(dtype_)) {
    case 2: {
      const uint16_t u = static_cast<uint16_t>(bits);
      std::memcpy(p, &u, 2);
      break;
    }
    case 4: {
      const uint32_t u = static_cast<uint32_t>(bits);
      std::memcpy(p, &u, 4);
      break;
    }
    default: std::memcpy(p, &bits, 8); break;
  }
}

double Buf::get(int64_t logical) const {
  const uint64_t bits = raw(storage_index(logical));
  switch (dtype_) {
    case DType::f16: return f16_value(static_cast<uint16_t>(bits));
    case DType::bf16: return bf16_value(static_cast<uint16_t>(bits));
    case DType::f32: {
      const uint32_t b32 = static_cast<uint32_t>(bits);
      float f;
      std::memcpy(&f, &b32, 4);
      return f;
    }
    case DType::i32: return static_cast<int32_t>(static_cast<uint32_t>(bits));
    case DType::f64: {
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
  }
  return 0;
}

void Buf::set(int64_t logical, double value) {
  uint64_t bits = 0;
  switch (dtype_) {
    case DType::f16: bits = f16_bits(value); break;
    case DType::bf16: bits = bf16_bits(value); break;
    case DType::f32: {
      const float f = static_cast<float>(value);
      uint32_t b32;
      std::memcpy(&b32, &f, 4);
      bits = b32;
      break;
    }
    case DType::i32: bits = static_cast<uint32_t>(static_cast<int32_t>(value)); break;
    case DType::f64: std::memcpy(&bits, &value, 8); break;
  }
  set_raw(storage_index(logical), bits);
}

std::vector<double> Buf::values() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = get(i);
  return out;
}

void Buf::set_values(const std::vector<double>& values) {
  if (static_cast<int64_t>(values.size()) != numel()) throw std::invalid_argument("Buf: size");
  for (int64_t i = 0; i < numel(); ++i) set(i, values[i]);
}

void Buf::fill_normal(std::mt19937_64& rng, double scale) {
  std::normal_distribution<double> dist(0.0, 1.0);
  for (int64_t i = 0; i < numel(); ++i) set(i, dist(rng) * scale);
}

void Buf::poison() {
  const uint64_t bits = poison_bits(dtype_);
  for (int64_t si = 0; si < storage_elems(); ++si) set_raw(si, bits);
}

bool Buf::is_poison_at(int64_t si) const { return raw(si) == poison_bits(dtype_); }

int64_t Buf::gaps_written() const {
  std::vector<char> in_view(static_cast<size_t>(storage_elems()), 0);
  for (int64_t i = 0; i < numel(); ++i) in_view[storage_index(i)] = 1;
  int64_t n = 0;
  for (int64_t si = 0; si < storage_elems(); ++si) {
    if (!in_view[si] && !is_poison_at(si)) ++n;
  }
  return n;
}

std::vector<unsigned char> Buf::snapshot() const { return *storage_; }

bool Buf::same_bytes(const std::vector<unsigned char>& snap) const { return snap == *storage_; }

bool Buf::bit_equal(const Buf& other) const {
  if (shape_ != other.shape_ || dtype_ != other.dtype_) return false;
  for (int64_t i = 0; i < numel(); ++i) {
    if (raw(storage_index(i)) != other.raw(other.storage_index(i))) return false;
  }
  return true;
}

}  // namespace fa_test
