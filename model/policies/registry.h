// Adding a KV policy without touching kvgrid's own lists: one file that declares the policy's
// schema (parameters, budget rule; core/policy_spec.h) and its class, and one RegisterPolicy
// call at start-up. After it, specs naming the policy parse and validate, MakePolicy builds it,
// `kvgrid policies` lists it, reports and benches read its budget rule. The built-in policies
// keep their schemas in core/policy_spec.cc so that a coordinator validates grids without the
// engine; a registered policy is known only to the process that registered it (a grid naming it
// must be run by a kvgrid built with it). tests/policies/registered_policy_test.cc is an example.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "core/policy_spec.h"
#include "model/engine/kv_policy.h"

namespace kvgrid {

using PolicyFactory = std::function<std::unique_ptr<KvPolicy>(const PolicySpec& spec)>;

// Registers `schema` (RegisterPolicySchema's checks) and the factory MakePolicy uses for it. Call
// at start-up, before specs are parsed or policies made on other threads.
absl::Status RegisterPolicy(PolicySchema schema, PolicyFactory factory);

}  // namespace kvgrid
