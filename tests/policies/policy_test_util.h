// Helpers shared by the policy tests: build a policy from its spec text, read one head's kept
// slots.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/policy_spec.h"
#include "model/engine/kv_policy.h"

namespace kvgrid::testing_util {

using Slots = std::vector<int64_t>;

// MakePolicy(ParsePolicySpec(text)), failing the test (not aborting) when either step fails.
inline std::unique_ptr<KvPolicy> Make(const std::string& text) {
  auto spec = ParsePolicySpec(text);
  EXPECT_TRUE(spec.ok()) << text << ": " << spec.status();
  if (!spec.ok()) return nullptr;
  auto policy = MakePolicy(*spec);
  EXPECT_TRUE(policy.ok()) << text << ": " << policy.status();
  return policy.ok() ? std::move(policy).value() : nullptr;
}

// keep [1,H,k] -> head `head`'s kept slots.
inline Slots Row(const torch::Tensor& keep, int64_t head = 0) {
  torch::Tensor r = keep[0][head].contiguous().to(torch::kCPU);
  return Slots(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

}  // namespace kvgrid::testing_util
