// SnapKV scoring and selection, shared with PyramidKV (which only changes the per-layer budget).
#pragma once

#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {

class SnapKvPolicy : public ScorerPolicy {
 public:
  explicit SnapKvPolicy(const PolicySpec& spec);
  AttentionNeeds attention_needs() const override { return {.last_rows = window_}; }
  // Pooled window attention of the prefix; the window itself at the layer's maximum + 1.
  torch::Tensor Scores(const LayerView& view, bool decoding) override;

 protected:
  torch::Tensor Select(const LayerView& view, bool decoding, int64_t k) override;
  int64_t window() const { return window_; }

 private:
  int64_t window_;
  int64_t kernel_;
  Pooling pooling_;
  // [B,H,p] pooled window attention of the prefix slots [0, p), p = n - min(window, n).
  torch::Tensor PrefixScores(const LayerView& view, bool decoding);
};

}  // namespace policies
}  // namespace kvgrid
