// adakv: head-adaptive budgets around an inner scorer (NVIDIA/kvpress
// kvpress/presses/adakv_press.py; kv-policies-next.md §1; docs/kv-policies.md §3.10).
// Per layer, over the L entries of every head: S[h][t] = the inner scorer's scores (its protected
// slots at the layer's maximum + 1, the same in every head); each head's best
// int(T * alpha) entries (at least 1) are safeguarded; the layer keeps H * T entries in all, the
// safeguarded ones and then the best of the rest over all heads (T = the ScorerPolicy target per
// head), so heads keep different numbers of entries. Ties: higher score, then the lower position,
// then the lower head. The cache holds the result with holes (KvCache::KeepWithHoles): each head's
// kept entries in position order, its other slots masked out of attention; KV bytes count the
// padded storage. Runs at prefill (and after each prefill chunk); no decoding variant.
#include <algorithm>

#include "model/policies/head_adaptive_selection.h"
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class AdaKvPolicy : public WrapperScorerPolicy {
 public:
  AdaKvPolicy(const PolicySpec& spec, std::unique_ptr<ScorerPolicy> inner)
      : WrapperScorerPolicy(spec, std::move(inner)), alpha_(spec.Real("alpha", 0.2)) {}

  bool KeepsUnevenHeads() const override { return true; }

 protected:
  torch::Tensor Select(const LayerView& view, bool decoding, int64_t k) override {
    const torch::Tensor scores = Scores(view, decoding).to(torch::kCPU, torch::kDouble).contiguous();
    const int64_t H = scores.size(1), n = view.n;
    torch::Tensor holes;
    if (view.holes.defined()) holes = view.holes.to(torch::kCPU).contiguous();
    const std::vector<std::vector<int64_t>> kept =
        SelectHeadAdaptive(scores.data_ptr<double>(), holes.defined() ? holes.data_ptr<bool>() : nullptr,
                           H, n, k, alpha_);
    size_t widest = 0;
    for (const auto& row : kept) widest = std::max(widest, row.size());
    torch::Tensor out = torch::full({1, H, static_cast<int64_t>(widest)}, -1, torch::kInt64);
    for (int64_t h = 0; h < H; ++h) {
      std::copy(kept[h].begin(), kept[h].end(), out.data_ptr<int64_t>() + h * out.size(2));
    }
    return out.to(view.positions.device());
  }

 private:
  double alpha_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewAdaKvPolicy(const PolicySpec& spec) {
  return std::make_unique<AdaKvPolicy>(spec, NewInnerScorer(spec));
}

}  // namespace policies
}  // namespace kvgrid
