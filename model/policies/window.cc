// window: the last `window` slots only, no sinks; every forward, after attention. It is
// StreamingLLM with 0 sinks (kv-policies.md §3.1 "window attention" baseline; mit-han-lab/
// streaming-llm streaming_llm/kv_cache.py with start_size 0).
#include "model/policies/policies.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace policies {
namespace {

class WindowPolicy : public KvPolicy {
 public:
  explicit WindowPolicy(const PolicySpec& spec) : window_(spec.Int("window")) {}
  std::string name() const override { return "window"; }
  bool NeedsKeyValues() const override { return false; }
  std::optional<SinkWindowRule> sink_window_rule() const override {
    return SinkWindowRule{0, window_};
  }
  torch::Tensor SelectKeep(const LayerView& view) override {
    RequireSingleSequence(view, name());
    if (view.n <= window_) return {};
    return SinksAndWindow(view.keys.size(0), view.keys.size(1), view.n, 0, window_,
                          view.keys.device());
  }

 private:
  int64_t window_;
};

}  // namespace

std::unique_ptr<KvPolicy> NewWindowPolicy(const PolicySpec& spec) {
  return std::make_unique<WindowPolicy>(spec);
}

}  // namespace policies
}  // namespace kvgrid
