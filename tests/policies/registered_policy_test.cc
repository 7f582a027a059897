// A policy added from outside kvgrid's own lists (model/policies/registry.h): everything it needs
// is this file's schema and class plus one RegisterPolicy line. `first_and_last` keeps the first
// `first` tokens and the last `last` ones — StreamingLLM under other names, so the engine's
// answer can be checked against streaming_llm's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/policy_spec.h"
#include "model/engine/gpt_neox.h"
#include "model/policies/registry.h"
#include "model/policies/selection.h"
#include "worker/workloads/perplexity.h"

namespace kvgrid {
namespace {

// ---- the policy: its schema (parameters, budget rule) and its behaviour ------------------------

PolicySchema FirstAndLastSchema() {
  ParamSchema first{"first", ParamType::kInt, "first tokens always kept"};
  first.default_value = "4";
  first.min = 0;
  ParamSchema last{"last", ParamType::kInt, "most recent tokens kept"};
  last.required = true;
  last.min = 1;
  return {"first_and_last", "the first and the last tokens (a test policy)", {first, last},
          CountBudget("last", "first", 4)};
}

class FirstAndLastPolicy : public KvPolicy {
 public:
  explicit FirstAndLastPolicy(const PolicySpec& spec) : first_(spec.Int("first")), last_(spec.Int("last")) {}
  std::string name() const override { return "first_and_last"; }
  bool NeedsKeyValues() const override { return false; }
  torch::Tensor SelectKeep(const LayerView& view) override {
    policies::RequireSingleSequence(view, name());
    if (view.n <= first_ + last_) return {};
    return policies::SinksAndWindow(view.keys.size(0), view.keys.size(1), view.n, first_, last_,
                                    view.keys.device());
  }

 private:
  int64_t first_, last_;
};

// ---- the one registry line -----------------------------------------------------------------------

class RegisterFirstAndLast : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_TRUE(RegisterPolicy(FirstAndLastSchema(), [](const PolicySpec& s) {
                  return std::make_unique<FirstAndLastPolicy>(s);
                }).ok());
  }
};
[[maybe_unused]] ::testing::Environment* const kRegister =
    ::testing::AddGlobalTestEnvironment(new RegisterFirstAndLast);

// ---- what kvgrid then knows about it -------------------------------------------------------------

TEST(RegisteredPolicy, SpecsParseValidateAndListIt) {
  auto spec = ParsePolicySpec("first_and_last:last=6");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->ToString(), "first_and_last:first=4,last=6");  // the default filled in
  EXPECT_NE(ParsePolicySpec("first_and_last").status().message().find("missing required parameter 'last'"),
            std::string::npos);
  EXPECT_NE(ParsePolicySpec("first_and_last:last=6,lats=2").status().message().find("unknown parameter 'lats'"),
            std::string::npos);
  bool listed = false;
  for (const PolicySchema& s : AllPolicySchemas()) listed |= s.name == "first_and_last";
  EXPECT_TRUE(listed);
  // Its budget rule is what reports and benches read.
  EXPECT_EQ(KeptTokens(*spec, std::nullopt), 10);
  EXPECT_EQ(*PolicyTextAtBudget("first_and_last", 16), "first_and_last:first=4,last=12");
}

TEST(RegisteredPolicy, RegisteringTwiceOrBadSchemasIsRefused) {
  auto again = RegisterPolicy(FirstAndLastSchema(), [](const PolicySpec& s) {
    return std::make_unique<FirstAndLastPolicy>(s);
  });
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  PolicySchema taken = FirstAndLastSchema();
  taken.name = "h2o";
  EXPECT_EQ(RegisterPolicy(taken, [](const PolicySpec& s) { return std::make_unique<FirstAndLastPolicy>(s); }).code(),
            absl::StatusCode::kAlreadyExists);
  PolicySchema bad = FirstAndLastSchema();
  bad.name = "bad_budget";
  bad.budget = CountBudget("nosuch");
  EXPECT_NE(RegisterPolicySchema(bad).message().find("budget key 'nosuch' is not a parameter"), std::string::npos);
  bad.name = "bad:name";
  EXPECT_FALSE(RegisterPolicySchema(bad).ok());
}

TEST(RegisteredPolicy, TheEngineRunsItLikeTheBuiltInItMirrors) {
  auto model = GptNeoxModel::Load(std::string(KVGRID_FIXTURES_DIR) + "/models/tiny-neox-pythia-like",
                                  torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(model.ok()) << model.status();
  std::ifstream in(std::string(KVGRID_FIXTURES_DIR) + "/tokenizer/wikitext-20k.ids");
  std::vector<int64_t> ids;
  for (int64_t id; ids.size() < 64 && in >> id;) ids.push_back(id);
  PerplexityOptions o;
  o.protocol = "streaming";
  auto run = [&](const std::string& text) {
    auto spec = ParsePolicySpec(text);
    EXPECT_TRUE(spec.ok()) << spec.status();
    auto r = RunPerplexity(**model, ids, *spec, o);
    EXPECT_TRUE(r.ok()) << text << ": " << r.status();
    return r.ok() ? *r : RunResult();
  };
  RunResult mine = run("first_and_last:first=2,last=6");
  RunResult builtin = run("streaming_llm:sink_tokens=2,window=6");
  ASSERT_NE(mine.FindMetric("nll_mean"), nullptr);
  EXPECT_EQ(mine.FindMetric("nll_mean")->value, builtin.FindMetric("nll_mean")->value);
  EXPECT_EQ(mine.FindMetric("kv_tokens_max")->value, builtin.FindMetric("kv_tokens_max")->value);
  EXPECT_LT(mine.FindMetric("kv_tokens_max")->value, 16);
  RunResult full = run("full");
  EXPECT_NE(mine.FindMetric("nll_mean")->value, full.FindMetric("nll_mean")->value);
}

}  // namespace
}  // namespace kvgrid
