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
                 torch::ScalarType dtype, torch::Device device, PositionMode mode, KvDtype kv)
    : layers_(num_layers), batch_(batch), heads_(num_heads), head_dim_(head_dim),
      options_(torch::TensorOptions().dtype(dtype).device(device)), device_(device), mode_(mode),
      kv_dtype_(kv) {
  if (kv.quantized()) quantized_.assign(num_layers, QuantizedLayer(num_heads, head_dim, kv));
}

void KvCache::Reallocate(LayerCache& lc, int64_t new_capacity) {
  auto keys = torch::empty({batch_, heads_, new_capacity, head_dim_}, options_);
  auto values = torch::empty({batch_, heads_, new_capacity, head_dim_}, options_);
  auto positions = torch::empty({batch_, heads_, new_capacity},
                                torch::TensorOptions().dtype(torch::kInt64).device(device_));
  auto valid = torch::empty({batch_, new_capacity},
                            torch::TensorOptions().dtype(torch::kBool).device(device_));
  if (lc.holes.defined()) {
    auto holes = torch::zeros({batch_, heads_, new_capacity},
                              torch::TensorOptions().dtype(torch::kBool).device(device_));
    if (lc.length > 0) holes.narrow(2, 0, lc.length).copy_(lc.Holes());
    lc.holes = holes;
  }
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
  Reallocate(lc, GrownCapacity(lc.capacity(), needed));
}

void KvCache::Reserve(int64_t tokens) {
  if (quantized()) return;  // quantised layers grow as they fill (their residual stays small)
  for (auto& lc : layers_) Grow(lc, tokens);
}

