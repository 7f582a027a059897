// Helpers shared by the policy tests: build a policy from its spec text, read one head's kept
// slots.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
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

// A causal prefill view of n tokens over `heads` heads, d = 8, rotary on all 8 dims.
inline LayerView CausalPrefillView(int64_t n, int64_t heads, int64_t seed) {
  torch::manual_seed(seed);
  LayerView v;
  v.num_layers = 1;
  v.n = v.new_tokens = v.tokens_seen = v.prompt_length = n;
  v.keys = torch::randn({1, heads, n, 8});
  v.values = torch::randn({1, heads, n, 8});
  v.queries = torch::randn({1, heads, n, 8});
  v.positions = torch::arange(n, torch::kInt64).view({1, 1, n}).expand({1, heads, n}).contiguous();
  v.query_positions = torch::arange(n, torch::kInt64);
  v.rotary_dims = 8;
  torch::Tensor logits = torch::matmul(v.queries, v.keys.transpose(-1, -2)) / std::sqrt(8.0);
  logits.masked_fill_(torch::ones({n, n}, torch::kBool).triu(1), -INFINITY);
  v.probs = torch::softmax(logits, -1);
  return v;
}

// keep [1,H,k] -> head `head`'s kept slots.
inline Slots Row(const torch::Tensor& keep, int64_t head = 0) {
  torch::Tensor r = keep[0][head].contiguous().to(torch::kCPU);
  return Slots(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

}  // namespace kvgrid::testing_util
