// KV policies on hand-built LayerViews where the right answer is known (kv-policies.md §2.7, §3).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <memory>
#include <string>
#include <vector>

#include "model/engine/kv_policy.h"
#include "model/policies/selection.h"
#include "core/policy_spec.h"
#include "tests/policies/policy_test_util.h"

namespace kvgrid {
namespace {

using policies::Pool1d;
using policies::Pooling;
using policies::TopKAscending;
using testing_util::Make;
using testing_util::Row;
using testing_util::Slots;

torch::Tensor Tensor2(const std::vector<std::vector<double>>& rows) {
  std::vector<torch::Tensor> out;
  for (const auto& r : rows) out.push_back(torch::tensor(r, torch::kDouble));
  return torch::stack(out).to(torch::kFloat);
}

// A view of one layer; probs [1,H,m,n] given per head as m x n rows (rows may be fewer than the
// forward's tokens when only the last rows matter).
LayerView View(int64_t n, int64_t m, ForwardPhase phase = ForwardPhase::kPrefill, int64_t heads = 1,
               int64_t layer = 0, int64_t num_layers = 1) {
  LayerView v;
  v.layer = layer;
  v.num_layers = num_layers;
  v.n = n;
  v.new_tokens = m;
  v.tokens_seen = n;
  v.prompt_length = n;
  v.phase = phase;
  v.keys = torch::zeros({1, heads, n, 4});
  v.values = torch::zeros({1, heads, n, 4});
  v.queries = torch::zeros({1, heads, m, 4});
  v.positions = torch::arange(n, torch::kInt64).view({1, 1, n}).expand({1, heads, n}).contiguous();
  v.query_positions = torch::arange(n - m, n, torch::kInt64);
  return v;
}

void SetProbs(LayerView& v, const std::vector<torch::Tensor>& per_head) {
  v.probs = torch::stack(per_head).unsqueeze(0).to(torch::kFloat);
}

// Random but causal view: probs are the real softmax of q.k^T with a causal mask.
LayerView RandomView(int64_t n, int64_t heads = 2, int64_t layer = 0, int64_t num_layers = 1,
                     int64_t seed = 1) {
  torch::manual_seed(seed);
  LayerView v = View(n, n, ForwardPhase::kPrefill, heads, layer, num_layers);
  v.keys = torch::randn({1, heads, n, 8});
  v.values = torch::randn({1, heads, n, 8});
  v.queries = torch::randn({1, heads, n, 8});
  torch::Tensor logits = torch::matmul(v.queries, v.keys.transpose(-1, -2)) / std::sqrt(8.0);
  logits.masked_fill_(torch::ones({n, n}, torch::kBool).triu(1), -INFINITY);
  v.probs = torch::softmax(logits, -1);
  return v;
}

void ExpectValidKeep(const torch::Tensor& keep, int64_t heads, int64_t n, const std::string& what) {
  if (!keep.defined()) return;
  ASSERT_EQ(keep.dim(), 3) << what;
  EXPECT_EQ(keep.scalar_type(), torch::kInt64) << what;
  EXPECT_EQ(keep.size(0), 1) << what;
  EXPECT_EQ(keep.size(1), heads) << what;
  EXPECT_LT(keep.size(2), n) << what;
  EXPECT_GE(keep.size(2), 1) << what;
  for (int64_t h = 0; h < heads; ++h) {
    Slots s = Row(keep, h);
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_GE(s[i], 0) << what;
      EXPECT_LT(s[i], n) << what;
      if (i > 0) EXPECT_LT(s[i - 1], s[i]) << what << ": not strictly ascending";
    }
  }
}

// ---------------------------------------------------------------- shared selection mechanics

TEST(Selection, TopKTiesLowerIndexFirstThenAscending) {
  torch::Tensor s = torch::tensor({1.0, 3.0, 3.0, 2.0, 3.0}).view({1, 1, 5});
  EXPECT_EQ(Row(TopKAscending(s, 2)), (Slots{1, 2}));
  EXPECT_EQ(Row(TopKAscending(s, 3)), (Slots{1, 2, 4}));
  EXPECT_EQ(Row(TopKAscending(s, 4)), (Slots{1, 2, 3, 4}));
  torch::Tensor flat = torch::full({1, 1, 300}, 0.5);
  EXPECT_EQ(Row(TopKAscending(flat, 3)), (Slots{0, 1, 2}));
  torch::Tensor desc = torch::tensor({9.0, 8.0, 7.0, 6.0}).view({1, 1, 4});
  EXPECT_EQ(Row(TopKAscending(desc, 2)), (Slots{0, 1}));
  torch::Tensor asc = torch::tensor({1.0, 2.0, 3.0, 4.0}).view({1, 1, 4});
  EXPECT_EQ(Row(TopKAscending(asc, 2)), (Slots{2, 3}));  // re-sorted ascending
}

// The one-eviction fast path (k = n - 1, every per-step policy's case) against a stable sort by
// the documented order: higher score first, equal scores lower index first, NaN after numbers.
TEST(Selection, OneEvictionDropsTheLastRankedSlotTiesAndNanIncluded) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t n = 1 + rng() % 12;
    std::vector<double> row(n);
    for (double& x : row) {
      const unsigned r = rng() % 10;
      x = r == 0 ? std::nan("") : static_cast<double>(r % 4);  // many ties, some NaN
    }
    Slots order(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const bool na = std::isnan(row[a]), nb = std::isnan(row[b]);
      if (na || nb) return !na && nb;
      return row[a] > row[b];
    });
    Slots expected(order.begin(), order.end() - 1);
    std::sort(expected.begin(), expected.end());
    Slots got(n - 1);
    policies::TopKAscendingRow(row.data(), n, n - 1, got.data());
    ASSERT_EQ(got, expected) << "trial " << trial;
    // The general path (nth_element) keeps the same slots.
    if (n >= 2) {
      Slots k2(n - 2), ref(order.begin(), order.end() - 2);
      std::sort(ref.begin(), ref.end());
      policies::TopKAscendingRow(row.data(), n, n - 2, k2.data());
      ASSERT_EQ(k2, ref) << "trial " << trial;
    }
  }
}

