// knorm: keep the keys with the LOWEST L2 norm (alessiodevoto/l2compress cache.py and
// eval_lm_quick.py; NVIDIA/kvpress kvpress/presses/knorm_press.py; kv-policies.md §3.6, §2.7.8).
// Score of slot j, per layer and head: -||k_j||_2 (rotation-invariant, so pre/post-RoPE keys give
// the same norm). Layers in `skip_layers` are never pruned. Runs after every forward (streaming,
// as l2compress): once n >= prune_after, keep ceil(keep_ratio * n) slots (l2compress), or with
// `budget` keep `budget` slots when n > budget. Kept slots are re-sorted by position.
#include <algorithm>
#include <set>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class KnormPolicy : public KvPolicy {
 public:
  explicit KnormPolicy(const PolicySpec& spec)
      : ratio_(spec.Has("keep_ratio")),
        keep_ratio_(spec.Real("keep_ratio", 1.0)),
        budget_(spec.Int("budget")),
        prune_after_(spec.Int("prune_after", 0)) {
    for (int64_t l : spec.IntList("skip_layers")) skip_.insert(l);
  }
  std::string name() const override { return "knorm"; }

  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (skip_.count(view.layer) || view.n < prune_after_) return {};
    const int64_t k = std::max<int64_t>(1, ratio_ ? CeilRatio(view.n, keep_ratio_) : budget_);
    if (k >= view.n) return {};
    return TopKAscending(view.keys.to(torch::kFloat).norm(2, -1).neg(), k);
  }

 private:
  bool ratio_;
  double keep_ratio_;
  int64_t budget_;
  int64_t prune_after_;
  std::set<int64_t> skip_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewKnormPolicy(const PolicySpec& spec) {
  return std::make_unique<KnormPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
