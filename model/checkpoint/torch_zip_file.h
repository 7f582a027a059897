// pytorch_model.bin as torch.save writes it since PyTorch 1.6: a zip holding <prefix>/data.pkl (the
// pickled state dict, read with the restricted unpickler of state_dict_pickle.h), one member
// <prefix>/data/<key> per storage, <prefix>/version and, since PyTorch 2.0, <prefix>/byteorder.
// Nothing in the file is executed. No torch: storages are read into the caller's memory.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/zip_archive.h"
#include "model/checkpoint/state_dict_pickle.h"

namespace kvgrid {

class TorchZipFile {
 public:
  // Opens and checks the file: the pickle, every storage member's size, the byte order. The legacy
  // (pre-1.6, non-zip) format, other zips and malformed files give errors naming `path`.
  static absl::StatusOr<std::shared_ptr<TorchZipFile>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<PickledTensor>& tensors() const { return tensors_; }
  const PickledTensor* Find(const std::string& name) const;

  // Bytes of the storage behind `t` (its storage_numel elements).
  static uint64_t StorageBytes(const PickledTensor& t);
  // Reads that storage into `dst` (StorageBytes(t) bytes), CRC-checked.
  absl::Status ReadStorage(const PickledTensor& t, void* dst) const;

 private:
  TorchZipFile() = default;
  std::string path_;
  std::string prefix_;  // "<archive name>/"
  std::unique_ptr<ZipArchive> zip_;
  std::vector<PickledTensor> tensors_;
  std::map<std::string, size_t> by_name_;
};

}  // namespace kvgrid
