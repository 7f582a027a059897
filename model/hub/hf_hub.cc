#include "model/hub/hf_hub.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/atomic_file.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "model/checkpoint/checkpoint.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

bool IsTruthy(const std::string& v) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(v));
  return s == "1" || s == "true" || s == "yes" || s == "on";
}

std::string HomeDir() {
  std::string home = Env("HOME");
  return home.empty() ? std::string("/tmp") : home;
}

bool IsCommitHash(absl::string_view s) {
  if (s.size() != 40) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsDirectory(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}


// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string UrlEncode(absl::string_view s, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status ValidateRelativeName(const std::string& what, const std::string& name) {
  if (name.empty() || name.front() == '/') {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", what, " '", name, "'"));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(absl::StrCat("invalid ", what, " '", name, "'"));
    }
  }
  return absl::OkStatus();
}

std::string HeaderOr(const HttpResponse& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? std::string() : it->second;
}

// What one HEAD on the Hub tells about a file.
struct FileMetadata {
  std::string commit;
  std::string etag;
  int64_t size = -1;
  std::string url;  // the resolve URL at the pinned commit
};

class RepoCache {
 public:
  RepoCache(const HubOptions& o, std::string repo_id)
      : options_(o), repo_id_(std::move(repo_id)) {
    root_ = (fs::path(o.cache_dir) / HubRepoFolderName(repo_id_, o.repo_type)).string();
  }

  const std::string& root() const { return root_; }
  std::string RefPath(const std::string& revision) const { return root_ + "/refs/" + revision; }
  std::string BlobPath(const std::string& etag) const { return root_ + "/blobs/" + etag; }
  std::string SnapshotDir(const std::string& commit) const {
    return root_ + "/snapshots/" + commit;
  }
  std::string PointerPath(const std::string& commit, const std::string& file) const {
    return SnapshotDir(commit) + "/" + file;
  }

  std::string ResolveUrl(const std::string& revision, const std::string& file) const {
    return absl::StrCat(options_.endpoint, options_.repo_type == "dataset" ? "/datasets/" : "/", repo_id_, "/resolve/",
                        UrlEncode(revision, false), "/", UrlEncode(file, true));
  }

  // Commit for `revision` from the cache, or "" if unknown.
  std::string CachedCommit(const std::string& revision) const {
    if (IsCommitHash(revision) && IsDirectory(SnapshotDir(absl::AsciiStrToLower(revision)))) {
      return absl::AsciiStrToLower(revision);
    }
    auto ref = ReadFileToString(RefPath(revision));
    if (!ref.ok()) return "";
    std::string c(absl::StripAsciiWhitespace(*ref));
    return IsCommitHash(c) ? c : "";
  }

  absl::StatusOr<ModelSnapshot> ResolveFromCache(const std::string& revision,
                                                 const std::string& why) const {
    ModelSnapshot snap;
    snap.repo_id = repo_id_;
    snap.revision = revision;
    snap.from_cache_only = true;
    std::string commit = CachedCommit(revision);
    if (commit.empty()) {
      return absl::NotFoundError(absl::StrCat(
          why, ": ", repo_id_, " at revision '", revision, "' is not in the cache (",
          RefPath(revision), " is missing), so ", options_.required_files.empty()
              ? std::string("its files")
              : options_.required_files.front(),
          " cannot be found locally"));
    }
    snap.commit = commit;
    snap.dir = SnapshotDir(commit);
    for (const auto& f : options_.required_files) {
      std::string p = PointerPath(commit, f);
      if (!IsRegularFile(p)) {
        return absl::NotFoundError(absl::StrCat(why, ": ", f, " of ", repo_id_, " at revision '",
                                                revision, "' is not in the cache (looked for ",
                                                p, ")"));
      }
      snap.files.push_back(f);
    }
    if (options_.weights) {
      absl::StatusOr<std::vector<std::string>> weights = LocalWeightFiles(snap.dir);
      if (!weights.ok()) {
        return absl::Status(weights.status().code(),
                            absl::StrCat(why, ": the weights of ", repo_id_, " at revision '", revision,
                                         "' are not complete in the cache: ", weights.status().message()));
      }
      snap.files.insert(snap.files.end(), weights->begin(), weights->end());
    }
    for (const auto& f : options_.optional_files) {
      if (IsRegularFile(PointerPath(commit, f))) snap.files.push_back(f);
    }
    return snap;
  }