TEST(Selection, TopKPlusTailKeepsTheTail) {
  torch::Tensor s = torch::tensor({0.1, 0.9, 0.5}).view({1, 1, 3});
  EXPECT_EQ(Row(policies::TopKPlusTail(s, 1, 5)), (Slots{1, 3, 4}));
  EXPECT_EQ(Row(policies::TopKPlusTail(s, 0, 5)), (Slots{3, 4}));
}

TEST(Selection, RatiosAndRounding) {
  EXPECT_EQ(policies::FloorRatio(10, 0.25), 2);
  EXPECT_EQ(policies::FloorRatio(2048, 0.5), 1024);
  EXPECT_EQ(policies::CeilRatio(10, 0.25), 3);
  EXPECT_EQ(policies::CeilRatio(1000, 0.98), 980);
  EXPECT_EQ(policies::RoundHalfEven(2.5), 2);
  EXPECT_EQ(policies::RoundHalfEven(3.5), 4);
  EXPECT_EQ(policies::RoundHalfEven(1804.8), 1805);
  EXPECT_EQ(policies::RoundHalfEven(204.8), 205);
}

TEST(Selection, MaxPoolingPadsWithMinusInfinity) {
  torch::Tensor s = torch::tensor({-1.0, -2.0, -3.0}).view({1, 1, 3}).to(torch::kFloat);
  torch::Tensor p = Pool1d(s, 3, Pooling::kMax);
  EXPECT_TRUE(torch::equal(p, torch::tensor({-1.0f, -1.0f, -2.0f}).view({1, 1, 3})));
  torch::Tensor peak = torch::tensor({0.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 5.f}).view({1, 1, 8});
  EXPECT_TRUE(torch::equal(Pool1d(peak, 3, Pooling::kMax),
                           torch::tensor({0.f, 1.f, 1.f, 1.f, 0.f, 0.f, 5.f, 5.f}).view({1, 1, 8})));
}

TEST(Selection, AvgPoolingCountsZeroPadding) {
  torch::Tensor s = torch::tensor({3.f, 3.f, 3.f}).view({1, 1, 3});
  EXPECT_TRUE(torch::allclose(Pool1d(s, 3, Pooling::kAvg),
                              torch::tensor({2.f, 3.f, 2.f}).view({1, 1, 3})));
  EXPECT_TRUE(torch::equal(Pool1d(s, 1, Pooling::kAvg), s));
}

