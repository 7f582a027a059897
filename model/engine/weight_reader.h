// Turns the tensors of a Checkpoint (model/checkpoint/checkpoint.h) into CPU tensors in their stored
// dtype: safetensors tensors wrap the memory mapping (no copy); torch.save tensors are views of
// their storage, each storage read from the zip once (tensors sharing a storage share it).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "model/checkpoint/checkpoint.h"

namespace kvgrid {

torch::ScalarType TorchDtypeOf(StDtype d);

class WeightReader {
 public:
  explicit WeightReader(std::shared_ptr<const Checkpoint> checkpoint) : checkpoint_(std::move(checkpoint)) {}

  absl::StatusOr<torch::Tensor> Read(const CheckpointTensor& t);

 private:
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::map<std::pair<const TorchZipFile*, std::string>, torch::Tensor> storages_;
};

}  // namespace kvgrid
