// A run spec carries its policy as a validated PolicySpec: the same value as the canonical text
// it is stored, hashed and sent as, and refused on load when kvgrid cannot build it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/policy_spec.h"
#include "core/run_spec.h"

namespace kvgrid {
namespace {

TEST(RunSpecPolicy, ARealIsTheValueOfItsCanonicalText) {
  auto spec = ParsePolicySpec("snapkv:ratio=0.333333333333");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->Real("ratio"), std::strtod("0.333333", nullptr));
  auto again = ParsePolicySpec(spec->ToString());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->params, spec->params);
  EXPECT_EQ(again->ToString(), spec->ToString());
}

TEST(RunSpecPolicy, JsonRoundTripKeepsTheSpec) {
  RunSpec s;
  auto policy = ParsePolicySpec("h2o:heavy_ratio=0.1234567,recent_ratio=0.05");
  ASSERT_TRUE(policy.ok()) << policy.status();
  s.policy = *policy;
  EXPECT_EQ(s.ToJson()["policy"], policy->ToString());
  auto back = RunSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->policy.name, "h2o");
  EXPECT_EQ(back->policy.params, policy->params);
  EXPECT_EQ(RunKey(*back), RunKey(s));
}

TEST(RunSpecPolicy, LoadRefusesAPolicyKvgridCannotBuild) {
  nlohmann::json j = RunSpec().ToJson();
  j["policy"] = "no_such_policy:x=1";
  auto unknown = RunSpec::FromJson(j);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("run spec.policy"), std::string::npos) << unknown.status();
  EXPECT_NE(unknown.status().message().find("no_such_policy"), std::string::npos) << unknown.status();
  j["policy"] = "window:window=-3";
  EXPECT_FALSE(RunSpec::FromJson(j).ok());
  j.erase("policy");
  auto missing = RunSpec::FromJson(j);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->policy.ToString(), "full");
}

}  // namespace
}  // namespace kvgrid