TEST(Selection, WindowAttentionIsCausalByPosition) {
  torch::Tensor q = torch::zeros({1, 1, 2, 4});
  torch::Tensor qpos = torch::tensor({1, 2}, torch::kInt64).view({1, 1, 2});
  torch::Tensor k = torch::zeros({1, 1, 3, 4});
  torch::Tensor kpos = torch::tensor({0, 1, 2}, torch::kInt64).view({1, 1, 3});
  torch::Tensor a = policies::WindowAttention(q, qpos, k, kpos);
  EXPECT_TRUE(torch::allclose(a[0][0][0], torch::tensor({0.5f, 0.5f, 0.f})));
  EXPECT_TRUE(torch::allclose(a[0][0][1], torch::full({3}, 1.f / 3)));
  // Scale 1/sqrt(d): logits 2*2/sqrt(4) = 2 for key 1.
  q[0][0][1][0] = 2;
  k[0][0][1][0] = 2;
  a = policies::WindowAttention(q, qpos, k, kpos);
  double e = std::exp(2.0);
  EXPECT_NEAR(a[0][0][1][1].item<float>(), e / (e + 2), 1e-6);
}

// ---------------------------------------------------------------- registry

std::map<std::string, std::string> SampleSpecs() {
  return {{"full", "full"},
          {"window", "window:window=4"},
          {"streaming_llm", "streaming_llm:sink_tokens=2,window=4"},
          {"h2o", "h2o:heavy=2,recent=2"},
          {"snapkv", "snapkv:budget=6,window=2,kernel=3"},
          {"pyramidkv", "pyramidkv:budget=6,window=2,kernel=3"},
          {"knorm", "knorm:budget=5,skip_layers=[1]"},
          {"tova", "tova:cache_size=4"},
          {"random", "random:ratio=0.5,seed=3"},
          {"observed_attention", "observed_attention:budget=5"},
          {"keydiff", "keydiff:ratio=0.25"},
          {"expected_attention", "expected_attention:budget=6,n_sink=2"},
          {"chunkkv", "chunkkv:ratio=0.5,chunk_length=3,inner=observed_attention"},
          // alpha 1: even counts, so no -1 padding (uneven keeps: adakv_test.cc)
          {"adakv", "adakv:budget=5,alpha=1,inner=observed_attention"}};
}

TEST(Registry, MakesEveryPolicyInTheSchemaAndItSelectsValidSlots) {
  const auto samples = SampleSpecs();
  for (const PolicySchema& schema : AllPolicySchemas()) {
    SCOPED_TRACE(schema.name);
    auto it = samples.find(schema.name);
    ASSERT_NE(it, samples.end()) << "no test spec for policy " << schema.name;
    auto policy = Make(it->second);
    ASSERT_NE(policy, nullptr);
    EXPECT_EQ(policy->name(), schema.name);
    EXPECT_EQ(policy->KeepsUnevenHeads(), schema.uneven_heads);  // the grid reads the schema
    policy->Reset(2);
    for (int64_t layer = 0; layer < 2; ++layer) {
      LayerView v = RandomView(16, 2, layer, 2);
      torch::Tensor keep = policy->SelectKeep(v);
      ExpectValidKeep(keep, 2, 16, schema.name);
      if (schema.name != "full" && !(schema.name == "knorm" && layer == 1)) {
        EXPECT_TRUE(keep.defined()) << schema.name << " did not compress 16 tokens";
      }
    }
  }
}

TEST(Registry, RejectsUnknownAndIncompleteSpecs) {
  PolicySpec unknown;
  unknown.name = "magic";
  auto a = MakePolicy(unknown);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("magic"), std::string::npos);
  PolicySpec missing;
  missing.name = "tova";  // cache_size is required
  auto b = MakePolicy(missing);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("cache_size"), std::string::npos);
  PolicySpec bad;
  bad.name = "snapkv";
  bad.params["budget"] = int64_t{4};
  bad.params["window"] = int64_t{8};  // window larger than the budget
  EXPECT_FALSE(MakePolicy(bad).ok());
  // Hand-built specs get their defaults filled in.
  PolicySpec hand;
  hand.name = "snapkv";
  hand.params["ratio"] = 0.5;
  EXPECT_TRUE(MakePolicy(hand).ok());
}

