// knorm: keep the keys with the LOWEST L2 norm (alessiodevoto/l2compress cache.py and
// eval_lm_quick.py; NVIDIA/kvpress kvpress/presses/knorm_press.py; kv-policies.md §3.6, §2.7.8).
// Score of slot j, per layer and head: -||k_j||_2 (rotation-invariant, so pre/post-RoPE keys give
// the same norm). Layers in `skip_layers` are never pruned. Runs after every forward (streaming,
// as l2compress): once n >= prune_after, keep ceil(keep_ratio * n) slots (l2compress), or with
// `budget` keep `budget` slots when n > budget. Kept slots are re-sorted by position.
#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

// out[t] = -||keys[0, h, t, :]||_2 rounded to float32 (the keys' precision), for head h's m
// keys: a plain loop over float32 CPU keys (every layer of every step), torch otherwise.
void NegatedNorms(const torch::Tensor& keys, int64_t h, double* out) {
  const int64_t m = keys.size(2), d = keys.size(3);
  if (keys.device().is_cpu() && keys.scalar_type() == torch::kFloat && keys.stride(3) == 1) {
    const float* base = keys.data_ptr<float>() + h * keys.stride(1);
    for (int64_t t = 0; t < m; ++t) {
      const float* k = base + t * keys.stride(2);
      double sum = 0;
      for (int64_t i = 0; i < d; ++i) sum += static_cast<double>(k[i]) * k[i];
      out[t] = -static_cast<double>(static_cast<float>(std::sqrt(sum)));
    }
    return;
  }
  const torch::Tensor norms =
      keys[0][h].to(torch::kFloat).norm(2, -1).neg().to(torch::kCPU, torch::kDouble).contiguous();
  std::copy(norms.data_ptr<double>(), norms.data_ptr<double>() + m, out);
}

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
  bool NeedsKeyValues() const override { return false; }  // reads new_keys only
  bool ReadsSlotOrder() const override { return true; }   // no per-slot statistic

  void Reset(int64_t num_layers) override { norms_.Reset(num_layers); }

  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (skip_.count(view.layer)) return {};
    if (!norms_.SizedFor(view.num_layers)) Reset(view.num_layers);
    // A key's norm never changes (rotation keeps it), so each entry's is computed once, when it
    // arrives, and kept beside the cache in logical order.
    const int64_t n = view.n, m = view.new_tokens;
    const torch::Tensor new_keys = NewKeys(view);
    const int64_t H = new_keys.size(1);
    const HeldScores::Rows norms = norms_.Grow(view, H, name());  // the last m are new
    for (int64_t h = 0; h < H; ++h) NegatedNorms(new_keys, h, norms.row(h) + n - m);
    if (n < prune_after_) return {};
    const int64_t k = std::max<int64_t>(1, ratio_ ? CeilRatio(n, keep_ratio_) : budget_);
    if (k >= n) return {};
    torch::Tensor keep = torch::empty({1, H, k}, torch::kInt64);
    int64_t* kept = keep.data_ptr<int64_t>();
    for (int64_t h = 0; h < H; ++h) TopKAscendingRow(norms.row(h), n, k, kept + h * k);
    norms_.Keep(view.layer, kept, k);
    return keep.to(new_keys.device());
  }

 private:
  bool ratio_;
  double keep_ratio_;
  int64_t budget_;
  int64_t prune_after_;
  std::set<int64_t> skip_;
  HeldScores norms_;  // -||k|| of every held entry
};

}  // namespace

std::unique_ptr<KvPolicy> NewKnormPolicy(const PolicySpec& spec) {
  return std::make_unique<KnormPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
