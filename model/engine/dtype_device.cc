#include "model/engine/dtype_device.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kvgrid {

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& text) {
  if (text == "float32" || text == "fp32" || text == "f32") return torch::kFloat32;
  if (text == "float16" || text == "fp16" || text == "f16" || text == "half") return torch::kFloat16;
  if (text == "bfloat16" || text == "bf16") return torch::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", text, "'; expected float32, float16 or bfloat16"));
}

std::string DtypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: return c10::toString(dtype);
  }
}

absl::StatusOr<torch::Device> ParseDevice(const std::string& text) {
  if (text == "cpu" || text == "auto" && !torch::cuda::is_available()) return torch::Device(torch::kCPU);
  if (text == "auto") return torch::Device(torch::kCUDA, 0);
  if (text == "cuda" || absl::StartsWith(text, "cuda:")) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device '", text, "' requested but this LibTorch has no usable CUDA device "
          "(CPU-only build or no GPU); use --device cpu"));
    }
    int index = 0;
    if (text.size() > 5 && !absl::SimpleAtoi(text.substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", text, "'"));
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(absl::StrCat("device '", text, "' does not exist"));
    }
    return torch::Device(torch::kCUDA, index);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", text, "'; expected cpu, cuda, cuda:N or auto"));
}

}  // namespace kvgrid
