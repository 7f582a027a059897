// safetensors reader: memory-maps the file and validates its header (no torch, so it can be
// fuzzed cheaply). Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data section; offsets are relative to the data section.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvgrid {

enum class StDtype { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

int64_t StDtypeSize(StDtype d);
const char* StDtypeName(StDtype d);

struct StTensorInfo {
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Parses and validates a header against the data-section size. `source` names the file in errors.
absl::StatusOr<std::map<std::string, StTensorInfo>> ParseSafetensorsHeader(
    const std::string& header_json, uint64_t data_size, const std::string& source);

// Parses a whole in-memory safetensors image (header length prefix + header + data).
absl::StatusOr<std::map<std::string, StTensorInfo>> ParseSafetensorsBuffer(
    const uint8_t* data, uint64_t size, const std::string& source, uint64_t* data_offset);

// A memory-mapped safetensors file. Tensors point into the mapping; keep the object alive
// (share it) while they are used.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* Find(const std::string& name) const;
  const void* DataOf(const StTensorInfo& info) const { return base_ + data_offset_ + info.begin; }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::map<std::string, StTensorInfo> tensors_;
};

// Writes tensors (raw little-endian bytes) as a safetensors file; used by init-random-model.
struct StWriteTensor {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;
  const void* data;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace kvgrid
