// A host tensor for the tests: owns (shares) its storage, has a dtype, a shape and strides in
// elements (possibly with gaps between the elements of the view), and converts element values
// to and from double with the tests' own fp16/bf16 conversions.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flashattn/flashattn.h"

namespace fa_test {

using flashattn::DType;

// Rounds a double to the nearest value of dtype (identity for f64 arithmetic on i32 not needed).
double round_to_dtype(DType dtype, double x);
// Unit roundoff of the dtype (half an ulp at 1): 2^-24, 2^-11, 2^-8, 2^-53.
double unit_roundoff(DType dtype);
const char* dtype_tag(DType dtype);  // "f32", "f16", "bf16", "f64"

class Buf {
 public:
  Buf() = default;

  // Row-major contiguous.
  static Buf contiguous(DType dtype, std::vector<int64_t> shape);
  // Explicit strides over a fresh storage of storage_elems elements, the view starting at offset.
  static Buf strided(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> strides,
                     int64_t storage_elems, int64_t offset = 0);
  // Same padding idea for any rank: each dimension's stride leaves `pad` unused elements after
  // the inner block, so that the view has gaps everywhere (pad ≥ 1).
  static Buf gappy(DType dtype, std::vector<int64_t> shape, int64_t pad);
  // Another view of the same storage.
  Buf view(std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset) const;

  DType dtype() const { return dtype_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t numel() const;
  int64_t storage_elems() const;
  size_t elem_size() const;

  // The library's view of this buffer (optionally claiming another device).
  flashattn::Tensor tensor(flashattn::Device device = {}) const;

  // Element access by logical row-major index.
  int64_t storage_index(int64_t logical) const;
  double get(int64_t logical) const;
  void set(int64_t logical, double value);  // rounds to the dtype
  std::vector<double> values() const;        // all elements in logical row-major order
  void set_values(const std::vector<double>& values);

  // normal(0, 1)·scale, rounded to the dtype, for every element of the view.
  void fill_normal(std::mt19937_64& rng, double scale = 1.0);
  // Every element of the storage (view and gaps) set to a NaN bit pattern.
  void poison();
  // Whether the storage element at index si holds the poison pattern.
  bool is_poison_at(int64_t si) const;
  // Counts storage elements outside the view that no longer hold the poison pattern.
  int64_t gaps_written() const;
  // Raw bytes of the whole storage (to check that inputs are left unchanged).
  std::vector<unsigned char> snapshot() const;
  bool same_bytes(const std::vector<unsigned char>& snap) const;
  bool bit_equal(const Buf& other) const;  // same logical elements, bit for bit

  void* base() const { return storage_ ? storage_->data() : nullptr; }

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_, strides_;
  int64_t offset_ = 0;
  std::shared_ptr<std::vector<unsigned char>> storage_;
  uint64_t raw(int64_t si) const;  // the element's bits (2, 4 or 8 bytes)
  void set_raw(int64_t si, uint64_t bits);
};

}  // namespace fa_test
