#include "model/engine/kv_cache.h"

#include <algorithm>
#include <cstring>

namespace kvgrid {

const char* PositionModeName(PositionMode mode) {
  switch (mode) {
    case PositionMode::kOriginal: return "original";
    case PositionMode::kShifted: return "shifted";
    case PositionMode::kRerotate: return "rerotate";
  }
  return "?";
}

bool ParsePositionMode(const std::string& text, PositionMode* mode) {
  if (text == "original") *mode = PositionMode::kOriginal;
  else if (text == "shifted") *mode = PositionMode::kShifted;
  else if (text == "rerotate") *mode = PositionMode::kRerotate;
  else return false;
  return true;
}

KvCache::KvCache(int64_t num_layers, int64_t batch, int64_t num_heads, int64_t head_dim,
                 torch::ScalarType dtype, torch::Device device, PositionMode mode)
    : layers_(num_layers), batch_(batch), heads_(num_heads), head_dim_(head_dim),
      options_(torch::TensorOptions().dtype(dtype).device(device)), device_(device), mode_(mode) {}

void KvCache::Reallocate(LayerCache& lc, int64_t new_capacity) {
  auto keys = torch::empty({batch_, heads_, new_capacity, head_dim_}, options_);
  auto values = torch::empty({batch_, heads_, new_capacity, head_dim_}, options_);
  auto positions = torch::empty({batch_, heads_, new_capacity},
                                torch::TensorOptions().dtype(torch::kInt64).device(device_));
  auto valid = torch::empty({batch_, new_capacity},
                            torch::TensorOptions().dtype(torch::kBool).device(device_));
  if (lc.length > 0) {
    keys.narrow(2, 0, lc.length).copy_(lc.K());
    values.narrow(2, 0, lc.length).copy_(lc.V());
    positions.narrow(2, 0, lc.length).copy_(lc.Positions());
    valid.narrow(1, 0, lc.length).copy_(lc.Valid());
  }
  lc.keys = keys;
  lc.values = values;
  lc.positions = positions;
  lc.valid = valid;
  peak_bytes_ = std::max(peak_bytes_, AllocatedBytes());
}

void KvCache::Grow(LayerCache& lc, int64_t needed) {
  if (needed <= lc.capacity()) return;
  // Grow by a quarter (at least 64 slots) so that repeated appends stay amortised O(1) while the
  // over-allocation (reported in AllocatedBytes) stays small.
  int64_t cap = std::max<int64_t>(needed, lc.capacity() + std::max<int64_t>(64, lc.capacity() / 4));
  Reallocate(lc, cap);
}

void KvCache::Reserve(int64_t tokens) {
  for (auto& lc : layers_) Grow(lc, tokens);
}

void KvCache::Append(int64_t layer, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& positions, const torch::Tensor& valid) {
  LayerCache& lc = layers_[layer];
  int64_t m = k.size(2);
  Grow(lc, lc.length + m);
  lc.keys.narrow(2, lc.length, m).copy_(k);
  lc.values.narrow(2, lc.length, m).copy_(v);
  lc.positions.narrow(2, lc.length, m).copy_(positions.unsqueeze(1).expand({batch_, heads_, m}));
  lc.valid.narrow(1, lc.length, m).copy_(valid);
  lc.length += m;
}

void KvCache::AppendCpu(int64_t layer, const float* k, const float* v, int64_t m,
                        int64_t token_stride, int64_t head_stride, const int64_t* positions) {
  LayerCache& lc = layers_[layer];
  Grow(lc, lc.length + m);
  const int64_t cap = lc.capacity(), first = lc.length;
  float* keys = lc.keys.data_ptr<float>();
  float* values = lc.values.data_ptr<float>();
  int64_t* slot_positions = lc.positions.data_ptr<int64_t>();
  bool* valid = lc.valid.data_ptr<bool>();
  for (int64_t t = 0; t < m; ++t) {
    const int64_t slot = first + t;
    for (int64_t h = 0; h < heads_; ++h) {
      const int64_t from = t * token_stride + h * head_stride;
      std::memcpy(keys + (h * cap + slot) * head_dim_, k + from, head_dim_ * sizeof(float));
      std::memcpy(values + (h * cap + slot) * head_dim_, v + from, head_dim_ * sizeof(float));
      slot_positions[h * cap + slot] = positions[t];
    }
    valid[slot] = true;
  }
  lc.length += m;
}

// Batch-1 CPU compaction in place: kept slots are ascending, so slot keep[j] >= j and moving
// rows front to back never overwrites a row still to be read. Per-step policies (StreamingLLM,
// H2O, TOVA) evict one slot per token; this costs one pass over the kept rows, no allocation.
void KvCache::KeepInPlaceCpu(LayerCache& lc, const torch::Tensor& keep) {
  const int64_t k = keep.size(2), cap = lc.capacity();
  torch::Tensor idx = keep.contiguous();
  const int64_t* slots = idx.data_ptr<int64_t>();
  const int64_t row_bytes = head_dim_ * lc.keys.element_size();
  auto* keys = static_cast<char*>(lc.keys.data_ptr());
  auto* values = static_cast<char*>(lc.values.data_ptr());
  int64_t* positions = lc.positions.data_ptr<int64_t>();
  bool* valid = lc.valid.data_ptr<bool>();
  for (int64_t h = 0; h < heads_; ++h) {
    const int64_t* hs = slots + h * k;
    for (int64_t j = 0; j < k;) {
      // A run of consecutive source slots moves with one memmove (StreamingLLM's window, H2O's
      // recent tokens: evicting one slot per step shifts one contiguous block).
      int64_t run = 1;
      while (j + run < k && hs[j + run] == hs[j] + run) ++run;
      const int64_t from = hs[j];
      if (from != j) {
        std::memmove(keys + (h * cap + j) * row_bytes, keys + (h * cap + from) * row_bytes,
                     run * row_bytes);
        std::memmove(values + (h * cap + j) * row_bytes, values + (h * cap + from) * row_bytes,
                     run * row_bytes);
        std::memmove(positions + h * cap + j, positions + h * cap + from, run * sizeof(int64_t));
      }
      j += run;
    }
  }
  // Validity is per batch row: with batch 1 and no padding (the only case policies accept)
  // head 0's slots decide it.
  for (int64_t j = 0; j < k; ++j) valid[j] = valid[slots[j]];
  lc.length = k;
}

void KvCache::Keep(int64_t layer, const torch::Tensor& keep) {
  LayerCache& lc = layers_[layer];
  int64_t k = keep.size(2);
  // Release storage when the kept entries (plus growth room) need under 3/4 of it: eviction
  // must free memory for real, not only shorten the live length.
  const int64_t wanted = k + std::max<int64_t>(64, k / 4);
  const bool shrink = wanted * 4 < lc.capacity() * 3;
  if (!shrink && batch_ == 1 && device_.is_cpu() && keep.device().is_cpu() &&
      keep.scalar_type() == torch::kInt64) {
    KeepInPlaceCpu(lc, keep);
    return;
  }
  auto idx_kv = keep.unsqueeze(-1).expand({batch_, heads_, k, head_dim_});
  auto new_k = lc.K().gather(2, idx_kv);
  auto new_v = lc.V().gather(2, idx_kv);
  auto new_pos = lc.Positions().gather(2, keep);
  // Padding validity is per batch row; every head of a row keeps valid slots only when the row
  // has no padding, which is the only case policies support (batch 1).
  auto new_valid = lc.Valid().gather(1, keep.select(1, 0));
  lc.length = k;
  if (shrink) {
    // Free memory for real: drop the storage and allocate what the kept entries need plus room.
    lc.keys = torch::Tensor();
    lc.values = torch::Tensor();
    lc.positions = torch::Tensor();
    lc.valid = torch::Tensor();
    int64_t saved_length = lc.length;
    lc.length = 0;
    Reallocate(lc, wanted);
    lc.length = saved_length;
  }
  lc.keys.narrow(2, 0, k).copy_(new_k);
  lc.values.narrow(2, 0, k).copy_(new_v);
  lc.positions.narrow(2, 0, k).copy_(new_pos);
  lc.valid.narrow(1, 0, k).copy_(new_valid);
}

void KvCache::Clear() {
  for (auto& lc : layers_) lc = LayerCache();
}

int64_t KvCache::AllocatedBytes() const {
  int64_t bytes = 0;
  for (const auto& lc : layers_) {
    if (lc.keys.defined()) bytes += 2 * lc.keys.numel() * lc.keys.element_size();
  }
  return bytes;
}

int64_t KvCache::LiveBytes() const {
  int64_t bytes = 0;
  for (const auto& lc : layers_) {
    if (lc.keys.defined()) {
      bytes += 2 * batch_ * heads_ * lc.length * head_dim_ * lc.keys.element_size();
    }
  }
  return bytes;
}

int64_t KvCache::MaxLength() const {
  int64_t m = 0;
  for (const auto& lc : layers_) m = std::max(m, lc.length);
  return m;
}

int64_t KvCache::TotalLength() const {
  int64_t t = 0;
  for (const auto& lc : layers_) t += lc.length;
  return t;
}

}  // namespace kvgrid
