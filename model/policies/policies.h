// What the policies' files share with the registry (registry.cc): the built-in policies' factories
// are declared there, one line each; a factory takes a spec already validated against its schema
// (core/policy_spec.cc).
#pragma once

#include <memory>

#include "model/engine/kv_policy.h"
#include "core/policy_spec.h"

namespace kvgrid {
namespace policies {

class ScorerPolicy;
// The inner scorer of a wrapper spec (core/policy_spec.h InnerScorerSpec), built by MakePolicy.
std::unique_ptr<ScorerPolicy> NewInnerScorer(const PolicySpec& wrapper);

}  // namespace policies
}  // namespace kvgrid
