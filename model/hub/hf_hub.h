// Resolves a model id ("ORG/NAME" at a revision) to a local directory through the standard
// Hugging Face cache, downloading missing files from the Hub. No torch.
//
// Cache layout (shared with huggingface_hub / transformers):
//   <cache_dir>/models--ORG--NAME/
//     refs/<revision>              the commit sha the revision pointed to
//     blobs/<etag>                 file contents; for LFS files etag = sha256 of the content
//     snapshots/<commit>/<file>    symlink -> ../../blobs/<etag>
//
// Online, each file is looked up with a HEAD on {endpoint}/{repo}/resolve/{revision}/{file}
// (headers X-Repo-Commit, X-Linked-Etag/ETag, X-Linked-Size/Content-Length); the first answer
// pins the commit and the remaining files are requested at that commit, so a snapshot never mixes
// commits. Missing blobs are downloaded (resumable, sha256-verified for LFS files) under a
// per-blob file lock; blobs already present (e.g. from another revision) are reused.
// Offline (HF_HUB_OFFLINE=1) nothing touches the network. If the Hub cannot be reached but the
// cache holds a complete snapshot for the revision, that snapshot is used (with a warning).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/http_download.h"

namespace kvgrid {

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // $HF_ENDPOINT
  // "model" (URLs {endpoint}/{repo}/..., cache folder models--ORG--NAME) or "dataset"
  // ({endpoint}/datasets/{repo}/..., datasets--ORG--NAME), as huggingface_hub's repo_type.
  std::string repo_type = "model";
  // Hub cache root: $HF_HUB_CACHE, else $HF_HOME/hub (~/.cache/huggingface/hub).
  std::string cache_dir;
  bool offline = false;   // $HF_HUB_OFFLINE in {1, true, yes, on}
  std::string token;      // $HF_TOKEN (or the token file in $HF_HOME); sent as a bearer token
  std::vector<std::string> required_files = {"config.json", "tokenizer.json"};
  // Also resolve the model's weights, in transformers' order (model/checkpoint/checkpoint.h):
  // model.safetensors, else model.safetensors.index.json and its shards, else pytorch_model.bin,
  // else pytorch_model.bin.index.json and its shards. None of them: NotFound naming all four.
  bool weights = true;
  // Fetched when the repository has them; a 404 is not an error.
  std::vector<std::string> optional_files = {"generation_config.json", "tokenizer_config.json",
                                             "special_tokens_map.json"};
  HttpOptions http;              // timeouts and retries (its bearer_token is replaced by `token`)
  double lock_timeout_s = 1800;  // waiting for another process downloading the same blob
  bool warn_on_fallback = true;  // print to stderr when falling back to the cache
  // Progress per file: (file name, bytes so far, total or -1).
  std::function<void(const std::string& file, int64_t done, int64_t total)> progress;

  // Defaults overridden by HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN
  // (also HUGGING_FACE_HUB_TOKEN, HF_TOKEN_PATH, $HF_HOME/token) and XDG_CACHE_HOME.
  static HubOptions FromEnv();
};

struct ModelSnapshot {
  std::string dir;                      // the directory to load the model from
  bool local_dir = false;               // id_or_dir was an existing local directory
  std::string repo_id;                  // empty for local directories
  std::string revision;
  std::string commit;                   // 40-hex commit the revision resolved to
  std::vector<std::string> files;       // files present in the snapshot (required + optional)
  std::vector<std::string> downloaded;  // files whose bytes were fetched by this call
  bool from_cache_only = false;         // offline, or the Hub was unreachable
};

// If `id_or_dir` is an existing directory, returns it unchanged. Otherwise it must be a Hub id
// ("ORG/NAME" or "NAME") and the snapshot directory for `revision` ("" = "main") is returned,
// downloading what is missing unless offline.
absl::StatusOr<ModelSnapshot> ResolveModelSnapshot(const std::string& id_or_dir,
                                                   const std::string& revision,
                                                   const HubOptions& options);

absl::StatusOr<std::string> ResolveModelDir(const std::string& id_or_dir,
                                            const std::string& revision,
                                            const HubOptions& options);

// One file of a Hub repository of `repo_type` ("model" or "dataset") at `revision` through the
// cache (same rules as above: HF_ENDPOINT, token, offline, resume, sha256): its local path in the
// snapshot. `options`' file lists are ignored.
absl::StatusOr<std::string> ResolveHubFile(const std::string& repo_type, const std::string& repo_id,
                                           const std::string& revision, const std::string& file,
                                           HubOptions options);

// "models--ORG--NAME" for "ORG/NAME" ("datasets--ORG--NAME" for repo_type "dataset").
std::string HubRepoFolderName(const std::string& repo_id, const std::string& repo_type = "model");

// Checks a Hub model id: one optional "ORG/" then NAME; letters, digits, '-', '_', '.';
// no "--" or "..". The error names the id.
absl::Status ValidateHubRepoId(const std::string& repo_id);

// Normalises an ETag header value: drops a weak "W/" prefix and the quotes.
std::string NormalizeEtag(const std::string& etag);

}  // namespace kvgrid
