#include "model/checkpoint/torch_zip_file.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t{64} << 20;

// The first bytes of the file: zips start with "PK\3\4"; the legacy torch.save format starts
// with a pickle (0x80 = PROTO).
absl::StatusOr<std::string> FileHead(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  char buf[4] = {0, 0, 0, 0};
  size_t n = std::fread(buf, 1, sizeof(buf), f);
  std::fclose(f);
  return std::string(buf, n);
}

}  // namespace

uint64_t TorchZipFile::StorageBytes(const PickledTensor& t) {
  return static_cast<uint64_t>(t.storage_numel) * static_cast<uint64_t>(StDtypeSize(t.dtype));
}

absl::StatusOr<std::shared_ptr<TorchZipFile>> TorchZipFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::string head, FileHead(path));
  if (head != std::string("PK\x03\x04", 4)) {
    if (!head.empty() && static_cast<uint8_t>(head[0]) == 0x80) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": the legacy torch.save format (PyTorch before 1.6) is not supported; load it in "
          "Python and save it again with torch.save from PyTorch 1.6 or later, or as model.safetensors"));
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a torch.save zip archive"));
  }
  std::shared_ptr<TorchZipFile> f(new TorchZipFile());
  f->path_ = path;
  ASSIGN_OR_RETURN(f->zip_, ZipArchive::Open(path));
  // <prefix>/data.pkl, exactly one, at the top level.
  for (const auto& m : f->zip_->members()) {
    absl::string_view name = m.name;
    if (!absl::ConsumeSuffix(&name, "/data.pkl") || name.empty() || absl::StrContains(name, "/")) continue;
    if (!f->prefix_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": holds more than one data.pkl"));
    }
    f->prefix_ = absl::StrCat(name, "/");
  }
  if (f->prefix_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": a zip without <name>/data.pkl, not a torch.save checkpoint"));
  }
  if (f->zip_->Find(f->prefix_ + "byteorder") != nullptr) {
    ASSIGN_OR_RETURN(std::string order, f->zip_->Read(f->prefix_ + "byteorder", 16));
    if (absl::StripAsciiWhitespace(order) != "little") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensors stored in '", order,
                                                     "' byte order; only little-endian is supported"));
    }
  }
  ASSIGN_OR_RETURN(std::string pickle, f->zip_->Read(f->prefix_ + "data.pkl", kMaxPickleBytes));
  ASSIGN_OR_RETURN(f->tensors_, ParseStateDictPickle(pickle, path));
  for (size_t i = 0; i < f->tensors_.size(); ++i) {
    const PickledTensor& t = f->tensors_[i];
    f->by_name_[t.name] = i;
    const std::string member = absl::StrCat(f->prefix_, "data/", t.storage_key);
    const ZipArchive::Member* m = f->zip_->Find(member);
    if (m == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' needs storage ",
                                                     member, ", which the archive lacks"));
    }
    if (m->size != StorageBytes(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": storage ", member, " holds ", m->size, " bytes but tensor '", t.name, "' declares ",
          t.storage_numel, " elements of ", StDtypeName(t.dtype), " (", StorageBytes(t), " bytes)"));
    }
  }
  return f;
}

const PickledTensor* TorchZipFile::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

absl::Status TorchZipFile::ReadStorage(const PickledTensor& t, void* dst) const {
  return zip_->ReadInto(absl::StrCat(prefix_, "data/", t.storage_key), dst, StorageBytes(t));
}

}  // namespace kvgrid
