#include "common/ppl_error.h"

#include <algorithm>
#include <cmath>

namespace kvgrid {

NllMoments NllMomentsOf(const std::vector<double>& nll) {
  long double sum = 0, sum2 = 0;
  NllMoments m;
  for (double v : nll) {
    if (!std::isfinite(v)) continue;
    sum += v;
    sum2 += static_cast<long double>(v) * v;
    ++m.n;
  }
  if (m.n == 0) return m;
  const long double mean = sum / m.n;
  m.mean = static_cast<double>(mean);
  m.var = static_cast<double>(std::max<long double>(sum2 / m.n - mean * mean, 0));
  return m;
}

double PplStandardError(double ppl, const NllMoments& m) {
  if (m.n < 2) return 0;
  return ppl * std::sqrt(m.var / static_cast<double>(m.n - 1));
}

}  // namespace kvgrid
