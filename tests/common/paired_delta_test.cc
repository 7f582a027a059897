#include "common/paired_delta.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kvgrid {
namespace {

TEST(PairedDelta, GeometricMeanOfRatiosWithTheTInterval) {
  // Ratios 1.1, 1.2, 1.3 (log: 0.095310, 0.182322, 0.262364): mean 0.179999, sd 0.083551,
  // se 0.048238, t(2) = 4.303 -> log interval [-0.027569, 0.387567]: Δ +19.72 % [-2.72, +47.34].
  const PairedDelta d = PairedRatioDelta({110, 24, 13}, {100, 20, 10});
  EXPECT_EQ(d.n, 3);
  EXPECT_NEAR(d.pct, 19.7216, 1e-3);
  EXPECT_NEAR(d.ci_low, -2.7194, 1e-3);
  EXPECT_NEAR(d.ci_high, 47.3394, 1e-3);
  EXPECT_FALSE(d.significant());  // the interval reaches below 0
}

TEST(PairedDelta, ConsistentPairsAreSignificantAndDriftCancels) {
  // Each pair is 10 % slower, while the machine's speed changes 3x between pairs: the ratio
  // is exactly 1.1 in every pair, so the interval has no width.
  const PairedDelta d = PairedRatioDelta({11, 33, 22, 16.5}, {10, 30, 20, 15});
  EXPECT_NEAR(d.pct, 10.0, 1e-9);
  EXPECT_NEAR(d.ci_low, 10.0, 1e-9);
  EXPECT_NEAR(d.ci_high, 10.0, 1e-9);
  EXPECT_TRUE(d.significant());
  EXPECT_EQ(FormatPairedDelta(d), "+10.0 % [+10.0, +10.0]");
}

TEST(PairedDelta, BadPairsAreSkippedAndOnePairHasNoInterval) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const PairedDelta d = PairedRatioDelta({5, nan, 0, 7}, {10, 1, 1});  // only (5,10) is usable
  EXPECT_EQ(d.n, 1);
  EXPECT_NEAR(d.pct, -50.0, 1e-9);
  EXPECT_FALSE(d.significant());
  EXPECT_EQ(FormatPairedDelta(d), "-50.0 % (n=1)");
  EXPECT_FALSE(PairedRatioDelta({}, {}).valid());
  EXPECT_EQ(FormatPairedDelta(PairedDelta{}), "");
}

TEST(PairedDelta, NotSignificantIsMarked) {
  const PairedDelta d = PairedRatioDelta({101, 99, 102, 98}, {100, 100, 100, 100});
  EXPECT_FALSE(d.significant());
  EXPECT_EQ(FormatPairedDelta(d).rfind("≈ ", 0), 0u) << FormatPairedDelta(d);
}

TEST(PairedDelta, StudentQuantiles) {
  EXPECT_DOUBLE_EQ(StudentT975(1), 12.706);
  EXPECT_DOUBLE_EQ(StudentT975(5), 2.571);
  EXPECT_DOUBLE_EQ(StudentT975(30), 2.042);
  EXPECT_NEAR(StudentT975(40), 2.021, 0.002);
  EXPECT_NEAR(StudentT975(120), 1.980, 0.002);
  EXPECT_NEAR(StudentT975(100000), 1.960, 0.001);
}

}  // namespace
}  // namespace kvgrid
