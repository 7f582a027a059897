// Matrix-vector product for batch-1 decoding on CPU: y = W x + b with W [out, in] in float32,
// float16 or bfloat16 (read as stored, converted in registers) and x, b, y in float32.
// Token generation at batch 1 is bound by reading the weights once per token, so this streams
// every row of W exactly once, split over the intra-op thread pool (at::parallel_for), with
// AVX2/FMA/F16C when the CPU has them (checked at run time) and a portable loop otherwise.
#pragma once

#include <torch/torch.h>

namespace kvgrid {

// w: [out, in] contiguous, CPU. x: [in] (any float dtype; used as float32). b: [out] or undefined.
// Returns [out] in x's dtype when x is 16-bit, else float32.
torch::Tensor CpuGemv(const torch::Tensor& w, const torch::Tensor& x, const torch::Tensor& b);

// The two matrix-vector products of one query's attention over n cached rows of d floats (rows
// d floats apart), single-threaded (callers split over heads), AVX2/FMA when available:
// scores[j] = scale * dot(q, K[j]) for j < n, and out = sum_j p[j] * V[j].
void AttentionScoresF32(const float* q, const float* K, int64_t n, int64_t d, float scale,
                        float* scores);
void AttentionWeightedSumF32(const float* p, const float* V, int64_t n, int64_t d, float* out);

}  // namespace kvgrid
