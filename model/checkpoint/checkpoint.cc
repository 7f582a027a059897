#include "model/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/atomic_file.h"
#include "common/status_macros.h"
#include <nlohmann/json.hpp>

namespace kvgrid {
namespace {

bool IsPlainFileName(const std::string& n) {
  return !n.empty() && n.size() < 256 && n != "." && n != ".." && !absl::StrContains(n, "/") &&
         !absl::StrContains(n, "\\") && !absl::StrContains(n, std::string(1, '\0'));
}

}  // namespace

const std::vector<std::string>& WeightFileNames() {
  static const std::vector<std::string> kNames = {kSafetensorsFile, kSafetensorsIndexFile, kTorchBinFile,
                                                  kTorchBinIndexFile};
  return kNames;
}

bool IsShardIndexFile(const std::string& name) { return absl::EndsWith(name, ".index.json"); }

absl::StatusOr<std::vector<std::string>> ParseShardIndex(const std::string& json_text, const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a shard index (a JSON object with a weight_map object)"));
  }
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    if (!file.is_string() || !IsPlainFileName(file.get<std::string>())) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": weight_map['", tensor,
                                                     "'] is not a file name in the same folder"));
    }
    if (seen.insert(file.get<std::string>()).second) files.push_back(file.get<std::string>());
  }
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": weight_map is empty"));
  return files;
}

absl::Status Checkpoint::AddFile(const std::string& path) {
  if (absl::EndsWith(path, ".safetensors")) {
    ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(path));
    for (const auto& [name, info] : f->tensors()) {
      CheckpointTensor t;
      t.safetensors = f.get();
      t.st_info = &info;
      if (!tensors_.emplace(name, std::move(t)).second) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is also in another shard"));
      }
    }
    safetensors_.push_back(std::move(f));
  } else {
    ASSIGN_OR_RETURN(auto f, TorchZipFile::Open(path));
    for (const auto& p : f->tensors()) {
      CheckpointTensor t;
      t.torch_zip = f.get();
      t.pickled = &p;
      if (!tensors_.emplace(p.name, std::move(t)).second) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", p.name, "' is also in another shard"));
      }
    }
    torch_zips_.push_back(std::move(f));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> LocalWeightFiles(const std::string& dir) {
  for (const std::string& name : WeightFileNames()) {
    const std::string path = dir + "/" + name;
    if (!IsRegularFile(path)) continue;
    std::vector<std::string> files = {name};
    if (!IsShardIndexFile(name)) return files;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
    ASSIGN_OR_RETURN(std::vector<std::string> shards, ParseShardIndex(text, path));
    for (const std::string& shard : shards) {
      if (!IsRegularFile(dir + "/" + shard)) {
        return absl::NotFoundError(absl::StrCat(path, " names shard ", shard, ", which ", dir, " lacks"));
      }
      if (absl::EndsWith(name, ".safetensors.index.json") != absl::EndsWith(shard, ".safetensors")) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": shard ", shard, " is not of the index's kind"));
      }
      files.push_back(shard);
    }
    return files;
  }
  return absl::NotFoundError(absl::StrCat(dir, ": no model weights (looked for ",
                                          absl::StrJoin(WeightFileNames(), ", "), ")"));
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<std::string> files, LocalWeightFiles(dir));
  std::shared_ptr<Checkpoint> c(new Checkpoint());
  c->source_ = dir + "/" + files.front();
  // An index is followed by its shards; a single file stands alone.
  for (size_t i = IsShardIndexFile(files.front()) ? 1 : 0; i < files.size(); ++i) {
    RETURN_IF_ERROR(c->AddFile(dir + "/" + files[i]));
  }
  return std::shared_ptr<const Checkpoint>(c);
}

const CheckpointTensor* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace kvgrid
