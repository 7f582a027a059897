#include "reports/statistics.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace kvgrid::reports {
namespace {

TEST(StatisticsTest, MedianOddAndEven) {
  EXPECT_DOUBLE_EQ(Summarize({3, 1, 2}).median, 2);
  EXPECT_DOUBLE_EQ(Summarize({4, 1, 3, 2}).median, 2.5);
}

TEST(StatisticsTest, QuantilesInterpolateLinearly) {
  // numpy.percentile([1..11], 10) == 2, 90 -> 10; [0, 10] at 0.1 -> 1.
  std::vector<double> v;
  for (int i = 1; i <= 11; ++i) v.push_back(i);
  Summary s = Summarize(v);
  EXPECT_DOUBLE_EQ(s.p10, 2);
  EXPECT_DOUBLE_EQ(s.p90, 10);
  EXPECT_DOUBLE_EQ(QuantileSorted({0, 10}, 0.1), 1);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 11);
  EXPECT_DOUBLE_EQ(s.mean, 6);
  EXPECT_EQ(s.n, 11);
}

TEST(StatisticsTest, SpreadIsMinMaxBelowTenSamplesElsePercentiles) {
  Summary few = Summarize({5, 1, 9, 3, 7});
  EXPECT_FALSE(few.UsesPercentiles());
  EXPECT_DOUBLE_EQ(few.SpreadLow(), 1);
  EXPECT_DOUBLE_EQ(few.SpreadHigh(), 9);
  std::vector<double> many;
  for (int i = 0; i <= 100; ++i) many.push_back(i);
  Summary s = Summarize(many);
  EXPECT_TRUE(s.UsesPercentiles());
  EXPECT_DOUBLE_EQ(s.SpreadLow(), 10);
  EXPECT_DOUBLE_EQ(s.SpreadHigh(), 90);
}

TEST(StatisticsTest, IgnoresNonFiniteAndHandlesEmpty) {
  double nan = std::numeric_limits<double>::quiet_NaN();
  Summary s = Summarize({nan, 2, std::numeric_limits<double>::infinity(), 4});
  EXPECT_EQ(s.n, 2);
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_TRUE(Summarize({}).empty());
}

TEST(StatisticsTest, PplFromNllMatchesLlamaPerplexityFormula) {
  std::vector<double> nll = {2.0, 3.0, 4.0, 3.0};
  // mean 3, population variance 0.5, n - 1 = 3.
  auto e = PplFromNll(nll);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_NEAR(e->ppl, std::exp(3.0), 1e-9);
  EXPECT_NEAR(e->plus_minus, std::exp(3.0) * std::sqrt(0.5 / 3.0), 1e-9);
  EXPECT_EQ(e->n, 4);
  EXPECT_NEAR(PplUncertainty(20.0, nll), 20.0 * std::sqrt(0.5 / 3.0), 1e-12);
}

TEST(StatisticsTest, PplNeedsTwoSamples) {
  EXPECT_FALSE(PplFromNll({1.0}).ok());
  EXPECT_EQ(PplUncertainty(10, {1.0}), 0);
}

TEST(StatisticsTest, RunningMean) {
  std::vector<double> m = RunningMean({2, 4, 6});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_DOUBLE_EQ(m[0], 2);
  EXPECT_DOUBLE_EQ(m[1], 3);
  EXPECT_DOUBLE_EQ(m[2], 4);
}

}  // namespace
}  // namespace kvgrid::reports
