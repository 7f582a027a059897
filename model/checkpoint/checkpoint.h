// The weights of a model folder, however the Hub ships them, looked up in transformers' order:
//   model.safetensors                 one memory-mapped file
//   model.safetensors.index.json      shards of safetensors ({"weight_map": {tensor: file}})
//   pytorch_model.bin                 a torch.save zip (Pythia's step revisions), read safely
//   pytorch_model.bin.index.json      shards of torch.save zips (the larger Pythia models)
// No torch: the engine turns a CheckpointTensor into a tensor (model/engine/weight_reader.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/checkpoint/safetensors.h"
#include "model/checkpoint/torch_zip_file.h"

namespace kvgrid {

// The weight files a folder may hold, in the order they are preferred.
inline constexpr const char* kSafetensorsFile = "model.safetensors";
inline constexpr const char* kSafetensorsIndexFile = "model.safetensors.index.json";
inline constexpr const char* kTorchBinFile = "pytorch_model.bin";
inline constexpr const char* kTorchBinIndexFile = "pytorch_model.bin.index.json";
const std::vector<std::string>& WeightFileNames();

bool IsShardIndexFile(const std::string& name);

// The shard files an index names (its weight_map's values, each once, in first-seen order), each a
// plain file name in the same folder. `source` names the index in errors.
absl::StatusOr<std::vector<std::string>> ParseShardIndex(const std::string& json_text, const std::string& source);

// The weight files `dir` holds for the first form of WeightFileNames() it has: the file, or the index
// followed by every shard it names (each present). NotFound names what is missing.
absl::StatusOr<std::vector<std::string>> LocalWeightFiles(const std::string& dir);

// One tensor, in exactly one of the two file kinds.
struct CheckpointTensor {
  const SafetensorsFile* safetensors = nullptr;  // with st_info
  const StTensorInfo* st_info = nullptr;
  const TorchZipFile* torch_zip = nullptr;       // with pickled
  const PickledTensor* pickled = nullptr;
  const std::string& file() const { return safetensors ? safetensors->path() : torch_zip->path(); }
  StDtype dtype() const { return safetensors ? st_info->dtype : pickled->dtype; }
  const std::vector<int64_t>& shape() const { return safetensors ? st_info->shape : pickled->shape; }
};

class Checkpoint {
 public:
  // Opens the first weight file (or index) of WeightFileNames() that `dir` holds. None: NotFound
  // naming the folder and the four names.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Open(const std::string& dir);

  const CheckpointTensor* Find(const std::string& name) const;
  // What was opened, for errors: the weight file or the index.
  const std::string& source() const { return source_; }

 private:
  Checkpoint() = default;
  absl::Status AddFile(const std::string& path);
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> safetensors_;
  std::vector<std::shared_ptr<TorchZipFile>> torch_zips_;
  std::map<std::string, CheckpointTensor> tensors_;
};

}  // namespace kvgrid
