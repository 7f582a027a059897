// tova: Token Omission Via Attention (schwartz-lab-NLP/TOVA src/tova_cache.py TOVACache.reduce;
// kv-policies.md §3.7, §2.7.10). Per layer: the LAST query row's attention probabilities averaged
// over heads, over every cached key including the current token itself. After every forward
// (prefill: its last row cuts an over-long prompt in one shot), when n > cache_size keep the top
// cache_size slots, the same slots for every head.
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
  AttentionNeeds attention_needs() const override { return {.last_rows = 1}; }

  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (view.n <= cache_size_) return {};
    TORCH_CHECK(view.probs.defined(), "tova needs the attention probabilities of layer ", view.layer);
    const int64_t m = view.probs.size(2);
    torch::Tensor scores = view.probs.select(2, m - 1).to(torch::kDouble).mean(1);  // [B,n]
    return ShareAcrossHeads(TopKAscending(scores, cache_size_), view.probs.size(1));
  }

 private:
  int64_t cache_size_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewTovaPolicy(const PolicySpec& spec) {
  return std::make_unique<TovaPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
