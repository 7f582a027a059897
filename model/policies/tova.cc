// tova: Token Omission Via Attention (schwartz-lab-NLP/TOVA src/tova_cache.py TOVACache.reduce;
// kv-policies.md §3.7, §2.7.10). Per layer: the LAST query row's attention probabilities averaged
// over heads, over every cached key including the current token itself. After every forward
// (prefill: its last row cuts an over-long prompt in one shot), when n > cache_size keep the top
// cache_size slots, the same slots for every head.
#include <algorithm>
#include <vector>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class TovaPolicy : public KvPolicy {
 public:
  explicit TovaPolicy(const PolicySpec& spec) : cache_size_(spec.Int("cache_size")) {}
  std::string name() const override { return "tova"; }
  bool NeedsKeyValues() const override { return false; }
  bool ReadsSlotOrder() const override { return true; }
  AttentionNeeds attention_needs() const override { return {.last_rows = 1}; }

  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (view.n <= cache_size_) return {};
    TORCH_CHECK(view.probs.defined(), "tova needs the attention probabilities of layer ", view.layer);
    // Plain loops: this runs after every layer of every decode step.
    const torch::Tensor last =
        view.probs.select(2, view.probs.size(2) - 1).to(torch::kCPU, torch::kFloat).contiguous();
    const float* p = last.data_ptr<float>();  // [H, n] by slot
    const int64_t H = last.size(1), n = view.n;
    std::vector<double>& mean = mean_;  // by logical index
    mean.assign(n, 0.0);
    for (int64_t h = 0; h < H; ++h) AddInLogicalOrder(view, h, p + h * n, mean.data());
    for (double& x : mean) x /= static_cast<double>(H);
    torch::Tensor keep = torch::empty({1, H, cache_size_}, torch::kInt64);
    int64_t* kept = keep.data_ptr<int64_t>();
    TopKAscendingRow(mean.data(), n, cache_size_, kept);
    for (int64_t h = 1; h < H; ++h) std::copy(kept, kept + cache_size_, kept + h * cache_size_);
    return keep.to(view.probs.device());
  }

 private:
  int64_t cache_size_;
  std::vector<double> mean_;  // scratch, reused every step
};

}  // namespace

std::unique_ptr<KvPolicy> NewTovaPolicy(const PolicySpec& spec) {
  return std::make_unique<TovaPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
