#include <cmath>

#include "common/philox.h"
#include "flashattn/flashattn.h"

namespace flashattn {

uint32_t dropout_keep_threshold(float dropout_p) {
  const double keep = std::round((1.0 - static_cast<double>(dropout_p)) * 65536.0);
  if (!(keep > 0.0)) return 0;  // also NaN
  return keep >= 65536.0 ? 65536u : static_cast<uint32_t>(keep);
}

uint16_t dropout_uint16(uint64_t seed, uint64_t offset, int64_t batch_idx, int64_t head_idx,
                        int64_t heads_q, int64_t row, int64_t col) {
  const detail::DropoutCoord c = detail::dropout_coord(row, col);
  const detail::Philox4 r = detail::dropout_philox(
      seed, detail::dropout_stream(offset, batch_idx, head_idx, heads_q), c.counter0, c.counter1);
  return detail::philox_slot(r, c.slot);
}

bool dropout_keep(uint64_t seed, uint64_t offset, float dropout_p, int64_t batch_idx,
                  int64_t head_idx, int64_t heads_q, int64_t row, int64_t col) {
  return dropout_uint16(seed, offset, batch_idx, head_idx, heads_q, row, col) <
         dropout_keep_threshold(dropout_p);
}

uint64_t dropout_offset_increment(int64_t batch, int64_t heads_q) {
  return static_cast<uint64_t>(batch * heads_q);
}

Philox4x32Out philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                            uint32_t k1) {
  const detail::Philox4 r = detail::philox4x32_10(c0, c1, c2, c3, k0, k1);
  return Philox4x32Out{{r.x[0], r.x[1], r.x[2], r.x[3]}};
}

}  // namespace flashattn
