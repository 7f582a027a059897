// streaming_llm: attention sinks + recent window (mit-han-lab/streaming-llm
// streaming_llm/kv_cache.py StartRecentKVCache; kv-policies.md §3.2). Positional only, the same
// slots for every head. Runs after every forward's attention: when n > sink_tokens + window keep
// slots [0, sink_tokens) and the last `window` (the just-processed token is inside the window),
// so "4+28" holds 32 entries between steps and the next token attends to 33.
// Pos-shift (in-cache positions) is the engine's positional mode, not the policy's business.
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class StreamingLlmPolicy : public KvPolicy {
 public:
  explicit StreamingLlmPolicy(const PolicySpec& spec)
      : sinks_(spec.Int("sink_tokens", 4)), window_(spec.Int("window")) {}
  std::string name() const override { return "streaming_llm"; }
  bool NeedsKeyValues() const override { return false; }
  std::optional<SinkWindowRule> sink_window_rule() const override {
    return SinkWindowRule{sinks_, window_};
  }
  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (view.n <= sinks_ + window_) return {};
    return SinksAndWindow(view.keys.size(0), view.keys.size(1), view.n, sinks_, window_,
                          view.keys.device());
  }

 private:
  int64_t sinks_;
  int64_t window_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewStreamingLlmPolicy(const PolicySpec& spec) {
  return std::make_unique<StreamingLlmPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
