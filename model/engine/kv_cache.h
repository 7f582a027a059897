// The KV cache: per layer K/V storage with the true text position of every slot, so that policies
// can evict and the positional mode is an explicit choice (kv-policies.md §2.6).
//
// Layout per layer: keys/values [B, H, capacity, d]; slots [0, length) are live. positions
// [B, H, capacity] int64 holds each slot's true text position (per head, because per-head policies
// keep different tokens). What the keys hold depends on the mode:
//   kOriginal: keys after rotary at their true position; queries use true positions.
//   kShifted:  keys BEFORE rotary; at every step cached keys are rotated with their slot index
//              0..n-1 and the query with its slot index (StreamingLLM pos-shift).
//   kRerotate: keys after rotary at their slot index; after an eviction the kept keys are
//              re-rotated by (new slot - old slot) once (kvpress KeyRerotationPress).
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/kv_dtype.h"
#include "model/engine/capacity.h"
#include "model/engine/quantized_kv.h"

namespace kvgrid {

enum class PositionMode { kOriginal, kShifted, kRerotate };

const char* PositionModeName(PositionMode mode);
bool ParsePositionMode(const std::string& text, PositionMode* mode);

struct LayerCache {
  torch::Tensor keys;       // [B, H, capacity, d]
  torch::Tensor values;     // [B, H, capacity, d]
  torch::Tensor positions;  // [B, H, capacity] int64, true text positions
  torch::Tensor valid;      // [B, capacity] bool: false for left-padding slots
  // [B,H,capacity] bool, defined only while some head holds fewer entries than the layer's
  // length (a head-adaptive policy, adakv, kept different counts per head): true marks a hole, a
  // slot of that head holding no entry. Attention gives holes zero weight (masking, as kvpress
  // does; the storage is padded to the longest head and KV bytes count the holes). A layer with
  // holes is always in logical order.
  torch::Tensor holes;
  int64_t length = 0;
  bool has_padding = false;  // some slot is invalid (left-padded batch)
  // Slot bookkeeping of caches that reuse evicted slots (KvCache::slot_reuse()): the live slots
  // [0, length) then hold each head's entries in no particular order. order[h][i] is the slot of
  // head h's i-th oldest entry (its logical index i), rank[h][s] the logical index of slot s.
  // Both are empty while every head's slots are in logical order (slot == logical index).
  std::vector<std::vector<int64_t>> order, rank;
  bool in_order() const { return order.empty(); }

  int64_t capacity() const { return keys.defined() ? keys.size(2) : 0; }
  torch::Tensor K() const { return keys.narrow(2, 0, length); }
  torch::Tensor V() const { return values.narrow(2, 0, length); }
  torch::Tensor Positions() const { return positions.narrow(2, 0, length); }
  torch::Tensor Valid() const { return valid.narrow(1, 0, length); }
  torch::Tensor Holes() const { return holes.defined() ? holes.narrow(2, 0, length) : holes; }
};

class KvCache {
 public:
  // A quantised `kv` (batch 1, float32 CPU, original positions; checked by the model's Forward)
  // keeps every layer in a QuantizedLayer instead of the float LayerCache.
  KvCache(int64_t num_layers, int64_t batch, int64_t num_heads, int64_t head_dim,
          torch::ScalarType dtype, torch::Device device, PositionMode mode, KvDtype kv = {});

  // Pre-allocates every layer for `tokens` slots (generation knows its final length). Both are
  // no-ops on a quantised cache.
  void Reserve(int64_t tokens);
  // Grows each layer to exactly its live length + m slots where it has less room (no growth
  // slack): chunked prefill's peak is then exactly the kept entries + one chunk.
  void ReserveForAppend(int64_t m);
  // Appends m new entries to `layer`: k, v [B,H,m,d], positions [B,m] int64, valid [B,m] bool.
  void Append(int64_t layer, const torch::Tensor& k, const torch::Tensor& v,
              const torch::Tensor& positions, const torch::Tensor& valid);
  // Batch-1 float32 CPU append of m tokens straight from the fused QKV rows: head h of token t
  // is at k + t * token_stride + h * head_stride (d floats; likewise v); positions[t] is token
  // t's true text position. Same effect as Append() without building tensors.
  void AppendCpu(int64_t layer, const float* k, const float* v, int64_t m, int64_t token_stride,
                 int64_t head_stride, const int64_t* positions);
  // Keeps the entries `keep` ([B,H,k] int64 logical indices, ascending per head). Without slot
  // reuse the kept entries are compacted to slots [0,k) in order. With slot reuse the surviving
  // entries stay where they are and only entries in slots >= k move into the freed slots below k
  // (per-step policies evict one entry per token: one row moves, or none). Storage is shrunk
  // when the cache is much smaller than its capacity, so memory is freed.
  void Keep(int64_t layer, const torch::Tensor& keep);
  // Keep() where heads keep different numbers of entries: a head keeping fewer than k pads its
  // row with -1, leaving holes in its slots [kept, k) (LayerCache::holes). The kept entries are
  // gathered in logical order (a slot-reusing layer is put back in logical order first); Keep()
  // on a layer with holes comes here too.
  void KeepWithHoles(int64_t layer, const torch::Tensor& keep);
  // Evicts the entries with logical indices [begin, end) of every head (sinks + window rules),
  // without building index tensors on the slot-reuse path.
  void EvictRange(int64_t layer, int64_t begin, int64_t end);
  // Slot reuse: on for batch-1 CPU float32 caches in original or shifted mode (kv-policies.md
  // §2.6: attention over a set of slots is order-free once each slot's rotation is known).
  void set_slot_reuse(bool enabled) { slot_reuse_ = enabled; }
  bool slot_reuse() const { return slot_reuse_; }
  // [B,H,n] int64: the slot of each logical index (oldest first), or an undefined tensor when the
  // layer's slots are in logical order.
  torch::Tensor LogicalOrder(int64_t layer) const;
  // The layer's live keys, values [B,H,n,d] and positions [B,H,n] in logical order (copies when
  // slots are reordered; for tests and tools).
  torch::Tensor LogicalKeys(int64_t layer) const;
  torch::Tensor LogicalValues(int64_t layer) const;
  torch::Tensor LogicalPositions(int64_t layer) const;
  void Clear();