  // HEAD without following redirects (the Hub's metadata sits on the 302 of LFS files), except
  // relative redirects, which the Hub uses for renamed repositories.
  absl::StatusOr<FileMetadata> Head(const std::string& revision, const std::string& file) const {
    HttpOptions http = options_.http;
    http.bearer_token = options_.token;
    std::string url = ResolveUrl(revision, file);
    HttpResponse r;
    for (int hops = 0;; ++hops) {
      ASSIGN_OR_RETURN(r, HttpHead(url, http, /*follow_redirects=*/false));
      std::string location = HeaderOr(r, "location");
      bool relative_redirect = r.status >= 300 && r.status < 400 &&
                               absl::StartsWith(location, "/") &&
                               HeaderOr(r, "x-repo-commit").empty();
      if (!relative_redirect) break;
      if (hops >= 5) {
        return absl::FailedPreconditionError(absl::StrCat("too many redirects for ", url));
      }
      url = options_.endpoint + location;
    }
    FileMetadata m;
    m.commit = absl::AsciiStrToLower(HeaderOr(r, "x-repo-commit"));
    m.etag = NormalizeEtag(HeaderOr(r, "x-linked-etag"));
    if (m.etag.empty()) m.etag = NormalizeEtag(HeaderOr(r, "etag"));
    std::string size = HeaderOr(r, "x-linked-size");
    if (size.empty() && r.status >= 200 && r.status < 300) size = HeaderOr(r, "content-length");
    if (!absl::SimpleAtoi(size, &m.size)) m.size = -1;
    if (!IsCommitHash(m.commit)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the server at ", options_.endpoint, " sent no valid X-Repo-Commit header for ", url,
          " (HTTP ", r.status, "); is HF_ENDPOINT a Hugging Face Hub?"));
    }
    if (m.etag.empty() || m.etag.find('/') != std::string::npos || m.etag == "." ||
        m.etag == "..") {
      return absl::FailedPreconditionError(absl::StrCat(
          "the server at ", options_.endpoint, " sent no usable ETag for ", url));
    }
    m.url = ResolveUrl(m.commit, file);
    return m;
  }

  // Makes snapshots/<commit>/<file> point at blobs/<etag> (relative symlink, atomically).
  absl::Status LinkPointer(const std::string& commit, const std::string& file,
                           const std::string& etag) const {
    std::string pointer = PointerPath(commit, file);
    fs::path parent = fs::path(pointer).parent_path();
    RETURN_IF_ERROR(CreateDirectories(parent.string()));
    std::string target = "../../";
    for (char c : file) {
      if (c == '/') target += "../";
    }
    target += "blobs/" + etag;
    std::string tmp = absl::StrCat(pointer, ".tmp.", getpid());
    ::unlink(tmp.c_str());
    if (::symlink(target.c_str(), tmp.c_str()) != 0) {
      // Filesystems without symlinks: fall back to a copy of the blob.
      std::error_code ec;
      fs::copy_file(BlobPath(etag), tmp, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        return absl::PermissionDeniedError(absl::StrCat("cannot link or copy ", BlobPath(etag),
                                                        " to ", pointer, ": ", ec.message()));
      }
    }
    if (std::rename(tmp.c_str(), pointer.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", pointer, ": ", std::strerror(err)));
    }
    return absl::OkStatus();
  }

  // Ensures the blob for `m` exists (downloading it if needed) and links the pointer.
  // Returns true if bytes were downloaded.
  absl::StatusOr<bool> Fetch(const FileMetadata& m, const std::string& file) const {
    std::string pointer = PointerPath(m.commit, file);
    std::string blob = BlobPath(m.etag);
    std::error_code ec;
    if (IsRegularFile(pointer) && IsRegularFile(blob) && fs::equivalent(pointer, blob, ec) && !ec) {
      return false;
    }
    bool downloaded = false;
    if (!IsRegularFile(blob)) {
      // Like huggingface_hub: <cache>/.locks/<repo folder>/<etag>.lock, never deleted (deleting
      // a lock file others wait on would let two processes hold "the" lock at once).
      std::string lock_path = (fs::path(options_.cache_dir) / ".locks" /
                               HubRepoFolderName(repo_id_, options_.repo_type) / (m.etag + ".lock")).string();
      ASSIGN_OR_RETURN(auto lock, ScopedFileLock::Acquire(lock_path, options_.lock_timeout_s));
      if (!IsRegularFile(blob)) {  // someone else may have finished it while we waited
        HttpOptions http = options_.http;
        http.bearer_token = options_.token;
        if (options_.progress) {
          auto cb = options_.progress;
          http.progress = [cb, file](int64_t done, int64_t total) { cb(file, done, total); };
        }
        DownloadExpectations expect;
        expect.size = m.size;
        if (IsSha256Hex(m.etag)) expect.sha256 = m.etag;  // LFS: etag is the content's sha256
        auto result = HttpDownloadToFile(m.url, blob, http, expect);
        if (!result.ok()) {
          return absl::Status(result.status().code(),
                              absl::StrCat("downloading ", file, " of ", repo_id_, ": ",
                                           result.status().message()));
        }
        downloaded = true;
      }
    }
    RETURN_IF_ERROR(LinkPointer(m.commit, file, m.etag));
    return downloaded;
  }

  absl::StatusOr<ModelSnapshot> ResolveOnline(const std::string& revision) const {
    ModelSnapshot snap;
    snap.repo_id = repo_id_;
    snap.revision = revision;
    std::string pinned = revision;  // becomes the commit after the first answer
    // Fetches `file`; false when it is optional and the Hub answers 404 (its message in `missing`).
    std::string missing;
    auto handle = [&](const std::string& file, bool required) -> absl::StatusOr<bool> {
      absl::StatusOr<FileMetadata> m = Head(pinned, file);
      if (!m.ok()) {
        if (!required && m.status().code() == absl::StatusCode::kNotFound) {
          missing = std::string(m.status().message());
          return false;
        }
        std::string hint;
        if (m.status().code() == absl::StatusCode::kPermissionDenied) {
          hint = options_.token.empty()
                     ? " (the repository may be private or gated: set HF_TOKEN)"
                     : " (check that HF_TOKEN grants access to this repository)";
        } else if (absl::StrContains(m.status().message(), "RepoNotFound") &&
                   options_.token.empty()) {
          hint = " (if the repository is private or gated, set HF_TOKEN)";
        }
        return absl::Status(m.status().code(),
                            absl::StrCat(file, " of ", repo_id_, " at revision '", revision,
                                         "': ", m.status().message(), hint));
      }
      if (snap.commit.empty()) {
        snap.commit = m->commit;
        pinned = m->commit;
      } else if (m->commit != snap.commit) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the Hub answered commit ", m->commit, " for ", file, " but ", snap.commit,
            " for earlier files of ", repo_id_, "@", revision));
      }
      ASSIGN_OR_RETURN(bool downloaded, Fetch(*m, file));
      snap.files.push_back(file);
      if (downloaded) snap.downloaded.push_back(file);
      return true;
    };
    for (const auto& f : options_.required_files) RETURN_IF_ERROR(handle(f, true).status());
    if (options_.weights) {
      bool found = false;
      std::string first_missing;
      for (const std::string& name : WeightFileNames()) {
        ASSIGN_OR_RETURN(found, handle(name, /*required=*/false));
        if (!found) {
          if (first_missing.empty()) first_missing = missing;
          continue;
        }
        if (IsShardIndexFile(name)) {
          ASSIGN_OR_RETURN(std::string index, ReadFileToString(PointerPath(snap.commit, name)));
          ASSIGN_OR_RETURN(std::vector<std::string> shards,
                           ParseShardIndex(index, absl::StrCat(name, " of ", repo_id_, "@", revision)));
          for (const std::string& shard : shards) RETURN_IF_ERROR(handle(shard, true).status());
        }
        break;
      }
      if (!found) {
        return absl::NotFoundError(absl::StrCat(
            repo_id_, " at revision '", revision, "' has no model weights: none of ",
            absl::StrJoin(WeightFileNames(), ", "), " exists (", first_missing, ")"));
      }
    }
    for (const auto& f : options_.optional_files) RETURN_IF_ERROR(handle(f, false).status());
    if (snap.commit.empty()) {
      return absl::InvalidArgumentError("no files requested from the Hub");
    }
    snap.dir = SnapshotDir(snap.commit);
    if (revision != snap.commit) {
      RETURN_IF_ERROR(WriteFileAtomically(RefPath(revision), snap.commit));
    }
    return snap;
  }

 private:
  const HubOptions& options_;
  std::string repo_id_;
  std::string root_;
};

