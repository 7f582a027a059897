// Shared selection mechanics for the KV policies (the policy files only say how they score, what
// they protect and when they run). Conventions: kv-policies.md §2.7.
//
// Every function returns kept slots as int64 tensors sorted ascending along the last axis,
// [B,H,k] for a layer, on the device of the inputs.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/engine/kv_policy.h"
#include "core/policy_spec.h"

namespace kvgrid {
namespace policies {

// TORCH_CHECKs that the view holds exactly one sequence. The selection code is written for
// [B,H,...] tensors, but the view carries no padding mask, so B > 1 is refused (the engine turns
// the c10::Error into a Status).
void RequireSingleSequence(const LayerView& view, const std::string& policy);

// The attention each slot received from this forward's query rows, [B,H,n] float64: the view's
// `received` when the engine computed it, else summed over the rows of `probs` (views built by
// hand in tests carry every row).
torch::Tensor AttentionReceived(const LayerView& view);

// The keys of this forward's m tokens, [B,H,m,d]: the view's `new_keys`, else the last m of
// `keys` (views built by hand in tests).
torch::Tensor NewKeys(const LayerView& view);

// floor(n * ratio) computed as Python's int(n * ratio) (kvpress ScorerPress).
int64_t FloorRatio(int64_t n, double ratio);
// ceil(n * ratio) (l2compress keep_ratio).
int64_t CeilRatio(int64_t n, double ratio);
// Python's round() on a double: nearest, ties to even (kvpress PyramidKV budgets).
int64_t RoundHalfEven(double x);

// A budget given either as an absolute token count or as a ratio of a length.
struct Budget {
  int64_t count = -1;  // >= 1 when absolute
  double ratio = 0;    // in (0,1] when relative

  // Reads `budget` / `ratio` from a validated spec (exactly one is present).
  static Budget FromSpec(const PolicySpec& spec, const std::string& count_key = "budget",
                         const std::string& ratio_key = "ratio");
  bool is_ratio() const { return count < 0; }
  // count, or max(1, floor(length * ratio)): a ratio never empties a cache (kvpress
  // CompressionRatioDecodingPress clamps the same way).
  int64_t Resolve(int64_t length) const;
};

// Top-k along the last axis with kvgrid's tie rule: rank by score descending, equal scores ->
// lower slot index first; the k winners are then re-sorted ascending. scores: [..., n] (any
// floating dtype), 0 <= k <= n. Returns [..., k] int64.
torch::Tensor TopKAscending(const torch::Tensor& scores, int64_t k);
// The same rule on one row of plain numbers: out[0..k) = the kept slots, ascending.
void TopKAscendingRow(const double* scores, int64_t n, int64_t k, int64_t* out);

// Scores a per-step policy keeps beside the cache, one per held entry of a layer in logical
// order (head h's entry i at rows.row(h)[i]): grown by each forward's m new entries, compacted to
// the kept ones. Rows have growth room, so a decode step neither allocates nor copies them.
// Per-step policies rely on seeing every forward of a sequence (Reset() between).
class HeldScores {
 public:
  struct Rows {
    double* data = nullptr;
    int64_t stride = 0;
    double* row(int64_t h) const { return data + h * stride; }
  };
  void Reset(int64_t num_layers);
  bool SizedFor(int64_t num_layers) const {
    return static_cast<int64_t>(layers_.size()) == num_layers;
  }
  // Checks the layer held view.n - view.new_tokens entries, grows every head's row to view.n
  // (the new entries' scores 0) and returns the rows.
  Rows Grow(const LayerView& view, int64_t heads, const std::string& policy);
  // Keeps kept[h * k + j], j < k (ascending logical indices), of every head.
  void Keep(int64_t layer, const int64_t* kept, int64_t k);

