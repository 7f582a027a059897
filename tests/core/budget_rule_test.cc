// Each policy's budget rule (core/policy_spec.h BudgetRule): the tokens a spec keeps, and the spec
// that keeps a given budget — what the report's budget axis and the benchmarks read.
#include <gtest/gtest.h>

#include <string>

#include "core/policy_spec.h"

namespace kvgrid {
namespace {

std::optional<double> Kept(const std::string& text, std::optional<double> tokens = std::nullopt) {
  auto spec = ParsePolicySpec(text);
  EXPECT_TRUE(spec.ok()) << text << ": " << spec.status();
  return spec.ok() ? KeptTokens(*spec, tokens) : std::nullopt;
}

TEST(BudgetRule, TokensKeptByEachKindOfSpec) {
  EXPECT_EQ(Kept("full"), std::nullopt);
  EXPECT_EQ(Kept("window:window=100"), 100);
  EXPECT_EQ(Kept("streaming_llm:window=252"), 256);  // 4 sinks by default
  EXPECT_EQ(Kept("streaming_llm:sink_tokens=0,window=252"), 252);
  EXPECT_EQ(Kept("h2o:heavy=100,recent=28"), 128);
  EXPECT_EQ(Kept("h2o:heavy_ratio=0.1,recent_ratio=0.15", 1000.0), 250);
  EXPECT_EQ(Kept("h2o:heavy_ratio=0.1,recent_ratio=0.15"), std::nullopt);  // no length given
  EXPECT_EQ(Kept("tova:cache_size=64"), 64);
  EXPECT_EQ(Kept("knorm:budget=64"), 64);
  EXPECT_EQ(Kept("knorm:keep_ratio=0.3", 1001.0), 301);  // ceil(300.3)
  EXPECT_EQ(Kept("snapkv:ratio=0.3", 1001.0), 300);      // floor, as kvpress
  EXPECT_EQ(Kept("chunkkv:budget=96"), 96);
  EXPECT_EQ(Kept("expected_attention:ratio=0.5", 10.0), 5);
}

TEST(BudgetRule, EveryPolicyButFullHasASpecAtABudgetThatKeepsIt) {
  for (const PolicySchema& s : AllPolicySchemas()) {
    absl::StatusOr<std::string> text = PolicyTextAtBudget(s.name, 256);
    if (s.name == "full") {
      EXPECT_FALSE(text.ok());
      continue;
    }
    ASSERT_TRUE(text.ok()) << s.name << ": " << text.status();
    EXPECT_EQ(Kept(*text), 256) << *text;
    EXPECT_FALSE(s.budget.keys.empty()) << s.name;
    for (const std::string& key : s.budget.keys) {
      bool declared = false;
      for (const ParamSchema& p : s.params) declared |= p.key == key;
      EXPECT_TRUE(declared) << s.name << ": budget key '" << key << "' is not a parameter";
    }
  }
  EXPECT_EQ(*PolicyTextAtBudget("h2o", 255), "h2o:heavy=127,recent=128");
  EXPECT_EQ(*PolicyTextAtBudget("streaming_llm", 256), "streaming_llm:sink_tokens=4,window=252");
  EXPECT_FALSE(PolicyTextAtBudget("streaming_llm", 4).ok());  // no room for a window
  absl::Status unknown = PolicyTextAtBudget("nosuch", 8).status();
  EXPECT_NE(unknown.message().find("unknown policy 'nosuch'"), std::string::npos) << unknown;
}

}  // namespace
}  // namespace kvgrid
