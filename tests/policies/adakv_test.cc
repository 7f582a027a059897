// adakv on the hand-computed examples of /work/shared/docs/kv-policies-next.md §1 (A, B), ties
// and holes, and through MakePolicy: with alpha = 1 it is its inner scorer's per-head top-k; with
// a small alpha heads keep uneven counts that add up to heads x budget.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/policy_spec.h"
#include "model/engine/kv_policy.h"
#include "model/policies/head_adaptive_selection.h"
#include "tests/policies/policy_test_util.h"

namespace kvgrid {
namespace {

using testing_util::CausalPrefillView;
using testing_util::Make;
using testing_util::Row;
using testing_util::Slots;
using Kept = std::vector<Slots>;

TEST(HeadAdaptiveSelection, ExampleAWithTheSafeguardFloorOfOne) {
  // H = 2, L = 6, keep 3 per head, alpha 0.2: n_safe = max(1, int(0.6)) = 1.
  const std::vector<double> s = {.9, .8, .7, .6, .5, .4, .1, .3, .2, .05, .15, .25};
  EXPECT_EQ(policies::SafeguardCount(3, 0.2), 1);
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), nullptr, 2, 6, 3, 0.2),
            (Kept{{0, 1, 2, 3, 4}, {1}}));
  // alpha 0: no safeguard, head 1 loses every entry.
  EXPECT_EQ(policies::SafeguardCount(3, 0.0), 0);
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), nullptr, 2, 6, 3, 0.0),
            (Kept{{0, 1, 2, 3, 4, 5}, {}}));
}

TEST(HeadAdaptiveSelection, ExampleBSafeguardsEachHeadsBest) {
  // H = 2, L = 10, keep 5, alpha 0.5: n_safe = 2 (h0 {5, 1}, h1 {9, 3}), then the best 6 others.
  const std::vector<double> s = {.50, .90, .80, .70, .60, .95, .85, .75, .65, .55,
                                 .10, .20, .05, .30, .15, .25, .02, .12, .08, .40};
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), nullptr, 2, 10, 5, 0.5),
            (Kept{{1, 2, 3, 4, 5, 6, 7, 8}, {3, 9}}));
}

TEST(HeadAdaptiveSelection, TiesGoToTheLowerPositionThenTheLowerHead) {
  const std::vector<double> ones(6, 1.0);
  EXPECT_EQ(policies::SelectHeadAdaptive(ones.data(), nullptr, 2, 3, 1, 0.0), (Kept{{0}, {0}}));
  // Three of six: (t0,h0), (t0,h1), (t1,h0).
  const std::vector<double> s = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), nullptr, 3, 3, 1, 0.0), (Kept{{0}, {0}, {0}}));
  EXPECT_EQ(policies::SelectHeadAdaptive(ones.data(), nullptr, 2, 3, 1, 0.0).size(), 2u);
}

TEST(HeadAdaptiveSelection, HolesAreNeverKeptAndCapTheTotal) {
  // Head 0 has a hole at slot 1 (its best score), head 1 holds only slot 2.
  const std::vector<double> s = {.1, .9, .2, .8, .7, .3};
  const bool holes[] = {false, true, false, true, true, false};
  // 3 live entries, budget 2 per head (4): all live entries stay.
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), holes, 2, 3, 2, 0.5), (Kept{{0, 2}, {2}}));
  // Budget 1 per head (2), alpha 1: each head's best live entry.
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), holes, 2, 3, 1, 1.0), (Kept{{2}, {2}}));
  // alpha 0: the two best live entries over both heads.
  EXPECT_EQ(policies::SelectHeadAdaptive(s.data(), holes, 2, 3, 1, 0.0), (Kept{{2}, {2}}));
}

TEST(AdaKv, AlphaOneIsTheInnerScorersPerHeadTopK) {
  const LayerView v = CausalPrefillView(100, 4, 3);
  for (const std::string inner : {"snapkv", "observed_attention", "keydiff", "expected_attention"}) {
    SCOPED_TRACE(inner);
    auto plain = Make(inner + ":budget=40");
    auto ada = Make("adakv:budget=40,alpha=1,inner=" + inner);
    ASSERT_TRUE(plain && ada);
    EXPECT_TRUE(ada->KeepsUnevenHeads());
    plain->Reset(1);
    ada->Reset(1);
    const torch::Tensor want = plain->SelectKeep(v), got = ada->SelectKeep(v);
    ASSERT_EQ(got.sizes(), want.sizes());
    for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(Row(got, h), Row(want, h)) << "head " << h;
  }
}

TEST(AdaKv, HeadsKeepUnevenCountsThatAddUpToTheLayerBudget) {
  const LayerView v = CausalPrefillView(60, 4, 5);
  auto ada = Make("adakv:ratio=0.25,alpha=0.2,inner=observed_attention");
  ASSERT_TRUE(ada);
  ada->Reset(1);
  const torch::Tensor keep = ada->SelectKeep(v);
  ASSERT_TRUE(keep.defined());
  int64_t total = 0;
  std::vector<int64_t> counts;
  for (int64_t h = 0; h < 4; ++h) {
    Slots row = Row(keep, h);
    Slots live;
    for (int64_t s : row) {
      if (s >= 0) live.push_back(s);
    }
    // Kept slots come first, ascending; -1 pads the rest.
    for (size_t i = live.size(); i < row.size(); ++i) EXPECT_EQ(row[i], -1);
    EXPECT_TRUE(std::is_sorted(live.begin(), live.end()));
    EXPECT_GE(static_cast<int64_t>(live.size()), 3);  // safeguard: int(15 * 0.2)
    counts.push_back(static_cast<int64_t>(live.size()));
    total += static_cast<int64_t>(live.size());
  }
  EXPECT_EQ(total, 4 * 15);  // floor(60 * 0.25) per head on average
  EXPECT_NE(*std::min_element(counts.begin(), counts.end()), *std::max_element(counts.begin(), counts.end()));
}

TEST(AdaKv, SpecRulesAreCheckedAtSubmitTime) {
  EXPECT_FALSE(ParsePolicySpec("adakv:budget=64,alpha=1.5").ok());
  EXPECT_FALSE(ParsePolicySpec("adakv:budget=64,interval=16").ok());  // no decoding variant
  EXPECT_FALSE(ParsePolicySpec("adakv:budget=64,inner=tova").ok());
  EXPECT_FALSE(ParsePolicySpec("adakv:budget=8").ok());  // snapkv's window (32) needs budget >= 32
  auto spec = ParsePolicySpec("adakv:budget=64");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->ToString(), "adakv:alpha=0.2,budget=64,inner=snapkv,interval=0");
  EXPECT_NE(WhyPolicyCannotRunProtocol(*spec, "streaming").find("no decoding variant"), std::string::npos);
  EXPECT_EQ(WhyPolicyCannotRunProtocol(*spec, "prefill"), "");
  EXPECT_EQ(KeptTokens(*spec, 100.0), 64);
}

}  // namespace
}  // namespace kvgrid
