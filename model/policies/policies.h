// Factories of the KV policies (one file each in model/policies/), used by registry.cc's
// MakePolicy(). Each takes a spec already validated against its schema (core/policy_spec.cc).
#pragma once

#include <memory>

#include "model/engine/kv_policy.h"
#include "core/policy_spec.h"

namespace kvgrid {
namespace policies {

std::unique_ptr<KvPolicy> NewFullPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewWindowPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewStreamingLlmPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewH2oPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewSnapKvPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewPyramidKvPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewKnormPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewTovaPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewRandomPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewObservedAttentionPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewKeyDiffPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewExpectedAttentionPolicy(const PolicySpec& spec);
std::unique_ptr<KvPolicy> NewChunkKvPolicy(const PolicySpec& spec);

class ScorerPolicy;
// The inner scorer of a wrapper spec (core/policy_spec.h InnerScorerSpec), built by MakePolicy.
std::unique_ptr<ScorerPolicy> NewInnerScorer(const PolicySpec& wrapper);

}  // namespace policies
}  // namespace kvgrid