  const KvDtype& kv_dtype() const { return kv_dtype_; }
  bool quantized() const { return kv_dtype_.quantized(); }
  QuantizedLayer& quantized_layer(int64_t i) { return quantized_[i]; }
  const QuantizedLayer& quantized_layer(int64_t i) const { return quantized_[i]; }
  // Records the current AllocatedBytes() in the peak (after a quantised layer changed).
  void UpdatePeak() { peak_bytes_ = std::max(peak_bytes_, AllocatedBytes()); }

  LayerCache& layer(int64_t i) { return layers_[i]; }
  const LayerCache& layer(int64_t i) const { return layers_[i]; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  PositionMode mode() const { return mode_; }
  int64_t batch() const { return batch_; }

  // Exact bytes of K and V storage allocated now (capacity, not logical length).
  int64_t AllocatedBytes() const;
  // The largest AllocatedBytes() this cache has had, updated at every (re)allocation. A policy
  // that compresses inside a forward frees storage before the forward returns, so sampling
  // AllocatedBytes() between forwards misses the peak; this does not. (The transient old + new
  // copy during one layer's reallocation is not counted.)
  int64_t PeakAllocatedBytes() const { return peak_bytes_; }
  // Bytes the live entries occupy (sum over layers of length * per-slot bytes, holes left out).
  int64_t LiveBytes() const;
  int64_t MaxLength() const;
  int64_t TotalLength() const;

 private:
  void Grow(LayerCache& lc, int64_t needed);
  void KeepInPlaceCpu(LayerCache& lc, const torch::Tensor& keep);
  // Gathers the entries idx ([B,H,k] logical indices) of every head into slots [0, k), the
  // storage shrunk when they need under 3/4 of it (eviction frees memory for real).
  void StoreGathered(LayerCache& lc, const torch::Tensor& idx);
  // Moves a slot-reusing layer's entries back into logical order (slot == logical index).
  void RestoreLogicalOrder(LayerCache& lc);
  // Slot reuse: head h keeps the logical indices kept[0..k) (ascending).
  void KeepReusingSlots(LayerCache& lc, int64_t h, const int64_t* kept, int64_t k);
  // Every head keeps kept[h * head_stride + j], j < k; then the live length is k.
  void KeepAllHeadsReusingSlots(LayerCache& lc, const int64_t* kept, int64_t head_stride, int64_t k);
  // Slot reuse bookkeeping: identity order/rank for a layer still in logical order; after a
  // keep, the new live length (the bookkeeping is dropped when it is the identity again).
  void MaterialiseOrder(LayerCache& lc);
  // Slot reuse: head h loses the logical indices [begin, end) (its order and rank updated).
  void EvictFromHead(LayerCache& lc, int64_t h, int64_t begin, int64_t end);
  void FinishKeep(LayerCache& lc, int64_t k);
  void MoveRow(LayerCache& lc, int64_t h, int64_t from, int64_t to);
  void AppendOrder(LayerCache& lc, int64_t m);
  void ShrinkIfMostlyEmpty(LayerCache& lc);
  torch::Tensor Logical(int64_t layer, const torch::Tensor& t) const;
  void Reallocate(LayerCache& lc, int64_t new_capacity);

  std::vector<LayerCache> layers_;
  KvDtype kv_dtype_;
  std::vector<QuantizedLayer> quantized_;  // one per layer when quantized()
  int64_t batch_, heads_, head_dim_;
  torch::TensorOptions options_;
  torch::Device device_;
  PositionMode mode_;
  bool slot_reuse_ = false;
  int64_t peak_bytes_ = 0;
  std::vector<int64_t> scratch_slots_, scratch_remap_;  // KeepReusingSlots, no per-call malloc
  std::vector<int64_t> scratch_holes_;                  // EvictFromHead
  std::vector<char> scratch_kept_;
};

}  // namespace kvgrid
