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

}  // namespace kvgrid
