// PyramidKV per-layer budgets: the worked numbers of kv-policies.md §3.5 (L = 6, n = 2048).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "model/policies/pyramidkv.h"

namespace kvgrid {
namespace {

using policies::PyramidBudgetKvCacheFactory;
using policies::PyramidBudgetKvpress;

std::vector<int64_t> KvCacheFactoryRow(int64_t n, int64_t capacity, int64_t window) {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < 6; ++l) {
    out.push_back(PyramidBudgetKvCacheFactory(n, capacity, window, /*beta=*/20, 6, l));
  }
  return out;
}

std::vector<int64_t> KvpressRow(int64_t n, double ratio, int64_t window) {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < 6; ++l) {
    out.push_back(PyramidBudgetKvpress(n, static_cast<double>(n) * ratio, window, 20, 6, l));
  }
  return out;
}

// Entries kept per layer = selected prefix (m_max - l*step) + window 8.
TEST(PyramidKvBudget, KvCacheFactoryWorkedNumbers) {
  EXPECT_EQ(KvCacheFactoryRow(2048, 128, 8), (std::vector<int64_t>{242, 197, 152, 107, 62, 17}));
  EXPECT_EQ(KvCacheFactoryRow(2048, 256, 8), (std::vector<int64_t>{492, 398, 304, 210, 116, 22}));
  EXPECT_EQ(KvCacheFactoryRow(2048, 512, 8), (std::vector<int64_t>{991, 800, 609, 418, 227, 36}));
  EXPECT_EQ(KvCacheFactoryRow(2048, 1024, 8),
            (std::vector<int64_t>{1990, 1604, 1218, 832, 446, 60}));
}

TEST(PyramidKvBudget, KvCacheFactoryRegimes) {
  // n < C: no compression.
  EXPECT_EQ(KvCacheFactoryRow(100, 128, 8), (std::vector<int64_t>(6, 100)));
  // C <= n < 2(C - w): plain SnapKV, C for every layer.
  EXPECT_EQ(KvCacheFactoryRow(128, 128, 8), (std::vector<int64_t>(6, 128)));
  EXPECT_EQ(KvCacheFactoryRow(239, 128, 8), (std::vector<int64_t>(6, 128)));
  // n >= 2(C - w) = 240: the pyramid; m_max is clamped to n - w.
  std::vector<int64_t> at240 = KvCacheFactoryRow(240, 128, 8);
  EXPECT_EQ(at240.front(), 240);  // m_max = n - w = 232, + window
  EXPECT_GT(at240.front(), at240.back());
  // One layer: plain SnapKV.
  EXPECT_EQ(PyramidBudgetKvCacheFactory(2048, 128, 8, 20, 1, 0), 128);
}

TEST(PyramidKvBudget, KvpressWorkedNumbers) {
  // compression_ratio 0.25 / 0.5 -> keep ratio 0.75 / 0.5, window 64 counted inside.
  EXPECT_EQ(KvpressRow(2048, 0.75, 64), (std::vector<int64_t>{1984, 1805, 1626, 1446, 1267, 1088}));
  EXPECT_EQ(KvpressRow(2048, 0.5, 64), (std::vector<int64_t>{1984, 1600, 1216, 832, 448, 64}));
  // cr >= 0.75: m_min < w -> uniform SnapKV round(n (1 - cr)).
  EXPECT_EQ(KvpressRow(2048, 0.25, 64), (std::vector<int64_t>(6, 512)));
  EXPECT_EQ(KvpressRow(2048, 1 - 0.9, 64), (std::vector<int64_t>(6, 205)));
}

// Port of kvpress tests/presses/test_pyramidkv_press.py: the mean over layers is n*(1-cr).
TEST(PyramidKvBudget, KvpressMeanMatchesTheRatio) {
  for (int64_t n : {512, 1000, 2048, 4096}) {
    for (double cr : {0.1, 0.25, 0.5}) {
      std::vector<int64_t> row = KvpressRow(n, 1 - cr, 64);
      double mean = 0;
      for (int64_t k : row) mean += static_cast<double>(k) / 6;
      EXPECT_NEAR(mean, n * (1 - cr), n * (1 - cr) * 1e-3) << "n=" << n << " cr=" << cr;
    }
  }
}

}  // namespace
}  // namespace kvgrid
