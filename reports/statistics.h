// Summary statistics for reports: median with spread and N, and perplexity with its uncertainty.
// Conventions (docs/metrics.md): report the median and the spread (p10–p90 when there are at least
// kMinSamplesForPercentiles values, else min–max) together with N. Quantiles interpolate linearly
// between order statistics (numpy's default, "type 7").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvgrid::reports {

// With fewer values than this, the spread shown is min–max instead of p10–p90.
inline constexpr int64_t kMinSamplesForPercentiles = 10;

struct Summary {
  int64_t n = 0;
  double median = 0, p10 = 0, p90 = 0, min = 0, max = 0, mean = 0;

  bool empty() const { return n == 0; }
  bool UsesPercentiles() const { return n >= kMinSamplesForPercentiles; }
  // The spread shown next to the median: p10–p90 or min–max (see UsesPercentiles()).
  double SpreadLow() const { return UsesPercentiles() ? p10 : min; }
  double SpreadHigh() const { return UsesPercentiles() ? p90 : max; }
};

// q in [0, 1]; `sorted` ascending and non-empty. Linear interpolation between order statistics.
double QuantileSorted(const std::vector<double>& sorted, double q);

// Non-finite values (NaN, ±inf) are ignored; an empty input gives an empty Summary.
Summary Summarize(std::vector<double> values);

// Perplexity with llama-perplexity's uncertainty: PPL = exp(mean NLL), and
// ± = PPL × sqrt(var(NLL) / (n − 1)), var being the population variance of the per-token NLLs
// (the formula lives once, in common/ppl_error.h, shared with the worker's ppl_stderr).
struct PplEstimate {
  double ppl = 0;
  double plus_minus = 0;   // 0 when unknown
  bool has_error = false;  // plus_minus is meaningful
  int64_t n = 0;           // scored tokens behind the estimate (0 when unknown)
};

// From the per-token NLL samples (natural log). Needs at least 2 finite values.
absl::StatusOr<PplEstimate> PplFromNll(const std::vector<double>& nll);

// The ± for a given PPL value from the NLL samples (the stored PPL is kept as the central value).
// Returns 0 when fewer than 2 samples.
double PplUncertainty(double ppl, const std::vector<double>& nll);

// Cumulative mean: out[i] = mean(x[0..i]).
std::vector<double> RunningMean(const std::vector<double>& x);

}  // namespace kvgrid::reports