bool LooksLikePath(const std::string& s) {
  return absl::StartsWith(s, "/") || absl::StartsWith(s, "./") || absl::StartsWith(s, "../") ||
         absl::StartsWith(s, "~") || s == "." || s == "..";
}

}  // namespace

HubOptions HubOptions::FromEnv() {
  HubOptions o;
  std::string endpoint = Env("HF_ENDPOINT");
  if (!endpoint.empty()) o.endpoint = endpoint;
  while (absl::EndsWith(o.endpoint, "/")) o.endpoint.pop_back();
  std::string hf_home = Env("HF_HOME");
  if (hf_home.empty()) {
    std::string xdg = Env("XDG_CACHE_HOME");
    hf_home = (xdg.empty() ? HomeDir() + "/.cache" : xdg) + "/huggingface";
  }
  o.cache_dir = Env("HF_HUB_CACHE");
  if (o.cache_dir.empty()) o.cache_dir = Env("HUGGINGFACE_HUB_CACHE");
  if (o.cache_dir.empty()) o.cache_dir = hf_home + "/hub";
  o.offline = IsTruthy(Env("HF_HUB_OFFLINE"));
  o.token = Env("HF_TOKEN");
  if (o.token.empty()) o.token = Env("HUGGING_FACE_HUB_TOKEN");
  if (o.token.empty()) {
    std::string token_path = Env("HF_TOKEN_PATH");
    if (token_path.empty()) token_path = hf_home + "/token";
    auto t = ReadFileToString(token_path);
    if (t.ok()) o.token = std::string(absl::StripAsciiWhitespace(*t));
  }
  return o;
}

