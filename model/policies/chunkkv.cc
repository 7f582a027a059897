// chunkkv: keep whole chunks of consecutive tokens, ranked by an inner scorer (NVIDIA/kvpress
// kvpress/presses/chunkkv_press.py; kv-policies-next.md §3; docs/kv-policies.md §3.10).
// Per layer, over the L entries in logical (position) order: S[h][t] = the inner scorer's scores
// (its protected slots at the layer's maximum + 1); a_t = sum over heads of S[h][t]; chunks of
// `chunk_length` c consecutive entries, the last one partial (L mod c entries) when c does not
// divide L; a chunk's score is the mean of its a_t (a partial chunk divides by its own length).
// Keeps the top n_chunks = max(1, int(chunks * keep)) chunks (ties: the lower chunk index), the
// same entries for every head. keep = `ratio` at prefill (kvpress's 1 - compression_ratio);
// otherwise (absolute `budget`, chunked prefill, decoding variant) the keep fraction whose
// int(L * keep) is the ScorerPolicy target (kvpress DecodingPress's search). When L < c the
// inner scorer's own per-head top-k applies (as kvpress delegates to the inner press).
#include "model/policies/chunk_selection.h"
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class ChunkKvPolicy : public WrapperScorerPolicy {
 public:
  ChunkKvPolicy(const PolicySpec& spec, std::unique_ptr<ScorerPolicy> inner)
      : WrapperScorerPolicy(spec, std::move(inner)), chunk_(spec.Int("chunk_length", 20)) {}

 protected:
  torch::Tensor Select(const LayerView& view, bool decoding, int64_t k) override {
    const int64_t n = view.n;
    const torch::Tensor scores = Scores(view, decoding).to(torch::kCPU, torch::kDouble).contiguous();
    if (n < chunk_) return TopKAscending(scores, k).to(view.positions.device());
    const double keep = budget().is_ratio() && !decoding && n == view.new_tokens
                            ? budget().ratio
                            : KeepFractionForTarget(n, k);
    const int64_t H = scores.size(1);
    const std::vector<int64_t> kept = SelectChunks(scores.data_ptr<double>(), H, n, chunk_, keep);
    torch::Tensor out = torch::empty({1, H, static_cast<int64_t>(kept.size())}, torch::kInt64);
    for (int64_t h = 0; h < H; ++h) {
      std::copy(kept.begin(), kept.end(), out.data_ptr<int64_t>() + h * out.size(2));
    }
    return out.to(view.positions.device());
  }

 private:
  int64_t chunk_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewChunkKvPolicy(const PolicySpec& spec) {
  return std::make_unique<ChunkKvPolicy>(spec, NewInnerScorer(spec));
}

}  // namespace policies
}  // namespace kvgrid
