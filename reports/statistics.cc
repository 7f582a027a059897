#include "reports/statistics.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

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

namespace {
// Population variance and count of the finite values, accumulated in long double.
void MeanVar(const std::vector<double>& x, int64_t* n, double* mean, double* var) {
  long double sum = 0, sum2 = 0;
  int64_t count = 0;
  for (double v : x) {
    if (!std::isfinite(v)) continue;
    sum += v;
    sum2 += static_cast<long double>(v) * v;
    ++count;
  }
  *n = count;
  if (count == 0) {
    *mean = 0;
    *var = 0;
    return;
  }
  long double m = sum / count;
  long double v = sum2 / count - m * m;
  *mean = static_cast<double>(m);
  *var = static_cast<double>(std::max<long double>(v, 0));
}
}  // namespace

double PplUncertainty(double ppl, const std::vector<double>& nll) {
  int64_t n;
  double mean, var;
  MeanVar(nll, &n, &mean, &var);
  if (n < 2) return 0;
  return ppl * std::sqrt(var / static_cast<double>(n - 1));
}

absl::StatusOr<PplEstimate> PplFromNll(const std::vector<double>& nll) {
  int64_t n;
  double mean, var;
  MeanVar(nll, &n, &mean, &var);
  if (n < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity needs at least 2 finite NLL samples, got ", n));
  }
  PplEstimate e;
  e.ppl = std::exp(mean);
  e.plus_minus = e.ppl * std::sqrt(var / static_cast<double>(n - 1));
  e.has_error = true;
  e.n = n;
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
