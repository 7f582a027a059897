// How every growing KV store grows: the float cache (kv_cache.h), the quantised one
// (quantized_kv.h) and the per-slot state policies keep beside them (model/policies/selection.h).
#pragma once

#include <algorithm>
#include <cstdint>

namespace kvgrid {

// The capacity to grow to when `needed` slots do not fit in `capacity`: a quarter more (at least
// 64 slots), so that repeated appends stay amortised O(1) while the over-allocation (reported in
// AllocatedBytes) stays small. The cache and the per-slot state policies keep beside it
// (model/policies/selection.h HeldScores) grow by it.
inline int64_t GrownCapacity(int64_t capacity, int64_t needed) {
  return std::max<int64_t>(needed, capacity + std::max<int64_t>(64, capacity / 4));
}

}  // namespace kvgrid
