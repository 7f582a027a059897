// The KV policy interface (kvpress-style): a policy only says which slots of a layer survive.
// The engine calls SelectKeep() right after a layer's attention for the current forward (the
// current tokens always attend to the uncompressed cache plus themselves; kv-policies.md §2.2,
// §2.7.2) and then compacts the cache. Shared selection mechanics live in model/policies/selection.h.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/policy_spec.h"

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
  torch::Tensor values;         // [B,H,n,d]
  torch::Tensor queries;        // [B,H,m,d] as attended this step (rotated)
  torch::Tensor probs;          // [B,H,m,n] float32 attention probabilities of this forward
  torch::Tensor positions;      // [B,H,n] int64 true text positions of the slots
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  virtual std::string name() const = 0;
  // New sequence: drop any per-sequence state (accumulated scores, counters, buffers).
  virtual void Reset(int64_t num_layers) { (void)num_layers; }
  // Slots to keep, [B,H,k] int64 sorted ascending per head; an undefined tensor keeps everything.
  virtual torch::Tensor SelectKeep(const LayerView& view) = 0;
  // True when the policy needs `probs` (lets the engine skip keeping them when nobody reads them).
  virtual bool NeedsAttention() const { return false; }
  // False when the policy reads only the shape of `keys`, never their values (positional and
  // attention-based policies): lets the engine skip rotating the cache for the view in shifted
  // mode, where keys are stored before rotary.
  virtual bool NeedsKeyValues() const { return true; }
};

// Builds a policy from a validated spec (model/policy_spec.h). Unknown names are errors.
absl::StatusOr<std::unique_ptr<KvPolicy>> MakePolicy(const PolicySpec& spec);

}  // namespace kvgrid
