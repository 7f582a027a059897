// h2o: heavy hitters + recent window, real eviction after every forward (FMInference/H2O
// h2o_hf/utils_real_drop/modify_llama.py H2OKVCache_LayerWise; budgets as ratios of the prompt as
// in h2o_hf/utils_hh/modify_gptneox.py; kv-policies.md §3.3, §2.7.9).
// Score of slot j (per layer, per head, per sequence, float64): the attention it received from
// every query row processed so far, prefill rows and each token's attention to itself included;
// a new token starts with what it receives in its own forward; scores of evicted slots are
// dropped. When n > heavy + recent: keep the last `recent` slots plus the `heavy` best-scored
// older ones. Ratios become counts once per sequence, int(ratio * prompt_length), at the first
// call; if both round to 0 the policy keeps 1 recent slot (never an empty cache).
#include <algorithm>
#include <vector>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class H2oPolicy : public KvPolicy {
 public:
  explicit H2oPolicy(const PolicySpec& spec)
      : ratios_(!spec.Has("heavy")),
        heavy_ratio_(spec.Real("heavy_ratio")),
        recent_ratio_(spec.Real("recent_ratio")),
        heavy_(spec.Int("heavy")),
        recent_(spec.Int("recent")) {}

  std::string name() const override { return "h2o"; }
  bool NeedsKeyValues() const override { return false; }
  bool ReadsSlotOrder() const override { return true; }
  AttentionNeeds attention_needs() const override { return {.received = true}; }

  void Reset(int64_t num_layers) override {
    scores_.Reset(num_layers);
    resolved_ = false;
  }

  // Plain loops over [H, n] doubles: this runs after every layer of every decode step.
  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (!scores_.SizedFor(view.num_layers)) Reset(view.num_layers);
    ResolveBudgets(view.prompt_length);

    const int64_t n = view.n;
    const int64_t H = view.received.defined() ? view.received.size(1) : view.probs.size(1);
    const HeldScores::Rows acc = scores_.Grow(view, H, name());  // by logical index
    if (!view.received.defined() && view.probs.defined() && view.probs.size(2) == 1 &&
        view.probs.device().is_cpu() && view.probs.scalar_type() == torch::kFloat &&
        view.probs.is_contiguous()) {
      // A decode step's one query row, read as the kernel left it (float32, by slot).
      const float* row = view.probs.data_ptr<float>();
      for (int64_t h = 0; h < H; ++h) AddInLogicalOrder(view, h, row + h * n, acc.row(h));
    } else {
      const torch::Tensor received =
          AttentionReceived(view).to(torch::kCPU, torch::kDouble).contiguous();  // [1,H,n]
      const double* recv = received.data_ptr<double>();  // by slot
      for (int64_t h = 0; h < H; ++h) AddInLogicalOrder(view, h, recv + h * n, acc.row(h));
    }
    if (n <= heavy_ + recent_) return {};
    // Keep the `heavy` best-scored of the older slots and every one of the last `recent`.
    const int64_t k = heavy_ + recent_;
    torch::Tensor keep = torch::empty({1, H, k}, torch::kInt64);
    int64_t* kept = keep.data_ptr<int64_t>();
    for (int64_t h = 0; h < H; ++h) {
      int64_t* row = kept + h * k;
      TopKAscendingRow(acc.row(h), n - recent_, heavy_, row);
      for (int64_t j = 0; j < recent_; ++j) row[heavy_ + j] = n - recent_ + j;
    }
    scores_.Keep(view.layer, kept, k);
    return keep.to(view.received.defined() ? view.received.device() : view.probs.device());
  }

 private:
  void ResolveBudgets(int64_t prompt_length) {
    if (!ratios_ || resolved_) return;
    heavy_ = static_cast<int64_t>(heavy_ratio_ * static_cast<double>(prompt_length));
    recent_ = static_cast<int64_t>(recent_ratio_ * static_cast<double>(prompt_length));
    if (heavy_ + recent_ == 0) recent_ = 1;
    resolved_ = true;
  }

  bool ratios_;
  double heavy_ratio_, recent_ratio_;
  int64_t heavy_, recent_;
  bool resolved_ = false;
  HeldScores scores_;  // accumulated attention of every held entry
};

}  // namespace

std::unique_ptr<KvPolicy> NewH2oPolicy(const PolicySpec& spec) {
  return std::make_unique<H2oPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
