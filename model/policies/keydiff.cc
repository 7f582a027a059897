// keydiff: keep the keys least similar to the mean key direction (NVIDIA/kvpress
// kvpress/presses/keydiff_press.py; kv-policies.md §3.8). Per layer and head:
// score_j = -cos(k_j, mean_i normalize(k_i)) over the layer's current keys (one-shot, not the
// paper's block-wise variant). Prefill (+ decoding variant with `interval`).
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class KeyDiffPolicy : public ScorerPolicy {
 public:
  explicit KeyDiffPolicy(const PolicySpec& spec) : ScorerPolicy(spec, 0) {}

 public:
  torch::Tensor Scores(const LayerView& view, bool) override {
    namespace F = torch::nn::functional;
    torch::Tensor keys = view.keys.to(torch::kFloat);
    torch::Tensor anchor =
        F::normalize(keys, F::NormalizeFuncOptions().p(2).dim(-1)).mean(2, /*keepdim=*/true);
    return F::cosine_similarity(keys, anchor, F::CosineSimilarityFuncOptions().dim(-1)).neg();
  }
};

}  // namespace

std::unique_ptr<KvPolicy> NewKeyDiffPolicy(const PolicySpec& spec) {
  return std::make_unique<KeyDiffPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