 private:
  struct Layer {
    std::vector<double> scores;  // [heads][stride]
    int64_t heads = 0, held = 0, stride = 0;
  };
  std::vector<Layer> layers_;
};

// Adds per_slot[s] (head h's statistic of slot s, s < view.n) to logical_row at each slot's
// logical index (LayerView::slot_rank; the identity when the view is in logical order).
template <typename T>
void AddInLogicalOrder(const LayerView& view, int64_t h, const T* per_slot, double* logical_row) {
  if (view.slot_rank == nullptr) {
    for (int64_t s = 0; s < view.n; ++s) logical_row[s] += static_cast<double>(per_slot[s]);
    return;
  }
  const int64_t* rank = (*view.slot_rank)[h].data();
  for (int64_t s = 0; s < view.n; ++s) logical_row[rank[s]] += static_cast<double>(per_slot[s]);
}

// Top-k over the scored prefix (slots [0, p), p = prefix_scores.size(-1)) plus every slot of the
// protected tail [p, n). Returns [..., k + n - p] ascending.
torch::Tensor TopKPlusTail(const torch::Tensor& prefix_scores, int64_t k, int64_t n);

// Slots [0, sinks) and [n - window, n) for every (b, h): [B,H,sinks+window]. Requires
// sinks + window <= n.
torch::Tensor SinksAndWindow(int64_t batch, int64_t heads, int64_t n, int64_t sinks,
                             int64_t window, const torch::Device& device);

// Per-layer selection shared by all heads: keep [B,k] -> [B,H,k] (contiguous copy).
torch::Tensor ShareAcrossHeads(const torch::Tensor& keep, int64_t heads);

// 1-D pooling along the last axis, stride 1, padding kernel/2 (kernel odd, output length = input
// length). Max pooling pads with -inf; average pooling counts the zero padding (divides by
// kernel), as torch's max_pool1d / avg_pool1d(count_include_pad=true) do. scores: [B,H,p] float.
enum class Pooling { kMax, kAvg };
torch::Tensor Pool1d(const torch::Tensor& scores, int64_t kernel, Pooling pooling);

// Attention probabilities of stored queries against the layer's current keys: softmax over all n
// keys (float32) of q.k^T / sqrt(d), where key j is visible to query i iff
// key_positions[j] <= query_positions[i] (causal by true text position, so it stays right after
// evictions). queries [B,H,r,d], query_positions [B,H,r], keys [B,H,n,d], key_positions [B,H,n].
// Returns [B,H,r,n] float32.
torch::Tensor WindowAttention(const torch::Tensor& queries, const torch::Tensor& query_positions,
                              const torch::Tensor& keys, const torch::Tensor& key_positions);

// Per-layer buffer of the last `capacity` queries (and their true positions) seen by a layer, for
// the decoding variants of the prefill scorers (kvpress DecodingPress keeps a hidden-state buffer).
class QueryBuffer {
 public:
  void Reset(int64_t num_layers, int64_t capacity);
  // Appends the view's queries [B,H,m,d]; their positions are the last m slots of view.positions.
  void Append(const LayerView& view);
  const torch::Tensor& queries(int64_t layer) const { return queries_.at(layer); }
  const torch::Tensor& positions(int64_t layer) const { return positions_.at(layer); }
  int64_t size(int64_t layer) const;

 private:
  int64_t capacity_ = 0;
  std::vector<torch::Tensor> queries_;    // [B,H,r,d]
  std::vector<torch::Tensor> positions_;  // [B,H,r] int64
};

// Base class of the kvpress-style scorers that run once at prefill (ForwardPhase::kPrefill) and,
// with `interval` > 0, also every `interval` decode forwards of a layer (the counter is per layer
// and restarts after each such decode step, as kvpress DecodingPress). Budget: `budget` (tokens
// kept) or `ratio`: at prefill floor(n * ratio) (kvpress ScorerPress); while decoding
// floor(tokens_seen * ratio) (kvpress CompressionRatioDecodingPress), both at least 1.
class ScorerPolicy : public KvPolicy {
 public:
  // query_buffer > 0: keep the last `query_buffer` queries of every layer for the decoding
  // variant (only when interval > 0).
  ScorerPolicy(const PolicySpec& spec, int64_t query_buffer);