std::string HubRepoFolderName(const std::string& repo_id, const std::string& repo_type) {
  return (repo_type == "dataset" ? "datasets--" : "models--") + absl::StrJoin(absl::StrSplit(repo_id, '/'), "--");
}

absl::Status ValidateHubRepoId(const std::string& repo_id) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", repo_id, "' is neither an existing local directory nor a valid Hugging Face model "
        "id (ORG/NAME): ", why));
  };
  if (repo_id.empty()) return bad("empty");
  std::vector<std::string> parts = absl::StrSplit(repo_id, '/');
  if (parts.size() > 2) return bad("more than one '/'");
  for (const auto& p : parts) {
    if (p.empty()) return bad("empty part");
    if (p.size() > 96) return bad("part longer than 96 characters");
    for (char c : p) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
          c != '.') {
        return bad(absl::StrCat("character '", std::string(1, c), "' not allowed"));
      }
    }
    if (absl::StrContains(p, "--") || absl::StrContains(p, "..")) {
      return bad("'--' and '..' are not allowed");
    }
    if (p.front() == '-' || p.front() == '.' || p.back() == '-' || p.back() == '.') {
      return bad("parts cannot start or end with '-' or '.'");
    }
  }
  return absl::OkStatus();
}

std::string NormalizeEtag(const std::string& etag) {
  absl::string_view v = absl::StripAsciiWhitespace(etag);
  absl::ConsumePrefix(&v, "W/");
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  return std::string(v);
}

