// chunkkv and expected_attention on the hand-computed examples of
// /work/shared/docs/kv-policies-next.md (C1, C2, C4, EA-1..EA-3), ties included, and both
// policies through MakePolicy on views whose answer follows from their parts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/policy_spec.h"
#include "tests/policies/policy_test_util.h"
#include "model/engine/kv_policy.h"
#include "model/policies/chunk_selection.h"
#include "model/policies/expected_attention.h"
#include "model/policies/selection.h"

namespace kvgrid {
namespace {

using testing_util::CausalPrefillView;
using testing_util::Make;
using testing_util::Row;
using testing_util::Slots;

// ---------------------------------------------------------------- chunk selection

TEST(ChunkSelection, ExampleC1KeepsOnlyThePartialChunk) {
  // S0 = [1 2 3 0 0 1 9], S1 = [1 0 0 4 4 1 0]: a = [2 2 3 4 4 2 9], chunk means 7/3, 10/3, 9/1;
  // int(3 * 0.5) = 1 chunk: the partial one, 1 token.
  const std::vector<double> s = {1, 2, 3, 0, 0, 1, 9, 1, 0, 0, 4, 4, 1, 0};
  EXPECT_EQ(policies::SelectChunks(s.data(), 2, 7, 3, 0.5), (Slots{6}));
}

TEST(ChunkSelection, ExampleC2TruncatesTheChunkCountInDouble) {
  // int(3 * 0.7) = int(2.0999999999999996) = 2 chunks: the partial one and chunk 1.
  const std::vector<double> s = {1, 2, 3, 0, 0, 1, 9, 1, 0, 0, 4, 4, 1, 0};
  EXPECT_EQ(policies::SelectChunks(s.data(), 2, 7, 3, 0.7), (Slots{3, 4, 5, 6}));
}

TEST(ChunkSelection, EqualChunksKeepTheLowerIndexAndAtLeastOneChunk) {
  const std::vector<double> ones(6, 1.0);
  EXPECT_EQ(policies::SelectChunks(ones.data(), 1, 6, 2, 0.5), (Slots{0, 1}));
  EXPECT_EQ(policies::SelectChunks(ones.data(), 1, 6, 2, 0.01), (Slots{0, 1}));  // max(1, 0)
  // A chunk of NaN scores ranks after every number.
  const std::vector<double> nan = {NAN, NAN, 0, 0, -1, -1};
  EXPECT_EQ(policies::SelectChunks(nan.data(), 1, 6, 2, 0.5), (Slots{2, 3}));
}

TEST(ChunkSelection, KeepFractionForTargetGivesTheTargetCount) {
  for (int64_t n : {7, 10, 20, 513}) {
    for (int64_t target = 1; target < n; target += std::max<int64_t>(1, n / 9)) {
      const double keep = policies::KeepFractionForTarget(n, target);
      EXPECT_EQ(static_cast<int64_t>(static_cast<double>(n) * keep), target) << n << " " << target;
    }
  }
  EXPECT_EQ(policies::KeepFractionForTarget(10, 10), 1.0);
  EXPECT_EQ(policies::KeepFractionForTarget(10, 12), 1.0);
}

// ---------------------------------------------------------------- chunkkv policy

policies::ScorerPolicy* AsScorer(KvPolicy* p) { return dynamic_cast<policies::ScorerPolicy*>(p); }

TEST(ChunkKv, KeepsTheSameWholeChunksInEveryHeadRankedByTheInnerScores) {
  LayerView v = CausalPrefillView(20, 3, 7);
  auto inner = Make("observed_attention:ratio=0.5");
  inner->Reset(1);
  const torch::Tensor scores = AsScorer(inner.get())->Scores(v, false).to(torch::kDouble).contiguous();
  const Slots expected = policies::SelectChunks(scores.data_ptr<double>(), 3, 20, 4, 0.5);
  ASSERT_EQ(expected.size(), 8u);  // int(5 chunks * 0.5) = 2 chunks of 4

  auto chunkkv = Make("chunkkv:ratio=0.5,chunk_length=4,inner=observed_attention");
  chunkkv->Reset(1);
  torch::Tensor keep = chunkkv->SelectKeep(v);
  ASSERT_TRUE(keep.defined());
  for (int64_t h = 0; h < 3; ++h) EXPECT_EQ(Row(keep, h), expected) << "head " << h;
}

TEST(ChunkKv, AnAbsoluteBudgetKeepsTheChunksItsKeepFractionAllows) {
  LayerView v = CausalPrefillView(20, 2, 8);
  // budget 9 of 20: keep fraction f with int(20 f) = 9, then int(5 chunks * f) = 2 chunks.
  torch::Tensor keep = Make("chunkkv:budget=9,chunk_length=4,inner=keydiff")->SelectKeep(v);
  ASSERT_TRUE(keep.defined());
  EXPECT_EQ(keep.size(2), 8);
  const Slots row = Row(keep, 0);
  for (size_t i = 0; i < row.size(); i += 4) EXPECT_EQ(row[i] % 4, 0);  // whole chunks
}

TEST(ChunkKv, ShorterThanAChunkFallsBackToTheInnerPerHeadTopK) {
  LayerView v = CausalPrefillView(6, 2, 9);
  torch::Tensor inner = Make("keydiff:budget=3")->SelectKeep(v);
  torch::Tensor keep = Make("chunkkv:budget=3,chunk_length=20,inner=keydiff")->SelectKeep(v);
  ASSERT_TRUE(keep.defined() && inner.defined());
  EXPECT_TRUE(torch::equal(keep, inner));
}

TEST(ChunkKv, TheInnerScorerMustAcceptTheBudgetAtSubmitTime) {
  auto bad = ParsePolicySpec("chunkkv:budget=16,inner=snapkv");  // snapkv's window 32 > 16
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("inner scorer"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("window"), std::string::npos) << bad.status();
  auto not_a_scorer = ParsePolicySpec("chunkkv:budget=16,inner=h2o");
  ASSERT_FALSE(not_a_scorer.ok());
  EXPECT_NE(not_a_scorer.status().message().find("inner"), std::string::npos);
}

// ---------------------------------------------------------------- expected attention

TEST(ExpectedAttention, ExampleEa1Scores) {
  // d = 4, n_sink = 1, L = 4; mean [1,0,0,0], covariance diag(.5,0,0,0); keys 1..3 below.
  torch::Tensor mean = torch::tensor({1.0, 0.0, 0.0, 0.0}, torch::kDouble).view({1, 4});
  torch::Tensor cov = torch::zeros({1, 4, 4}, torch::kDouble);
  cov[0][0][0] = 0.5;
  torch::Tensor keys = torch::tensor(std::vector<double>{9, 9, 9, 9, 2, 0, 0, 0, 0, 2, 0, 0, -2, 0, 0, 0}).view({1, 4, 4});
  torch::Tensor norms = torch::tensor(std::vector<double>{5, 1, 3, 2}).view({1, 4});
  torch::Tensor sink = torch::tensor({1, 0, 0, 0}, torch::kBool);
  torch::Tensor s = policies::ExpectedAttentionScores(mean, cov, keys, norms, sink, true, true, 0.0);
  const double expected[] = {1.7033140, 0.7033140, 0.6045085, 0.1903664};
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(s[0][t].item<double>(), expected[t], 5e-7) << t;
  EXPECT_EQ(Row(policies::TopKAscending(s.unsqueeze(0), 2), 0), (Slots{0, 1}));
  // Without the value norm the scores are the probabilities [0.7033140, 0.2015028, 0.0951832].
  s = policies::ExpectedAttentionScores(mean, cov, keys, norms, sink, true, false, 0.0);
  EXPECT_NEAR(s[0][2].item<double>(), 0.2015028, 5e-7);
  EXPECT_NEAR(s[0][0].item<double>(), 1.7033140, 5e-7);
}

TEST(ExpectedAttention, SinksScoreTheMaximumOverEveryHeadPlusOne) {
  torch::Tensor mean = torch::zeros({2, 2}, torch::kDouble);
  torch::Tensor cov = torch::zeros({2, 2, 2}, torch::kDouble);
  torch::Tensor keys = torch::zeros({2, 3, 2}, torch::kDouble);
  torch::Tensor norms = torch::tensor(std::vector<double>{0, 1, 3, 0, 1, 8}).view({2, 3});
  torch::Tensor sink = torch::tensor({1, 0, 0}, torch::kBool);
  torch::Tensor s = policies::ExpectedAttentionScores(mean, cov, keys, norms, sink, true, true, 0.0);
  // Uniform p = 1/2 over the two non-sinks; the largest score is head 1's 0.5 * 8 = 4.
  EXPECT_DOUBLE_EQ(s[0][0].item<double>(), 5.0);
  EXPECT_DOUBLE_EQ(s[1][0].item<double>(), 5.0);
  EXPECT_DOUBLE_EQ(s[0][2].item<double>(), 1.5);
}

TEST(ExpectedAttention, ExampleEa2Statistics) {
  torch::Tensor q = torch::tensor(std::vector<double>{1, 2, 3, 4, 2, 6}, torch::kDouble).view({1, 3, 2});
  auto [mean, cov] = policies::QueryStatistics(q);
  EXPECT_DOUBLE_EQ(mean[0][0].item<double>(), 2.0);
  EXPECT_DOUBLE_EQ(mean[0][1].item<double>(), 4.0);
  EXPECT_NEAR(cov[0][0][0].item<double>(), 2.0 / 3, 1e-15);
  EXPECT_NEAR(cov[0][0][1].item<double>(), 2.0 / 3, 1e-15);
  EXPECT_NEAR(cov[0][1][1].item<double>(), 8.0 / 3, 1e-15);
  auto [m0, c0] = policies::QueryStatistics(torch::zeros({2, 0, 3}, torch::kDouble));
  EXPECT_EQ(m0.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(c0.sizes(), (std::vector<int64_t>{2, 3, 3}));
}

TEST(ExpectedAttention, ExampleEa3PythiaAveragedRotation) {
  // Pythia: d = 64, rotary on 16 dims (pairs (i, i+8)), base 10000; positions 4 and 5.
  torch::Tensor r = policies::AveragedRotation(64, 16, 10000, 4, 2);
  auto a = r.accessor<double, 2>();
  EXPECT_NEAR(a[0][0], -0.1849907, 5e-7);
  EXPECT_NEAR(a[8][0], -0.8578634, 5e-7);  // +mean sin below the diagonal
  EXPECT_NEAR(a[0][8], 0.8578634, 5e-7);   // -mean sin above
  EXPECT_NEAR(a[8][8], -0.1849907, 5e-7);
  EXPECT_NEAR(a[1][1], 0.1453976, 5e-7);
  EXPECT_NEAR(a[9][1], 0.9767636, 5e-7);
  EXPECT_NEAR(a[7][7], 0.9999990, 5e-7);
  EXPECT_NEAR(a[15][7], 0.0014230, 5e-7);
  EXPECT_EQ(a[16][16], 1.0);
  EXPECT_EQ(a[40][3], 0.0);
}

TEST(ExpectedAttention, UnrotateUndoesTheRotationAtEachPosition) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({2, 3, 64}, torch::kDouble);
  torch::Tensor positions = torch::tensor({0, 7, 2047}, torch::kInt64);
  std::vector<torch::Tensor> rotated;
  for (int64_t t = 0; t < 3; ++t) {
    torch::Tensor rt = policies::AveragedRotation(64, 16, 10000, positions[t].item<int64_t>(), 1);
    rotated.push_back(torch::matmul(x.select(1, t), rt.t()));  // R_p x for every head
  }
  torch::Tensor back = policies::Unrotate(torch::stack(rotated, 1), positions, 16, 10000);
  EXPECT_TRUE(torch::allclose(back, x, 1e-12, 1e-12));
}

TEST(ExpectedAttention, PolicyKeepsItsSinksAndTheTopScoredEntries) {
  LayerView v = CausalPrefillView(24, 2, 11);
  torch::Tensor keep = Make("expected_attention:budget=10,n_sink=3")->SelectKeep(v);
  ASSERT_TRUE(keep.defined());
  ASSERT_EQ(keep.size(2), 10);
  for (int64_t h = 0; h < 2; ++h) {
    const Slots row = Row(keep, h);
    EXPECT_EQ(Slots(row.begin(), row.begin() + 3), (Slots{0, 1, 2})) << "sinks of head " << h;
  }
  // The decoding variant keeps a buffer and compresses every `interval` steps.
  auto decoding = Make("expected_attention:budget=10,n_sink=3,interval=2");
  decoding->Reset(1);
  EXPECT_TRUE(decoding->SelectKeep(v).defined());
  EXPECT_TRUE(decoding->ActsAfter(ForwardPhase::kDecode));
}

}  // namespace
}  // namespace kvgrid