TEST(Registry, BudgetAtLeastTheLengthChangesNothing) {
  for (const std::string& text :
       {"full", "window:window=16", "streaming_llm:sink_tokens=4,window=12",
        "h2o:heavy=8,recent=8", "snapkv:budget=16,window=4", "pyramidkv:budget=16,window=4",
        "knorm:budget=16", "knorm:keep_ratio=1", "tova:cache_size=16", "random:budget=16",
        "random:ratio=1", "observed_attention:budget=99", "keydiff:budget=16",
        "expected_attention:budget=16", "chunkkv:budget=16,inner=keydiff"}) {
    SCOPED_TRACE(text);
    auto policy = Make(text);
    policy->Reset(1);
    EXPECT_FALSE(policy->SelectKeep(RandomView(16)).defined());
  }
}

TEST(Registry, BatchLargerThanOneIsRefusedClearly) {
  LayerView v = RandomView(8);
  v.keys = v.keys.expand({2, -1, -1, -1});
  v.probs = v.probs.expand({2, -1, -1, -1});
  auto policy = Make("tova:cache_size=4");
  try {
    policy->SelectKeep(v);
    FAIL() << "no error for batch 2";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch size 1"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(Make("full")->SelectKeep(v).defined());
}

// ---------------------------------------------------------------- window / streaming_llm

TEST(Window, KeepsTheLastWindowSlots) {
  auto policy = Make("window:window=4");
  EXPECT_EQ(Row(policy->SelectKeep(View(10, 1, ForwardPhase::kDecode, 2)), 1), (Slots{6, 7, 8, 9}));
  EXPECT_FALSE(policy->SelectKeep(View(4, 1)).defined());
}

TEST(StreamingLlm, FourPlus28KeepsThirtyTwoAndAttendsToThirtyThree) {
  auto policy = Make("streaming_llm:sink_tokens=4,window=28");
  policy->Reset(1);
  int64_t held = 0, max_attended = 0;
  for (int64_t t = 0; t < 100; ++t) {
    const int64_t n = held + 1;  // the current token is appended before attention
    max_attended = std::max(max_attended, n);
    torch::Tensor keep = policy->SelectKeep(View(n, 1, t == 0 ? ForwardPhase::kPrefill
                                                              : ForwardPhase::kDecode, 8));
    if (!keep.defined()) {
      held = n;
      continue;
    }
    ASSERT_EQ(keep.size(2), 32);
    Slots expect = {0, 1, 2, 3};
    for (int64_t j = n - 28; j < n; ++j) expect.push_back(j);
    EXPECT_EQ(Row(keep, 7), expect);
    held = keep.size(2);
  }
  EXPECT_EQ(max_attended, 33);
  EXPECT_EQ(held, 32);
}

TEST(StreamingLlm, LongPromptIsCutAfterItsAttention) {
  auto policy = Make("streaming_llm:sink_tokens=2,window=3");
  EXPECT_EQ(Row(policy->SelectKeep(View(10, 10))), (Slots{0, 1, 7, 8, 9}));
}

// ---------------------------------------------------------------- h2o

TEST(H2o, AccumulatesPerHeadAcrossStepsAndDropsEvictedScores) {
  auto policy = Make("h2o:heavy=1,recent=1");
  policy->Reset(1);
  // Prefill of 3 tokens; rows include each token's attention to itself.
  LayerView v = View(3, 3, ForwardPhase::kPrefill, 2);
  SetProbs(v, {Tensor2({{1, 0, 0}, {0.5, 0.5, 0}, {0.25, 0.25, 0.5}}),      // acc [1.75,.75,.5]
               Tensor2({{1, 0, 0}, {0.125, 0.875, 0}, {0.125, 0.75, 0.125}})});  // [1.25,1.625,.125]
  torch::Tensor keep = policy->SelectKeep(v);
  EXPECT_EQ(Row(keep, 0), (Slots{0, 2}));  // heavy token 0 + recent token 2
  EXPECT_EQ(Row(keep, 1), (Slots{1, 2}));  // heavy token 1 + recent token 2
  // Decode token 3: cache is [t0,t2] / [t1,t2] + t3.
  v = View(3, 1, ForwardPhase::kDecode, 2);
  SetProbs(v, {Tensor2({{0.125, 0.25, 0.625}}),   // acc [1.875, .75, .625]: slot 0 (t0)
               Tensor2({{0.0, 0.875, 0.125}})});  // acc [1.625, 1.0, .125]: slot 0 (t1)
  keep = policy->SelectKeep(v);
  EXPECT_EQ(Row(keep, 0), (Slots{0, 2}));  // t0, t3
  EXPECT_EQ(Row(keep, 1), (Slots{0, 2}));  // t1, t3 (t2's 1.0 is dropped with it)
  // Decode token 4: head 0 cache [t0 1.875, t3 .625, t4]; the current row alone would favour t3,
  // the accumulated score keeps t0. Head 1 cache [t1 1.625, t3 .125, t4]: had the evicted t2's
  // score (1.0) been kept in slot 1 it would now win (1.0+.75 > 1.625).
  v = View(3, 1, ForwardPhase::kDecode, 2);
  SetProbs(v, {Tensor2({{0.25, 0.5, 0.25}}), Tensor2({{0.0, 0.75, 0.25}})});
  keep = policy->SelectKeep(v);
  EXPECT_EQ(Row(keep, 0), (Slots{0, 2}));
  EXPECT_EQ(Row(keep, 1), (Slots{0, 2}));
}

TEST(H2o, RatiosAreFractionsOfThePromptFixedAtTheFirstCall) {
  auto policy = Make("h2o:heavy_ratio=0.25,recent_ratio=0.25");
  policy->Reset(1);
  LayerView v = RandomView(8, 2);  // prompt 8 -> heavy 2, recent 2
  torch::Tensor keep = policy->SelectKeep(v);
  ASSERT_TRUE(keep.defined());
  EXPECT_EQ(keep.size(2), 4);
  for (int64_t h = 0; h < 2; ++h) {
    Slots s = Row(keep, h);
    EXPECT_EQ(s[2], 6);
    EXPECT_EQ(s[3], 7);
  }
  // Next forward: 4 kept + 1 new, the prompt length in the view is now ignored.
  LayerView d = View(5, 1, ForwardPhase::kDecode, 2);
  d.prompt_length = 1000;
  d.probs = torch::full({1, 2, 1, 5}, 0.2f);
  keep = policy->SelectKeep(d);
  ASSERT_TRUE(keep.defined());
  EXPECT_EQ(keep.size(2), 4);
}

TEST(H2o, MismatchedHistoryIsAnError) {
  auto policy = Make("h2o:heavy=4,recent=4");
  policy->Reset(1);
  LayerView v = View(5, 1, ForwardPhase::kDecode);
  v.probs = torch::full({1, 1, 1, 5}, 0.2f);
  EXPECT_THROW(policy->SelectKeep(v), c10::Error);
}

// ---------------------------------------------------------------- snapkv

// n=8, window=2: rows 6 and 7 give prefix sums [.5, 0, 0, 0, .375, .375]; rows 0..5 point at slot 1
// and must be ignored.
LayerView SnapView() {
  LayerView v = View(8, 8);
  std::vector<std::vector<double>> rows(8, std::vector<double>(8, 0.0));
  for (int i = 0; i < 6; ++i) {
    if (i == 0) rows[i][0] = 1;
    else rows[i][1] = 1;
  }
  rows[6] = {0.25, 0, 0, 0, 0.1875, 0.1875, 0.375, 0};
  rows[7] = {0.25, 0, 0, 0, 0.1875, 0.1875, 0.125, 0.25};
  SetProbs(v, {Tensor2(rows)});
  return v;
}

TEST(SnapKv, MaxPoolingKeepsThePeak) {
  // max pool k=3: [.5,.5,0,.375,.375,.375] -> top 1 = slot 0, + window 6,7.
  EXPECT_EQ(Row(Make("snapkv:budget=3,window=2,kernel=3,pooling=max")->SelectKeep(SnapView())),
            (Slots{0, 6, 7}));
}

TEST(SnapKv, AvgPoolingCountsPaddingAndTiesGoToTheLowerIndex) {
  // avg pool k=3 over zero padding: [.5/3, .5/3, 0, .375/3, .75/3, .75/3] -> slot 4 (tie with 5,
  // lower index wins). Without counting the padding slot 5 would score .375 and win.
  EXPECT_EQ(Row(Make("snapkv:budget=3,window=2,kernel=3,pooling=avg")->SelectKeep(SnapView())),
            (Slots{4, 6, 7}));
  EXPECT_EQ(Row(Make("snapkv:budget=4,window=2,kernel=3,pooling=avg")->SelectKeep(SnapView())),
            (Slots{4, 5, 6, 7}));
}

TEST(SnapKv, OnlyAtPrefillUnlessAnIntervalIsGiven) {
  auto policy = Make("snapkv:budget=3,window=2,kernel=3");
  LayerView v = SnapView();
  v.phase = ForwardPhase::kDecode;
  EXPECT_FALSE(policy->SelectKeep(v).defined());
}

TEST(SnapKv, PromptShorterThanTheWindow) {
  // Absolute budget >= window > n: nothing to compress.
  LayerView v = RandomView(4, 1);
  EXPECT_FALSE(Make("snapkv:budget=8,window=8")->SelectKeep(v).defined());
  // Ratio: budget floor(4*0.5)=2 < n; all 4 slots are the window (no prefix): every slot ties
  // and the oldest survive (kvpress pads the window with the max score; kvgrid's tie rule).
  EXPECT_EQ(Row(Make("snapkv:ratio=0.5,window=8")->SelectKeep(v)), (Slots{0, 1}));
}

TEST(SnapKv, BudgetSmallerThanTheWindowPrunesPartOfTheWindowAsKvpress) {
  // n=8, window=4, ratio 0.25 -> budget 2. Prefix sums: head 0 [0,.5,0,0] (the layer's max),
  // head 1 [.25,0,0,0]. Window slots score the layer max (.5).
  LayerView v = View(8, 8, ForwardPhase::kPrefill, 2);
  auto rows_for = [](std::vector<double> prefix_row4) {
    std::vector<std::vector<double>> rows(8, std::vector<double>(8, 0.0));
    for (int i = 0; i < 8; ++i) rows[i][i] = 1;  // self attention
    double mass = 0;
    for (int j = 0; j < 4; ++j) mass += prefix_row4[j];
    rows[4] = {prefix_row4[0], prefix_row4[1], prefix_row4[2], prefix_row4[3], 1 - mass, 0, 0, 0};
    return Tensor2(rows);
  };
  SetProbs(v, {rows_for({0, 0.5, 0, 0}), rows_for({0.25, 0, 0, 0})});
  torch::Tensor keep = Make("snapkv:ratio=0.25,window=4,kernel=1")->SelectKeep(v);
  EXPECT_EQ(Row(keep, 0), (Slots{1, 4}));  // prefix slot tied at the max, then oldest window slot
  EXPECT_EQ(Row(keep, 1), (Slots{4, 5}));  // window outranks this head's prefix
}

TEST(SnapKv, DecodingVariantUsesBufferedQueriesEveryInterval) {
  auto policy = Make("snapkv:budget=4,window=2,kernel=1,interval=2");
  policy->Reset(1);
  // Keys: slot 1 is the only key the queries like.
  auto keys = [](int64_t n) {
    torch::Tensor k = torch::zeros({1, 1, n, 4});
    k[0][0][1][0] = 10;
    return k;
  };
  LayerView p = View(3, 3);
  p.keys = keys(3);
  p.queries = torch::zeros({1, 1, 3, 4});
  p.queries.select(3, 0).fill_(1);
  p.probs = torch::full({1, 1, 3, 3}, 1.f / 3);
  EXPECT_FALSE(policy->SelectKeep(p).defined());  // 3 <= budget
  for (int64_t n = 4; n <= 5; ++n) {
    LayerView d = View(n, 1, ForwardPhase::kDecode);
    d.tokens_seen = n;
    d.keys = keys(n);
    d.queries = torch::zeros({1, 1, 1, 4});
    d.queries[0][0][0][0] = 1;
    torch::Tensor keep = policy->SelectKeep(d);
    if (n == 4) {
      EXPECT_FALSE(keep.defined());  // first decode step of the interval
    } else {
      // prefix [0,1,2]: slot 1 wins, then the tie 0 vs 2 goes to 0; window [3,4].
      EXPECT_EQ(Row(keep), (Slots{0, 1, 3, 4}));
    }
  }
}

// ---------------------------------------------------------------- pyramidkv (policy level)

TEST(PyramidKv, LayersKeepTheKvCacheFactoryBudgets) {
  auto policy = Make("pyramidkv:budget=128,window=8,kernel=7,pooling=max");
  policy->Reset(6);
  const std::vector<int64_t> expect = {242, 197, 152, 107, 62, 17};
  for (int64_t layer = 0; layer < 6; ++layer) {
    LayerView v = View(2048, 2048, ForwardPhase::kPrefill, 2, layer, 6);
    torch::manual_seed(layer);
    v.probs = torch::softmax(torch::randn({1, 2, 8, 2048}), -1);  // the last 8 rows
    torch::Tensor keep = policy->SelectKeep(v);
    ASSERT_TRUE(keep.defined());
    EXPECT_EQ(keep.size(2), expect[layer]) << "layer " << layer;
    Slots s = Row(keep, 1);
    EXPECT_EQ(s.back(), 2047);
    EXPECT_EQ(s[s.size() - 8], 2040);  // the window is kept whole
  }
}

TEST(PyramidKv, RatioUsesTheKvpressFormula) {
  auto policy = Make("pyramidkv:ratio=0.5,window=64,kernel=5,pooling=avg");
  policy->Reset(6);
  const std::vector<int64_t> expect = {1984, 1600, 1216, 832, 448, 64};
  for (int64_t layer = 0; layer < 6; ++layer) {
    LayerView v = View(2048, 2048, ForwardPhase::kPrefill, 1, layer, 6);
    v.probs = torch::softmax(torch::randn({1, 1, 64, 2048}), -1);
    torch::Tensor keep = policy->SelectKeep(v);
    ASSERT_TRUE(keep.defined());
    EXPECT_EQ(keep.size(2), expect[layer]) << "layer " << layer;
  }
}

// ---------------------------------------------------------------- knorm

LayerView NormView(int64_t layer = 0, int64_t num_layers = 2) {
  LayerView v = View(6, 6, ForwardPhase::kPrefill, 2, layer, num_layers);
  std::vector<double> n0 = {5, 1, 3, 2, 4, 0.5}, n1 = {1, 1, 1, 1, 2, 2};
  for (int64_t j = 0; j < 6; ++j) {
    v.keys[0][0][j][1] = n0[j];  // norm n0[j]
    v.keys[0][1][j][0] = n1[j] * 0.6;
    v.keys[0][1][j][3] = -n1[j] * 0.8;  // norm n1[j]
  }
  return v;
}

TEST(Knorm, KeepsTheLowestNormsPerHead) {
  torch::Tensor keep = Make("knorm:budget=3")->SelectKeep(NormView());
  EXPECT_EQ(Row(keep, 0), (Slots{1, 3, 5}));
  EXPECT_EQ(Row(keep, 1), (Slots{0, 1, 2}));  // four ties at norm 1: lower indices win
}

TEST(Knorm, KeepRatioIsCeiledAndWaitsForPruneAfter) {
  auto policy = Make("knorm:keep_ratio=0.4,prune_after=6");
  EXPECT_EQ(Row(policy->SelectKeep(NormView()), 0), (Slots{1, 3, 5}));  // ceil(2.4) = 3
  LayerView shorter = NormView();
  shorter.n = 5;
  shorter.new_tokens = 5;
  shorter.keys = shorter.keys.narrow(2, 0, 5);
  policy->Reset(2);  // a new sequence: the policy keeps each entry's norm
  EXPECT_FALSE(policy->SelectKeep(shorter).defined());
}

TEST(Knorm, SkipLayersAreNeverPruned) {
  auto policy = Make("knorm:budget=2,skip_layers=[0]");
  EXPECT_FALSE(policy->SelectKeep(NormView(0)).defined());
  EXPECT_EQ(Row(policy->SelectKeep(NormView(1)), 0), (Slots{1, 5}));
}

TEST(Knorm, StreamingPrunesEveryStepOncePruneAfterIsReached) {
  auto policy = Make("knorm:keep_ratio=0.5,prune_after=4");
  int64_t held = 0, max_n = 0;
  for (int t = 0; t < 20; ++t) {
    LayerView v = View(held + 1, 1, ForwardPhase::kDecode);
    v.keys = torch::randn({1, 1, held + 1, 4});
    max_n = std::max(max_n, v.n);
    torch::Tensor keep = policy->SelectKeep(v);
    held = keep.defined() ? keep.size(2) : v.n;
  }
  EXPECT_EQ(max_n, 4);
}

// ---------------------------------------------------------------- tova

TEST(Tova, LastRowAveragedOverHeadsSameSlotsForEveryHead) {
  LayerView v = View(5, 5, ForwardPhase::kPrefill, 2);
  std::vector<std::vector<double>> h0(5, std::vector<double>(5, 0.0)), h1 = h0;
  for (int i = 0; i < 4; ++i) h0[i][1] = h1[i][1] = 1;  // earlier rows must not matter
  for (double& x : h0[4] = {1, 6, 2, 2, 5}) x /= 16;
  for (double& x : h1[4] = {5, 0, 2, 3, 6}) x /= 16;
  SetProbs(v, {Tensor2(h0), Tensor2(h1)});
  // Mean [3, 3, 2, 2.5, 5.5]/16: the current token (5.5) and slot 0 (tie with 1, lower wins).
  torch::Tensor keep = Make("tova:cache_size=2")->SelectKeep(v);
  EXPECT_EQ(Row(keep, 0), (Slots{0, 4}));
  EXPECT_EQ(Row(keep, 1), (Slots{0, 4}));
  EXPECT_FALSE(Make("tova:cache_size=5")->SelectKeep(v).defined());
}

// ---------------------------------------------------------------- random

TEST(Random, ReproducibleWithTheSeed) {
  auto a = Make("random:budget=5,seed=7");
  auto b = Make("random:budget=5,seed=7");
  auto c = Make("random:budget=5,seed=8");
  a->Reset(1);
  b->Reset(1);
  c->Reset(1);
  LayerView v = RandomView(20, 4);
  torch::Tensor ka = a->SelectKeep(v), kb = b->SelectKeep(v), kc = c->SelectKeep(v);
  ExpectValidKeep(ka, 4, 20, "random");
  EXPECT_TRUE(torch::equal(ka, kb));
  EXPECT_FALSE(torch::equal(ka, kc));
  EXPECT_FALSE(torch::equal(ka[0][0], ka[0][1]));  // per head
  (void)a->SelectKeep(v);                           // the stream moves on ...
  a->Reset(1);                                      // ... and Reset restarts it
  EXPECT_TRUE(torch::equal(a->SelectKeep(v), ka));
  EXPECT_EQ(Make("random:ratio=0.5")->SelectKeep(RandomView(11, 1)).size(2), 5);
}

// ---------------------------------------------------------------- observed_attention / keydiff

TEST(ObservedAttention, MeanOverTheQueriesThatSeeTheSlot) {
  LayerView v = View(4, 4);
  SetProbs(v, {Tensor2({{1, 0, 0, 0}, {0.5, 0.5, 0, 0}, {0.5, 0.25, 0.25, 0}, {0.25, 0.25, 0, 0.5}})});
  // sums [2.25, 1, .25, .5] / counts [4, 3, 2, 1] = [.5625, .333, .125, .5]; raw sums (H2O)
  // would keep slot 1 instead of 3.
  EXPECT_EQ(Row(Make("observed_attention:budget=2")->SelectKeep(v)), (Slots{0, 3}));
}

TEST(KeyDiff, KeepsTheKeysLeastAlignedWithTheMeanDirection) {
  LayerView v = View(4, 4);
  v.keys = torch::tensor({1.f, 0.f, 0.f, 0.f, 2.f, 0.f, 0.f, 0.f, 4.f, 0.f, 0.f, 0.f, 0.f, 1.f,
                          0.f, 0.f})
               .view({1, 1, 4, 4});
  EXPECT_EQ(Row(Make("keydiff:budget=1")->SelectKeep(v)), (Slots{3}));
  EXPECT_EQ(Row(Make("keydiff:budget=2")->SelectKeep(v)), (Slots{0, 3}));  // 0,1,2 tie
}

}  // namespace
}  // namespace kvgrid
