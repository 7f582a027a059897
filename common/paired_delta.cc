#include "common/paired_delta.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace kvgrid {

double StudentT975(int64_t df) {
  static const double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                  2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                  2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                  2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) df = 1;
  if (df <= 30) return kTable[df - 1];
  const double z = 1.959964, v = static_cast<double>(df);
  return z + (z * z * z + z) / (4 * v) + (5 * std::pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

PairedDelta PairedRatioDelta(const std::vector<double>& policy, const std::vector<double>& baseline) {
  std::vector<double> logs;
  const size_t n = std::min(policy.size(), baseline.size());
  for (size_t i = 0; i < n; ++i) {
    const double a = policy[i], b = baseline[i];
    if (std::isfinite(a) && std::isfinite(b) && a > 0 && b > 0) logs.push_back(std::log(a / b));
  }
  PairedDelta d;
  d.n = static_cast<int64_t>(logs.size());
  if (d.n == 0) return d;
  double mean = 0;
  for (double x : logs) mean += x;
  mean /= static_cast<double>(d.n);
  auto pct = [](double log_ratio) { return 100.0 * (std::exp(log_ratio) - 1.0); };
  d.pct = d.ci_low = d.ci_high = pct(mean);
  if (d.n < 2) return d;
  double ss = 0;
  for (double x : logs) ss += (x - mean) * (x - mean);
  const double se = std::sqrt(ss / static_cast<double>(d.n - 1) / static_cast<double>(d.n));
  const double half = StudentT975(d.n - 1) * se;
  d.ci_low = pct(mean - half);
  d.ci_high = pct(mean + half);
  return d;
}

std::string FormatPairedDelta(const PairedDelta& d) {
  if (!d.valid()) return "";
  if (d.n < 2) return absl::StrFormat("%+.1f %% (n=1)", d.pct);
  const std::string body =
      absl::StrFormat("%+.1f %% [%+.1f, %+.1f]", d.pct, d.ci_low, d.ci_high);
  return d.significant() ? body : "≈ " + body;
}

}  // namespace kvgrid
