// snapkv: observation-window attention, pooled, once at prefill (FasterDecoding/SnapKV
// snapkv/monkeypatch/snapkv_utils.py SnapKVCluster; NVIDIA/kvpress kvpress/presses/snapkv_press.py;
// kv-policies.md §3.4 and §2.7.6).
// Compresses only when n >= budget (and budget < n, else nothing changes). Window w_eff =
// min(window, n) last slots, always kept. Score of prefix slot j < n - w_eff, per head: sum over
// the window rows of the softmax probabilities (over all n keys, causal) — the last min(window, m)
// rows of this forward's probs at prefill (a prompt shorter than the window uses all its rows);
// in the decoding variant the rows are recomputed from the layer's buffer of the last `window`
// queries against the current keys (selection.h WindowAttention). Pooled over the prefix with
// stride 1, padding kernel/2 (max pads -inf, avg divides by kernel). Keeps the top
// (budget - w_eff) prefix slots + the whole window.
// Budget smaller than the window (possible only with `ratio`, or PyramidKV's kvpress fallback):
// as kvpress, the window slots are scored with the maximum pooled prefix score of the layer
// (kvpress pads with scores.max()) and the top `budget` of prefix + window are kept with kvgrid's
// tie rule, i.e. the prefix slots tied at that maximum first, then the OLDEST window slots.
// With no prefix at all (n <= window) every slot ties and the oldest `budget` slots stay.
#include "model/policies/snapkv.h"

#include <algorithm>

#include "model/policies/policies.h"

namespace kvgrid {
namespace policies {

SnapKvPolicy::SnapKvPolicy(const PolicySpec& spec)
    : ScorerPolicy(spec, spec.Int("window", 32)),
      window_(spec.Int("window", 32)),
      kernel_(spec.Int("kernel", 7)),
      pooling_(spec.Str("pooling", "max") == "avg" ? Pooling::kAvg : Pooling::kMax) {}

torch::Tensor SnapKvPolicy::PrefixScores(const LayerView& view, bool decoding) {
  const int64_t n = view.n;
  const int64_t p = n - std::min(window_, n);
  torch::Tensor rows;  // [B,H,r,n] float32
  if (decoding) {
    rows = WindowAttention(query_buffer().queries(view.layer), query_buffer().positions(view.layer),
                           view.keys, view.positions);
  } else {
    TORCH_CHECK(view.probs.defined(), name(), " needs the attention probabilities of layer ",
                view.layer);
    const int64_t m = view.probs.size(2);
    const int64_t r = std::min(window_, m);
    rows = view.probs.narrow(2, m - r, r).to(torch::kFloat);
  }
  return Pool1d(rows.narrow(-1, 0, p).sum(2), kernel_, pooling_);
}

torch::Tensor SnapKvPolicy::Scores(const LayerView& view, bool decoding) {
  const torch::Tensor scores = PrefixScores(view, decoding);
  const int64_t w = view.n - scores.size(-1);
  const float pad = scores.numel() > 0 ? scores.max().item<float>() + 1.0f : 1.0f;
  std::vector<int64_t> shape = scores.sizes().vec();
  shape.back() = w;
  return torch::cat({scores, torch::full(shape, pad, scores.options())}, -1);
}

torch::Tensor SnapKvPolicy::Select(const LayerView& view, bool decoding, int64_t k) {
  const int64_t n = view.n;
  const int64_t w = std::min(window_, n);
  const int64_t p = n - w;
  torch::Tensor scores = PrefixScores(view, decoding);  // [B,H,p]
  if (k >= w) return TopKPlusTail(scores, k - w, n);
  const float pad = p > 0 ? scores.max().item<float>() : 0.0f;
  std::vector<int64_t> shape = scores.sizes().vec();
  shape.back() = w;
  return TopKAscending(torch::cat({scores, torch::full(shape, pad, scores.options())}, -1), k);
}

std::unique_ptr<KvPolicy> NewSnapKvPolicy(const PolicySpec& spec) {
  return std::make_unique<SnapKvPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
