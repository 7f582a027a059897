// full: the baseline, never evicts (kv-policies.md §3.1).
#include "model/policies/policies.h"

namespace kvgrid {
namespace policies {
namespace {

class FullPolicy : public KvPolicy {
 public:
  std::string name() const override { return "full"; }
  bool NeedsKeyValues() const override { return false; }
  torch::Tensor SelectKeep(const LayerView&) override { return {}; }
};

}  // namespace

std::unique_ptr<KvPolicy> NewFullPolicy(const PolicySpec&) { return std::make_unique<FullPolicy>(); }

}  // namespace policies
}  // namespace kvgrid