void KvCache::ReserveForAppend(int64_t m) {
  if (quantized()) return;
  for (auto& lc : layers_) {
    if (lc.length + m > lc.capacity()) Reallocate(lc, lc.length + m);
  }
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
  if (lc.holes.defined()) lc.holes.narrow(2, lc.length, m).fill_(false);
  AppendOrder(lc, m);
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
  bool* holes = lc.holes.defined() ? lc.holes.data_ptr<bool>() : nullptr;
  for (int64_t t = 0; t < m; ++t) {
    const int64_t slot = first + t;
    if (holes != nullptr) {
      for (int64_t h = 0; h < heads_; ++h) holes[h * cap + slot] = false;
    }
    for (int64_t h = 0; h < heads_; ++h) {
      const int64_t from = t * token_stride + h * head_stride;
      std::memcpy(keys + (h * cap + slot) * head_dim_, k + from, head_dim_ * sizeof(float));
      std::memcpy(values + (h * cap + slot) * head_dim_, v + from, head_dim_ * sizeof(float));
      slot_positions[h * cap + slot] = positions[t];
    }
    valid[slot] = true;
  }
  AppendOrder(lc, m);
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

void KvCache::AppendOrder(LayerCache& lc, int64_t m) {
  if (lc.in_order()) return;
  // New entries are the newest: appended at the end of the logical order, in the slots after
  // the live ones (slot == its logical index at the time of the append).
  for (int64_t h = 0; h < heads_; ++h) {
    for (int64_t t = 0; t < m; ++t) {
      lc.order[h].push_back(lc.length + t);
      lc.rank[h].push_back(lc.length + t);
    }
  }
}

void KvCache::MoveRow(LayerCache& lc, int64_t h, int64_t from, int64_t to) {
  const int64_t cap = lc.capacity(), row_bytes = head_dim_ * lc.keys.element_size();
  auto* keys = static_cast<char*>(lc.keys.data_ptr());
  auto* values = static_cast<char*>(lc.values.data_ptr());
  int64_t* positions = lc.positions.data_ptr<int64_t>();
  std::memcpy(keys + (h * cap + to) * row_bytes, keys + (h * cap + from) * row_bytes, row_bytes);
  std::memcpy(values + (h * cap + to) * row_bytes, values + (h * cap + from) * row_bytes, row_bytes);
  positions[h * cap + to] = positions[h * cap + from];
}

// Surviving entries stay in their slots; an entry in a slot >= k (there are as many as there are
// evicted entries below k) moves into the lowest free slot. The logical order is rebuilt from the
// old one, so policies keep seeing their entries oldest first.
void KvCache::KeepReusingSlots(LayerCache& lc, int64_t h, const int64_t* kept, int64_t k) {
  const int64_t n = lc.length;
  std::vector<int64_t>& order = lc.order[h];
  if (k == n - 1) {
    // One eviction (per-step policies): the range [e, e + 1) of this head.
    int64_t e = 0;
    while (e < k && kept[e] == e) ++e;
    for (int64_t j = e; j < k; ++j) {
      TORCH_CHECK(kept[j] == j + 1, "KV cache: kept entries must be ascending logical indices in [0, ", n, ")");
    }
    EvictFromHead(lc, h, e, e + 1);
    return;
  }
  std::vector<int64_t>& slots = scratch_slots_;
  slots.resize(k);
  for (int64_t j = 0; j < k; ++j) {
    TORCH_CHECK(kept[j] >= 0 && kept[j] < n && (j == 0 || kept[j] > kept[j - 1]),
                "KV cache: kept entries must be ascending logical indices in [0, ", n, ")");
    slots[j] = order[kept[j]];
  }
  std::vector<char>& is_kept = scratch_kept_;
  is_kept.assign(n, 0);
  for (int64_t j = 0; j < k; ++j) is_kept[slots[j]] = 1;
  std::vector<int64_t>& remap = scratch_remap_;
  remap.resize(n);
  int64_t hole = 0;
  for (int64_t s = k; s < n; ++s) {
    if (!is_kept[s]) continue;
    while (is_kept[hole]) ++hole;
    MoveRow(lc, h, s, hole);
    remap[s] = hole++;
  }
  order.resize(k);
  std::vector<int64_t>& rank = lc.rank[h];
  rank.resize(k);
  for (int64_t j = 0; j < k; ++j) {
    order[j] = slots[j] >= k ? remap[slots[j]] : slots[j];
    rank[order[j]] = j;
  }
}

// Only live entries in slots >= k (k = entries left) move, each into a slot freed below k: the
// work is O(evicted) row moves plus renumbering the ranks from `begin` on.
void KvCache::EvictFromHead(LayerCache& lc, int64_t h, int64_t begin, int64_t end) {
  const int64_t n = lc.length, k = n - (end - begin);
  std::vector<int64_t>& order = lc.order[h];
  std::vector<int64_t>& rank = lc.rank[h];
  std::vector<int64_t>& holes = scratch_holes_;
  holes.clear();
  for (int64_t i = begin; i < end; ++i) {
    if (order[i] < k) holes.push_back(order[i]);
  }
  size_t next = 0;
  for (int64_t s = k; s < n; ++s) {
    const int64_t logical = rank[s];
    if (logical >= begin && logical < end) continue;  // evicted
    const int64_t hole = holes[next++];
    MoveRow(lc, h, s, hole);
    order[logical] = hole;
    if (logical < begin) rank[hole] = logical;  // older than the range: its index is unchanged
  }
  order.erase(order.begin() + begin, order.begin() + end);
  rank.resize(k);  // slots >= k are free now
  for (int64_t j = begin; j < k; ++j) rank[order[j]] = j;
}

void KvCache::MaterialiseOrder(LayerCache& lc) {
  if (!lc.in_order()) return;
  lc.order.assign(heads_, std::vector<int64_t>(lc.length));
  for (auto& o : lc.order) {
    for (int64_t i = 0; i < lc.length; ++i) o[i] = i;
  }
  lc.rank = lc.order;
}

void KvCache::FinishKeep(LayerCache& lc, int64_t k) {
  lc.length = k;
  bool identity = true;
  for (int64_t h = 0; h < heads_ && identity; ++h) {
    for (int64_t j = 0; j < k && identity; ++j) identity = lc.order[h][j] == j;
  }
  if (identity) {  // back in logical order: drop the bookkeeping
    lc.order.clear();
    lc.rank.clear();
  }
  ShrinkIfMostlyEmpty(lc);
}

void KvCache::KeepAllHeadsReusingSlots(LayerCache& lc, const int64_t* kept, int64_t head_stride,
                                       int64_t k) {
  MaterialiseOrder(lc);
  for (int64_t h = 0; h < heads_; ++h) KeepReusingSlots(lc, h, kept + h * head_stride, k);
  FinishKeep(lc, k);
}

void KvCache::ShrinkIfMostlyEmpty(LayerCache& lc) {
  const int64_t k = lc.length, wanted = k + std::max<int64_t>(64, k / 4);
  if (wanted * 4 < lc.capacity() * 3) Reallocate(lc, wanted);  // slots [0,k) are the live ones
}

void KvCache::EvictRange(int64_t layer, int64_t begin, int64_t end) {
  LayerCache& lc = layers_[layer];
  const int64_t n = lc.length;
  TORCH_CHECK(0 <= begin && begin <= end && end <= n, "KV cache: evicted range [", begin, ", ",
              end, ") outside [0, ", n, ")");
  if (begin == end) return;
  const int64_t evicted = end - begin, k = n - evicted;
  if (slot_reuse_ && !lc.holes.defined()) {
    // Every head loses the same logical range (the ring buffer: the newest entry takes the
    // oldest window entry's slot).
    MaterialiseOrder(lc);
    for (int64_t h = 0; h < heads_; ++h) EvictFromHead(lc, h, begin, end);
    FinishKeep(lc, k);
    return;
  }
  std::vector<int64_t> kept;
  kept.reserve(k);
  for (int64_t i = 0; i < begin; ++i) kept.push_back(i);
  for (int64_t i = end; i < n; ++i) kept.push_back(i);
  auto idx = torch::tensor(kept, torch::kInt64).view({1, 1, k}).expand({batch_, heads_, k});
  Keep(layer, idx.contiguous().to(device_));
}

torch::Tensor KvCache::LogicalOrder(int64_t layer) const {
  const LayerCache& lc = layers_[layer];
  if (lc.in_order()) return {};
  torch::Tensor order = torch::empty({1, heads_, lc.length}, torch::kInt64);
  int64_t* o = order.data_ptr<int64_t>();
  for (int64_t h = 0; h < heads_; ++h) {
    std::memcpy(o + h * lc.length, lc.order[h].data(), lc.length * sizeof(int64_t));
  }
  return order.to(device_);
}

torch::Tensor KvCache::Logical(int64_t layer, const torch::Tensor& t) const {
  torch::Tensor order = LogicalOrder(layer);
  if (!order.defined()) return t;
  if (t.dim() == 4) return t.gather(2, order.unsqueeze(-1).expand_as(t));
  return t.gather(2, order);
}

torch::Tensor KvCache::LogicalKeys(int64_t layer) const { return Logical(layer, layers_[layer].K()); }
torch::Tensor KvCache::LogicalValues(int64_t layer) const { return Logical(layer, layers_[layer].V()); }
torch::Tensor KvCache::LogicalPositions(int64_t layer) const {
  return Logical(layer, layers_[layer].Positions());
}

void KvCache::RestoreLogicalOrder(LayerCache& lc) {
  if (lc.in_order()) return;
  torch::Tensor order = torch::empty({1, heads_, lc.length}, torch::kInt64);
  int64_t* o = order.data_ptr<int64_t>();
  for (int64_t h = 0; h < heads_; ++h) {
    std::memcpy(o + h * lc.length, lc.order[h].data(), lc.length * sizeof(int64_t));
  }
  order = order.to(device_);
  auto idx_kv = order.unsqueeze(-1).expand({batch_, heads_, lc.length, head_dim_});
  lc.keys.narrow(2, 0, lc.length).copy_(lc.K().gather(2, idx_kv));
  lc.values.narrow(2, 0, lc.length).copy_(lc.V().gather(2, idx_kv));
  lc.positions.narrow(2, 0, lc.length).copy_(lc.Positions().gather(2, order));
  lc.order.clear();
  lc.rank.clear();
}

void KvCache::StoreGathered(LayerCache& lc, const torch::Tensor& idx) {
  const int64_t k = idx.size(2);
  auto idx_kv = idx.unsqueeze(-1).expand({batch_, heads_, k, head_dim_});
  auto new_k = lc.K().gather(2, idx_kv);
  auto new_v = lc.V().gather(2, idx_kv);
  auto new_pos = lc.Positions().gather(2, idx);
  // Padding validity is per batch row; every head of a row keeps valid slots only when the row
  // has no padding, which is the only case policies support (batch 1).
  auto new_valid = lc.Valid().gather(1, idx.select(1, 0));
  // Release storage when the kept entries (plus growth room) need under 3/4 of it: eviction
  // must free memory for real, not only shorten the live length.
  const int64_t wanted = k + std::max<int64_t>(64, k / 4);
  if (wanted * 4 < lc.capacity() * 3) {
    lc.keys = lc.values = lc.positions = lc.valid = torch::Tensor();
    lc.length = 0;
    Reallocate(lc, wanted);
  }
  lc.length = k;
  lc.keys.narrow(2, 0, k).copy_(new_k);
  lc.values.narrow(2, 0, k).copy_(new_v);
  lc.positions.narrow(2, 0, k).copy_(new_pos);
  lc.valid.narrow(1, 0, k).copy_(new_valid);
}

void KvCache::KeepWithHoles(int64_t layer, const torch::Tensor& keep) {
  LayerCache& lc = layers_[layer];
  RestoreLogicalOrder(lc);
  const int64_t k = keep.size(2);
  auto idx = keep.clamp_min(0);  // a -1 pad gathers slot 0 into what becomes a hole
  auto new_holes = lc.holes.defined() ? keep.lt(0).logical_or(lc.Holes().gather(2, idx)) : keep.lt(0);
  lc.holes = torch::Tensor();
  StoreGathered(lc, idx);
  if (new_holes.any().item<bool>()) {
    lc.holes = torch::zeros({batch_, heads_, lc.capacity()},
                            torch::TensorOptions().dtype(torch::kBool).device(device_));
    lc.holes.narrow(2, 0, k).copy_(new_holes);
  }
}

void KvCache::Keep(int64_t layer, const torch::Tensor& keep) {
  LayerCache& lc = layers_[layer];
  int64_t k = keep.size(2);
  if (lc.holes.defined()) {
    KeepWithHoles(layer, keep);
    return;
  }
  if (slot_reuse_) {
    TORCH_CHECK(batch_ == 1 && keep.size(1) == heads_, "KV cache: slot reuse needs batch 1");
    torch::Tensor idx = keep.to(torch::kCPU, torch::kInt64).contiguous();
    KeepAllHeadsReusingSlots(lc, idx.data_ptr<int64_t>(), k, k);
    return;
  }
  const int64_t wanted = k + std::max<int64_t>(64, k / 4);
  const bool shrink = wanted * 4 < lc.capacity() * 3;  // (StoreGathered's rule)
  if (!shrink && batch_ == 1 && device_.is_cpu() && keep.device().is_cpu() &&
      keep.scalar_type() == torch::kInt64) {
    KeepInPlaceCpu(lc, keep);
    return;
  }
  StoreGathered(lc, keep);
}

void KvCache::Clear() {
  for (auto& lc : layers_) lc = LayerCache();
  for (auto& q : quantized_) q = QuantizedLayer(heads_, head_dim_, kv_dtype_);
}

int64_t KvCache::AllocatedBytes() const {
  int64_t bytes = 0;
  for (const auto& lc : layers_) {
    if (lc.keys.defined()) bytes += 2 * lc.keys.numel() * lc.keys.element_size();
  }
  for (const auto& q : quantized_) bytes += q.AllocatedBytes();
  return bytes;
}

int64_t KvCache::LiveBytes() const {
  int64_t bytes = 0;
  for (const auto& lc : layers_) {
    if (!lc.keys.defined()) continue;
    int64_t entries = batch_ * heads_ * lc.length;
    if (lc.holes.defined()) entries -= lc.Holes().sum().item<int64_t>();
    bytes += 2 * entries * head_dim_ * lc.keys.element_size();
  }
  for (const auto& q : quantized_) bytes += q.LiveBytes();
  return bytes;
}

int64_t KvCache::MaxLength() const {
  int64_t m = 0;
  for (const auto& lc : layers_) m = std::max(m, lc.length);
  for (const auto& q : quantized_) m = std::max(m, q.length());
  return m;
}

int64_t KvCache::TotalLength() const {
  int64_t t = 0;
  for (const auto& lc : layers_) t += lc.length;
  for (const auto& q : quantized_) t += q.length();
  return t;
}

}  // namespace kvgrid
