// observed_attention: mean attention received from the queries that can see the slot
// (NVIDIA/kvpress kvpress/presses/observed_attention_press.py; kv-policies.md §3.8). Per layer and
// head: score_j = sum_i A[i,j] / (number of query rows i that can see j) — at prefill the rows of
// this forward (count min(m, n - j)); in the decoding variant the layer's buffer of the last 256
// queries (kvpress DecodingPress's hidden-state buffer size), attention recomputed against the
// current keys, visibility by true position. Prefill (+ decoding variant with `interval`).
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

constexpr int64_t kDecodingQueryBuffer = 256;

class ObservedAttentionPolicy : public ScorerPolicy {
 public:
  explicit ObservedAttentionPolicy(const PolicySpec& spec)
      : ScorerPolicy(spec, kDecodingQueryBuffer) {}
  AttentionNeeds attention_needs() const override { return {.received = true}; }

 public:
  torch::Tensor Scores(const LayerView& view, bool decoding) override {
    torch::Tensor received, seen_by;  // [B,H,n] float64
    if (decoding) {
      const torch::Tensor& qpos = query_buffer().positions(view.layer);
      received = WindowAttention(query_buffer().queries(view.layer), qpos, view.keys, view.positions)
                     .to(torch::kDouble)
                     .sum(2);
      seen_by = (view.positions.unsqueeze(-2) <= qpos.unsqueeze(-1)).sum(2).to(torch::kDouble);
    } else {
      const int64_t m = view.new_tokens, n = view.n;
      received = AttentionReceived(view);
      seen_by = torch::arange(n, 0, -1, received.options()).clamp_max(static_cast<double>(m));
    }
    return received / seen_by.clamp_min(1.0);
  }
};

}  // namespace

std::unique_ptr<KvPolicy> NewObservedAttentionPolicy(const PolicySpec& spec) {
  return std::make_unique<ObservedAttentionPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
