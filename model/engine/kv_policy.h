// The KV policy interface (kvpress-style): a policy only says which slots of a layer survive.
// The engine calls SelectKeep() right after a layer's attention for the current forward (the
// current tokens always attend to the uncompressed cache plus themselves; kv-policies.md §2.2,
// §2.7.2) and then compacts the cache. Shared selection mechanics live in model/policies/selection.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/policy_spec.h"

namespace kvgrid {

enum class ForwardPhase { kPrefill, kDecode };

// Everything a policy may look at, for one layer, after that layer's attention.
struct LayerView {
  int64_t layer = 0;
  int64_t num_layers = 0;
  int64_t n = 0;                // entries in this layer's cache (appended, not yet pruned)
  int64_t new_tokens = 0;       // m: tokens processed by this forward
  int64_t tokens_seen = 0;      // true text tokens processed so far, including this forward
  int64_t prompt_length = 0;    // length of the first forward of the sequence (H2O ratios)
  ForwardPhase phase = ForwardPhase::kPrefill;
  torch::Tensor keys;           // [B,H,n,d] as attended this step (rotated)
  torch::Tensor values;         // [B,H,n,d]; undefined when the cache's slots are out of logical
                                // order, unless the policy NeedsValues() (gathering costs a copy)
  torch::Tensor new_keys;       // [B,H,m,d] the keys of this forward's m tokens as stored in the
                                // cache (before rotary in shifted mode): for scores that rotation
                                // does not change (key norms), read once per entry
  torch::Tensor queries;        // [B,H,m,d] as attended this step (rotated)
  torch::Tensor query_positions;  // [m] int64 CPU: the rotary position each query was rotated at
                                  // (its text position in `original` mode, else its logical
                                  // index); only for policies that NeedsKeyValues()
  int64_t rotary_dims = 0;        // rotary on dims [0, rotary_dims) of each head, pairs (i, i+r/2)
  double rotary_base = 10000;     // inverse frequency of pair i: base^(-2i / rotary_dims)
  // Attention statistics of this forward, only those the policy asked for (AttentionNeeds):
  torch::Tensor probs;          // [B,H,r,n] float32 probabilities of the LAST r = min(rows, m)
                                // query rows of this forward (r = m when all rows were asked for)
  torch::Tensor received;       // [B,H,n] float64 attention each slot received, summed over all
                                // m query rows of this forward (H2O, observed attention); left
                                // undefined by a fused one-token decode step, whose one row is
                                // `probs` (policies::AttentionReceived falls back to it)
  torch::Tensor positions;      // [B,H,n] int64 true text positions of the slots
  torch::Tensor holes;          // [B,H,n] bool: slots of a head that hold no entry (left by a
                                // policy that KeepsUnevenHeads()); undefined when there are none
  // Slot order (only for policies whose ReadsSlotOrder() is true, on a cache that reuses slots):
  // probs, received, positions and keys are then indexed by slot, not by logical index, and
  // slot_rank[h][s] is the logical index (0 = oldest) of head h's slot s. Null when the slots
  // are in logical order (slot == logical index) or the policy reads logical order.
  const std::vector<std::vector<int64_t>>* slot_rank = nullptr;
  // The logical index of head h's slot s.
  int64_t LogicalIndex(int64_t h, int64_t s) const {
    return slot_rank == nullptr ? s : (*slot_rank)[h][s];
  }
};

// Which attention statistics a policy reads. The fused CPU prefill kernel computes exactly these
// inside its blockwise pass, so no policy costs [H, m, n] probabilities (kv-policies.md §2.5).
struct AttentionNeeds {
  static constexpr int64_t kAllRows = std::numeric_limits<int64_t>::max();
  bool received = false;  // LayerView::received
  int64_t last_rows = 0;  // LayerView::probs holds the last min(last_rows, m) rows
  bool any() const { return received || last_rows > 0; }
};

// A positional rule the engine applies itself, without tensors: keep the `sinks` oldest entries
// and the `window` newest (window/streaming_llm). On batch-1 CPU caches the evicted slot is
// reused by the next token, so the window is a ring buffer after the sinks.
struct SinkWindowRule {
  int64_t sinks = 0;
  int64_t window = 0;
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  virtual std::string name() const = 0;
  // New sequence: drop any per-sequence state (accumulated scores, counters, buffers).
  virtual void Reset(int64_t num_layers) { (void)num_layers; }
  // Slots to keep, [B,H,k] int64 sorted ascending per head; an undefined tensor keeps everything.
  // A policy that KeepsUnevenHeads() pads the rows of heads keeping fewer than k with -1.
  virtual torch::Tensor SelectKeep(const LayerView& view) = 0;
  // True when heads may keep different numbers of entries (adakv): the cache then holds holes
  // (KvCache::KeepWithHoles) and attention masks them.
  virtual bool KeepsUnevenHeads() const { return false; }
  // False when the policy never evicts after a forward of this phase (prefill-only scorers while
  // decoding): the engine then builds no view and calls nothing.
  virtual bool ActsAfter(ForwardPhase phase) const { (void)phase; return true; }
  // The attention statistics SelectKeep reads (none by default).
  virtual AttentionNeeds attention_needs() const { return {}; }
  // Positional policies that keep sinks + a recent window return their rule: the engine then
  // evicts by it directly (same slots as SelectKeep would return) and never calls SelectKeep.
  virtual std::optional<SinkWindowRule> sink_window_rule() const { return std::nullopt; }
  // False when the policy reads only the shape of `keys`, never their values (positional and
  // attention-based policies, and those that read only `new_keys`): lets the engine skip
  // rotating and reordering the cache for the view.
  virtual bool NeedsKeyValues() const { return true; }
  // NeedsKeyValues() for the forward about to run SelectKeep on `layer` in `phase`: false when
  // this call will not read the keys' values (a decoding variant between its compressions), so
  // a quantised cache need not dequantise every entry for it (the view's keys are then a
  // shape-only tensor). Never true where NeedsKeyValues() is false.
  virtual bool NeedsKeyValuesNow(int64_t layer, ForwardPhase phase) const {
    (void)layer;
    (void)phase;
    return NeedsKeyValues();
  }
  // True when the policy maps slots to logical indices itself (LayerView::slot_rank): the engine
  // then hands it the kernels' per-slot statistics as they are, without reordering them into
  // logical order after every layer of every step (per-step scorers: h2o, tova, knorm).
  virtual bool ReadsSlotOrder() const { return false; }
  // True when the policy reads LayerView::values (given in logical order, a gather when the
  // cache reuses slots); otherwise values are set only while the slots are in logical order.
  virtual bool NeedsValues() const { return false; }
};

// Builds a policy from a validated spec (core/policy_spec.h). Unknown names are errors.
absl::StatusOr<std::unique_ptr<KvPolicy>> MakePolicy(const PolicySpec& spec);

}  // namespace kvgrid