  std::string name() const override { return name_; }
  void Reset(int64_t num_layers) override;
  torch::Tensor SelectKeep(const LayerView& view) final;
  bool ActsAfter(ForwardPhase phase) const override {
    return phase != ForwardPhase::kDecode || interval_ > 0;
  }
  // While decoding, keys are read only at the step that compresses (every `interval` steps).
  bool NeedsKeyValuesNow(int64_t layer, ForwardPhase phase) const override {
    if (!NeedsKeyValues()) return false;
    if (phase != ForwardPhase::kDecode) return true;
    if (interval_ == 0) return false;
    if (layer >= static_cast<int64_t>(decode_steps_.size())) return true;
    return decode_steps_[layer] + 1 >= interval_;  // SelectKeep counts this step first
  }

  // What this scorer reads of every forward, whether or not it compresses after it (the
  // decoding variant's query buffer). SelectKeep calls it; a wrapper (chunkkv) calls it for its
  // inner scorer.
  void Observe(const LayerView& view);
  // Per-head scores [B,H,n] of the view's entries (higher = kept first), float or double; slots
  // the method always keeps (SnapKV's observation window) score the layer's maximum over every
  // head + 1 (kvpress 0.5.4's padding; kv-policies-next.md C2). Wrappers select on these.
  virtual torch::Tensor Scores(const LayerView& view, bool decoding) = 0;

 protected:
  // Called at the end of Observe(): wrappers pass the view on to their inner scorer.
  virtual void Observed(const LayerView& view) { (void)view; }
  // Entries this layer keeps now; >= view.n means "no compression".
  virtual int64_t Target(const LayerView& view, bool decoding) const;
  // Slots to keep, [B,H,k] ascending, for 1 <= k < view.n: by default the per-head top k of
  // Scores() (kvpress ScorerPress), on the view's device.
  virtual torch::Tensor Select(const LayerView& view, bool decoding, int64_t k);

  const Budget& budget() const { return budget_; }
  const QueryBuffer& query_buffer() const { return buffer_; }

 private:
  void EnsureLayers(int64_t num_layers);

  std::string name_;
  Budget budget_;
  int64_t interval_ = 0;
  int64_t buffer_capacity_ = 0;
  int64_t num_layers_ = -1;
  std::vector<int64_t> decode_steps_;  // per layer, since the last decoding compression
  QueryBuffer buffer_;
};

// Base of the wrappers that rank with an inner scorer's Scores() (chunkkv, adakv; built with
// NewInnerScorer): the inner scorer observes every forward and is reset with the wrapper, and the
// wrapper asks the engine for what the inner scorer reads. A wrapper overrides Select().
class WrapperScorerPolicy : public ScorerPolicy {
 public:
  WrapperScorerPolicy(const PolicySpec& spec, std::unique_ptr<ScorerPolicy> inner)
      : ScorerPolicy(spec, 0), inner_(std::move(inner)) {}

  void Reset(int64_t num_layers) override {
    ScorerPolicy::Reset(num_layers);
    inner_->Reset(num_layers);
  }
  AttentionNeeds attention_needs() const override { return inner_->attention_needs(); }
  bool NeedsKeyValues() const override { return inner_->NeedsKeyValues(); }
  bool NeedsValues() const override { return inner_->NeedsValues(); }
  torch::Tensor Scores(const LayerView& view, bool decoding) override {
    return inner_->Scores(view, decoding);
  }

 protected:
  void Observed(const LayerView& view) override { inner_->Observe(view); }

 private:
  std::unique_ptr<ScorerPolicy> inner_;
};

}  // namespace policies
}  // namespace kvgrid
