// The one perplexity uncertainty formula, shared by the worker (metric ppl_stderr) and the
// report (the ± next to every PPL): llama-perplexity's, ± = PPL × sqrt(var(NLL) / (n − 1)) with
// var the population variance of the per-token NLLs (natural log). No torch.
#pragma once

#include <cstdint>
#include <vector>

namespace kvgrid {

struct NllMoments {
  int64_t n = 0;    // finite values
  double mean = 0;  // of the finite values
  double var = 0;   // population variance of the finite values (long double accumulation)
};

NllMoments NllMomentsOf(const std::vector<double>& nll);

// PPL × sqrt(var / (n − 1)); 0 when n < 2.
double PplStandardError(double ppl, const NllMoments& m);

}  // namespace kvgrid
