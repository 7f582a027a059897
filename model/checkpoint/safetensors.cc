#include "model/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

absl::StatusOr<StDtype> ParseDtype(const std::string& s) {
  static const std::map<std::string, StDtype> kDtypes = {
      {"F32", StDtype::kF32}, {"F16", StDtype::kF16}, {"BF16", StDtype::kBF16},
      {"F64", StDtype::kF64}, {"I64", StDtype::kI64}, {"I32", StDtype::kI32},
      {"I16", StDtype::kI16}, {"I8", StDtype::kI8},   {"U8", StDtype::kU8},
      {"BOOL", StDtype::kBool}};
  auto it = kDtypes.find(s);
  if (it == kDtypes.end()) return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", s, "'"));
  return it->second;
}

}  // namespace

int64_t StDtypeSize(StDtype d) {
  switch (d) {
    case StDtype::kF64: case StDtype::kI64: return 8;
    case StDtype::kF32: case StDtype::kI32: return 4;
    case StDtype::kF16: case StDtype::kBF16: case StDtype::kI16: return 2;
    default: return 1;
  }
}

const char* StDtypeName(StDtype d) {
  switch (d) {
    case StDtype::kF32: return "F32";
    case StDtype::kF16: return "F16";
    case StDtype::kBF16: return "BF16";
    case StDtype::kF64: return "F64";
    case StDtype::kI64: return "I64";
    case StDtype::kI32: return "I32";
    case StDtype::kI16: return "I16";
    case StDtype::kI8: return "I8";
    case StDtype::kU8: return "U8";
    case StDtype::kBool: return "BOOL";
  }
  return "?";
}

absl::StatusOr<std::map<std::string, StTensorInfo>> ParseSafetensorsHeader(
    const std::string& header_json, uint64_t data_size, const std::string& source) {
  json j = json::parse(header_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": corrupt safetensors header (not a JSON object)"));
  }
  std::map<std::string, StTensorInfo> out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& t = it.value();
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", name, "': ", why));
    };
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array() || !t.contains("data_offsets") || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2) {
      return bad("entry must have string 'dtype', array 'shape' and two 'data_offsets'");
    }
    StTensorInfo info;
    auto dtype = ParseDtype(t["dtype"].get<std::string>());
    if (!dtype.ok()) return bad(std::string(dtype.status().message()));
    info.dtype = *dtype;
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return bad("shape entries must be non-negative integers");
      }
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (1ull << 62) / dim) return bad("shape too large");
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : t["data_offsets"]) {
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0)) {
        return bad("data_offsets must be non-negative integers");
      }
    }
    info.begin = t["data_offsets"][0].get<uint64_t>();
    info.end = t["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end || info.end > data_size) {
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                              ") out of range (data section is ", data_size, " bytes; file truncated?)"));
    }
    uint64_t expected = numel * static_cast<uint64_t>(StDtypeSize(info.dtype));
    if (info.end - info.begin != expected) {
      return bad(absl::StrCat("shape/size mismatch: shape needs ", expected, " bytes, offsets give ",
                              info.end - info.begin));
    }
    ranges.emplace_back(info.begin, info.end);
    out.emplace(name, std::move(info));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": corrupt safetensors header: tensor data ranges overlap at byte ", ranges[i].first));
    }
  }
  return out;
}

absl::StatusOr<std::map<std::string, StTensorInfo>> ParseSafetensorsBuffer(
    const uint8_t* data, uint64_t size, const std::string& source, uint64_t* data_offset) {
  if (size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": truncated safetensors file (", size, " bytes; no header length)"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeaderBytes || n > size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": corrupt safetensors file: header length ", n,
                                                   " runs past the end of the file (", size, " bytes)"));
  }
  std::string header(reinterpret_cast<const char*>(data + 8), n);
  *data_offset = 8 + n;
  return ParseSafetensorsHeader(header, size - 8 - n, source);
}

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat failed"));
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  void* base = nullptr;
  if (size > 0) {
    base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (base == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap failed"));
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->base_ = static_cast<const uint8_t*>(base);
  file->size_ = size;
  ASSIGN_OR_RETURN(file->tensors_, ParseSafetensorsBuffer(file->base_, size, path, &file->data_offset_));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr && size_ > 0) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const StTensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    uint64_t bytes = numel * StDtypeSize(t.dtype);
    header[t.name] = {{"dtype", StDtypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h.push_back(' ');
  std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary);
  if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot write"));
  uint64_t n = h.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(h.data(), h.size());
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    out.write(static_cast<const char*>(t.data), numel * StDtypeSize(t.dtype));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(tmp, ": write failed"));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(path, ": rename failed"));
  }
  return absl::OkStatus();
}

}  // namespace kvgrid