namespace {
// The Hub part of ResolveModelSnapshot (no local-directory check): a snapshot of `repo_id`.
absl::StatusOr<ModelSnapshot> ResolveRepoSnapshot(const std::string& repo_id, const std::string& revision,
                                                  const HubOptions& options);
}  // namespace

absl::StatusOr<ModelSnapshot> ResolveModelSnapshot(const std::string& id_or_dir,
                                                   const std::string& revision_in,
                                                   const HubOptions& options) {
  if (!id_or_dir.empty() && IsDirectory(id_or_dir)) {
    ModelSnapshot snap;
    snap.dir = id_or_dir;
    snap.local_dir = true;
    for (const auto& f : options.required_files) {
      if (IsRegularFile(id_or_dir + "/" + f)) snap.files.push_back(f);
    }
    if (options.weights) {
      auto weights = LocalWeightFiles(id_or_dir);
      if (weights.ok()) snap.files.insert(snap.files.end(), weights->begin(), weights->end());
    }
    for (const auto& f : options.optional_files) {
      if (IsRegularFile(id_or_dir + "/" + f)) snap.files.push_back(f);
    }
    return snap;
  }
  if (LooksLikePath(id_or_dir)) {
    return absl::NotFoundError(
        absl::StrCat("local model directory ", id_or_dir, " does not exist"));
  }
  return ResolveRepoSnapshot(id_or_dir, revision_in, options);
}

absl::StatusOr<std::string> ResolveHubFile(const std::string& repo_type, const std::string& repo_id,
                                           const std::string& revision, const std::string& file,
                                           HubOptions options) {
  if (repo_type != "model" && repo_type != "dataset") {
    return absl::InvalidArgumentError(absl::StrCat("Hub repo_type '", repo_type, "' is not model or dataset"));
  }
  options.repo_type = repo_type;
  options.required_files = {file};
  options.optional_files.clear();
  options.weights = false;
  ASSIGN_OR_RETURN(ModelSnapshot snap, ResolveRepoSnapshot(repo_id, revision, options));
  return snap.dir + "/" + file;
}

namespace {

absl::StatusOr<ModelSnapshot> ResolveRepoSnapshot(const std::string& id_or_dir,
                                                  const std::string& revision_in,
                                                  const HubOptions& options) {
  RETURN_IF_ERROR(ValidateHubRepoId(id_or_dir));
  const std::string revision = revision_in.empty() ? "main" : revision_in;
  RETURN_IF_ERROR(ValidateRelativeName("revision", revision));
  for (const auto& f : options.required_files) RETURN_IF_ERROR(ValidateRelativeName("file", f));
  for (const auto& f : options.optional_files) RETURN_IF_ERROR(ValidateRelativeName("file", f));
  if (options.cache_dir.empty()) {
    return absl::InvalidArgumentError("HubOptions.cache_dir is empty (use HubOptions::FromEnv)");
  }
  RepoCache cache(options, id_or_dir);
  if (options.offline) {
    return cache.ResolveFromCache(revision, "offline mode (HF_HUB_OFFLINE=1, no download)");
  }
  absl::StatusOr<ModelSnapshot> online = cache.ResolveOnline(revision);
  if (online.ok()) return online;
  absl::StatusCode code = online.status().code();
  if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded) {
    auto cached = cache.ResolveFromCache(revision, "no network");
    if (cached.ok()) {
      if (options.warn_on_fallback) {
        std::fprintf(stderr, "kvgrid: warning: %s; using the cached snapshot %s\n",
                     std::string(online.status().message()).c_str(), cached->dir.c_str());
      }
      return cached;
    }
  }
  return online.status();
}

}  // namespace

absl::StatusOr<std::string> ResolveModelDir(const std::string& id_or_dir,
                                            const std::string& revision,
                                            const HubOptions& options) {
  ASSIGN_OR_RETURN(ModelSnapshot snap, ResolveModelSnapshot(id_or_dir, revision, options));
  return snap.dir;
}

}  // namespace kvgrid
