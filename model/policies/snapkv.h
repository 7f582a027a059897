// SnapKV scoring and selection, shared with PyramidKV (which only changes the per-layer budget).
#pragma once

#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {

class SnapKvPolicy : public ScorerPolicy {
 public:
  explicit SnapKvPolicy(const PolicySpec& spec);
  AttentionNeeds attention_needs() const override { return {.last_rows = window_}; }

 protected:
  torch::Tensor Select(const LayerView& view, bool decoding, int64_t k) override;
  int64_t window() const { return window_; }

 private:
  int64_t window_;
  int64_t kernel_;
  Pooling pooling_;
};

}  // namespace policies
}  // namespace kvgrid
