// The stages of Expected Attention's score (expected_attention.cc), exposed for the unit tests'
// hand-computed examples (kv-policies-next.md EA-1..EA-3).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <utility>

namespace kvgrid {
namespace policies {

// Mean [H,d] and covariance [H,d,d] (divisor N) of queries [H,N,d], computed in the queries'
// precision and returned as float64; zeros when N = 0.
std::pair<torch::Tensor, torch::Tensor> QueryStatistics(const torch::Tensor& queries);

// [d,d] float64: the rotary rotation averaged over positions first .. first + count - 1, the
// identity outside the first rotary_dims dims; pair (i, i + r/2) has theta_i = base^(-2i/r) and
// R[i][i] = R[i+h][i+h] = mean cos, R[i][i+h] = -mean sin, R[i+h][i] = +mean sin.
torch::Tensor AveragedRotation(int64_t head_dim, int64_t rotary_dims, double base, int64_t first,
                               int64_t count);

// x [..., m, d] rotated at positions [m] -> the vectors before rotary, in x's precision.
torch::Tensor Unrotate(const torch::Tensor& x, const torch::Tensor& positions, int64_t rotary_dims,
                       double base);

// Scores [H,n] float64 from the rotated statistics mean [H,d] and covariance [H,d,d], the keys
// [H,n,d] (the two products run in the keys' precision), the value norms [H,n] (unused without
// use_vnorm) and is_sink [n] (sinks score the maximum over every head + 1).
torch::Tensor ExpectedAttentionScores(const torch::Tensor& mean, const torch::Tensor& covariance,
                                      const torch::Tensor& keys, const torch::Tensor& value_norms,
                                      const torch::Tensor& is_sink, bool use_covariance,
                                      bool use_vnorm, double epsilon);

}  // namespace policies
}  // namespace kvgrid
