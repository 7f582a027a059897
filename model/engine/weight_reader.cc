#include "model/engine/weight_reader.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvgrid {

torch::ScalarType TorchDtypeOf(StDtype d) {
  switch (d) {
    case StDtype::kF32: return torch::kFloat32;
    case StDtype::kF16: return torch::kFloat16;
    case StDtype::kBF16: return torch::kBFloat16;
    case StDtype::kF64: return torch::kFloat64;
    case StDtype::kI64: return torch::kInt64;
    case StDtype::kI32: return torch::kInt32;
    case StDtype::kI16: return torch::kInt16;
    case StDtype::kI8: return torch::kInt8;
    case StDtype::kU8: return torch::kUInt8;
    case StDtype::kBool: return torch::kBool;
  }
  return torch::kFloat32;
}

absl::StatusOr<torch::Tensor> WeightReader::Read(const CheckpointTensor& t) {
  const auto options = torch::TensorOptions().dtype(TorchDtypeOf(t.dtype()));
  if (t.safetensors != nullptr) {
    void* ptr = const_cast<void*>(t.safetensors->DataOf(*t.st_info));
    auto keep_alive = checkpoint_;  // the mapping outlives every tensor that wraps it
    return torch::from_blob(ptr, t.st_info->shape, [keep_alive](void*) {}, options);
  }
  const PickledTensor& p = *t.pickled;
  torch::Tensor& storage = storages_[{t.torch_zip, p.storage_key}];
  if (!storage.defined()) {
    torch::Tensor s = torch::empty({p.storage_numel}, options);
    RETURN_IF_ERROR(t.torch_zip->ReadStorage(p, s.data_ptr()));
    storage = s;
  }
  return storage.as_strided(p.shape, p.strides, p.storage_offset);
}

}  // namespace kvgrid
