// random: uniformly random slots, the control baseline (NVIDIA/kvpress
// kvpress/presses/random_press.py; kv-policies.md §3.8). Per layer and head, scores U[0,1) from a
// std::mt19937_64 seeded with `seed`, re-seeded by Reset() so every sequence draws the same
// numbers for the same sequence of calls. Prefill (+ decoding variant with `interval`).
#include <random>

#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class RandomPolicy : public ScorerPolicy {
 public:
  explicit RandomPolicy(const PolicySpec& spec)
      : ScorerPolicy(spec, 0), seed_(static_cast<uint64_t>(spec.Int("seed", 0))), rng_(seed_) {}
  bool NeedsKeyValues() const override { return false; }

  void Reset(int64_t num_layers) override {
    ScorerPolicy::Reset(num_layers);
    rng_.seed(seed_);
  }

  torch::Tensor Scores(const LayerView& view, bool) override {
    const int64_t b = view.keys.size(0), h = view.keys.size(1), n = view.n;
    torch::Tensor scores = torch::empty({b, h, n}, torch::kDouble);
    double* out = scores.data_ptr<double>();
    for (int64_t i = 0; i < b * h * n; ++i) {
      out[i] = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // 53 random bits in [0,1)
    }
    return scores;
  }

 private:
  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewRandomPolicy(const PolicySpec& spec) {
  return std::make_unique<RandomPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
