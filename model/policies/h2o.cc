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
  AttentionNeeds attention_needs() const override { return {.received = true}; }

  void Reset(int64_t num_layers) override {
    scores_.assign(num_layers, torch::Tensor());
    resolved_ = false;
  }

  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (static_cast<int64_t>(scores_.size()) != view.num_layers) Reset(view.num_layers);
    ResolveBudgets(view.prompt_length);

    const int64_t n = view.n, m = view.new_tokens;
    torch::Tensor received = AttentionReceived(view);  // [B,H,n]
    torch::Tensor& acc = scores_.at(view.layer);
    const int64_t held = acc.defined() ? acc.size(-1) : 0;
    TORCH_CHECK(held == n - m, "h2o: layer ", view.layer, " held ", n - m,
                " entries before this forward but the policy scored ", held,
                "; call Reset() at the start of every sequence");
    acc = held == 0 ? received : received + torch::nn::functional::pad(
                                                acc, torch::nn::functional::PadFuncOptions({0, m}));
    if (n <= heavy_ + recent_) return {};
    torch::Tensor keep = TopKPlusTail(acc.narrow(-1, 0, n - recent_), heavy_, n);
    acc = acc.gather(-1, keep);
    return keep;
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
  std::vector<torch::Tensor> scores_;  // per layer [B,H,held] float64
};

}  // namespace

std::unique_ptr<KvPolicy> NewH2oPolicy(const PolicySpec& spec) {
  return std::make_unique<H2oPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
