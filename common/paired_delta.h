// A policy's timing against the full cache measured in the same process, interleaved repeat by
// repeat: the relative change with its 95 % interval (docs/metrics.md "Paired Δ"). No torch.
//
// Each repeat i gives a pair (policy_i, baseline_i). The change is the geometric mean of the
// ratios policy_i / baseline_i, and its interval is Student's t interval on the mean of the log
// ratios (n − 1 degrees of freedom), both turned back into percent: Δ = 100 (exp(mean) − 1).
// Pairs cancel what the machine does between repeats (both sides of a pair ran back to back);
// what is left is the spread of the ratios, which the interval shows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvgrid {

struct PairedDelta {
  int64_t n = 0;       // pairs used (both values finite and > 0)
  double pct = 0;      // 100 (geometric mean ratio − 1)
  double ci_low = 0;   // 95 % interval of pct; equal to pct when n < 2
  double ci_high = 0;
  bool valid() const { return n >= 1; }
  // The interval excludes 0 (needs n >= 2).
  bool significant() const { return n >= 2 && (ci_low > 0 || ci_high < 0); }
};

// Pairs policy[i] with baseline[i] (i < min of the sizes); pairs with a non-finite or
// non-positive value are skipped.
PairedDelta PairedRatioDelta(const std::vector<double>& policy, const std::vector<double>& baseline);

// Two-sided 95 % quantile of Student's t with `df` >= 1 degrees of freedom (table to 30, then
// the Cornish–Fisher expansion around 1.96; error < 0.002).
double StudentT975(int64_t df);

// "+12.3 % [+8.1, +16.0]", or "≈ +1.2 % [−2.0, +4.1]" when the interval contains 0 (not
// significant); "+3.0 % (n=1)" without an interval.
std::string FormatPairedDelta(const PairedDelta& d);

}  // namespace kvgrid
