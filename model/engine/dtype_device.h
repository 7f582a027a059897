// Text <-> LibTorch dtype and device, with errors that say what is accepted.
#pragma once

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"

namespace kvgrid {

// "float32|fp32|f32", "float16|fp16|f16|half", "bfloat16|bf16".
absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& text);
// "cpu", "cuda", "cuda:N", "auto" (CUDA device 0 when there is one, else CPU).
absl::StatusOr<torch::Device> ParseDevice(const std::string& text);
// "float32", "float16", "bfloat16", else LibTorch's own name.
std::string DtypeName(torch::ScalarType dtype);

}  // namespace kvgrid
