#include "model/policies/chunk_selection.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

namespace kvgrid {
namespace policies {

double KeepFractionForTarget(int64_t n, int64_t target) {
  if (n <= target) return 1.0;
  const double length = static_cast<double>(n);
  double r = 1.0 - static_cast<double>(target) / length, lo = 0.0, hi = 1.0;
  for (int i = 0; i < 20; ++i) {
    const auto kept = static_cast<int64_t>(length * (1.0 - r));
    if (kept == target) break;
    if (kept > target) {
      lo = r;
      r = (r + hi) / 2;
    } else {
      hi = r;
      r = (lo + r) / 2;
    }
  }
  return 1.0 - r;
}

std::vector<int64_t> SelectChunks(const double* scores, int64_t heads, int64_t n, int64_t chunk,
                                  double keep) {
  assert(chunk >= 1 && chunk <= n && keep > 0 && keep <= 1);
  const int64_t full = n / chunk, rem = n % chunk, chunks = full + (rem > 0 ? 1 : 0);
  std::vector<double> mean(chunks, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    double sum = 0;
    for (int64_t h = 0; h < heads; ++h) sum += scores[h * n + t];
    mean[t / chunk] += sum;
  }
  for (int64_t j = 0; j < chunks; ++j) {
    mean[j] /= static_cast<double>(j < full ? chunk : rem);
  }
  const int64_t wanted =
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(chunks) * keep));
  std::vector<int64_t> order(chunks);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const bool na = std::isnan(mean[a]), nb = std::isnan(mean[b]);
    return na || nb ? nb && !na : mean[a] > mean[b];  // NaN after every number
  });
  order.resize(std::min(wanted, chunks));
  std::sort(order.begin(), order.end());
  std::vector<int64_t> kept;
  for (int64_t j : order) {
    for (int64_t t = j * chunk; t < std::min(n, (j + 1) * chunk); ++t) kept.push_back(t);
  }
  return kept;
}

}  // namespace policies
}  // namespace kvgrid
