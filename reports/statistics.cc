#include "reports/statistics.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/ppl_error.h"

namespace kvgrid::reports {

double QuantileSorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  if (q <= 0) return sorted.front();
  if (q >= 1) return sorted.back();
  double pos = q * static_cast<double>(sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Summary Summarize(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(),
                              [](double v) { return !std::isfinite(v); }),
               values.end());
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.n = static_cast<int64_t>(values.size());
  s.min = values.front();
  s.max = values.back();
  s.median = QuantileSorted(values, 0.5);
  s.p10 = QuantileSorted(values, 0.1);
  s.p90 = QuantileSorted(values, 0.9);
  long double sum = 0;
  for (double v : values) sum += v;
  s.mean = static_cast<double>(sum / values.size());
  return s;
}

double PplUncertainty(double ppl, const std::vector<double>& nll) {
  return PplStandardError(ppl, NllMomentsOf(nll));
}

absl::StatusOr<PplEstimate> PplFromNll(const std::vector<double>& nll) {
  const NllMoments m = NllMomentsOf(nll);
  if (m.n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 finite NLL samples, got ", m.n));
  }
  PplEstimate e;
  e.ppl = std::exp(m.mean);
  e.plus_minus = PplStandardError(e.ppl, m);
  e.has_error = true;
  e.n = m.n;
  return e;
}

std::vector<double> RunningMean(const std::vector<double>& x) {
  std::vector<double> out;
  out.reserve(x.size());
  long double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sum += x[i];
    out.push_back(static_cast<double>(sum / static_cast<long double>(i + 1)));
  }
  return out;
}

}  // namespace kvgrid::reports
