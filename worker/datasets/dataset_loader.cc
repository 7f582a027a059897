#include "worker/datasets/dataset_loader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/atomic_file.h"
#include "common/cache_dir.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "common/zip_archive.h"
#include "model/hub/hf_hub.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

constexpr char kWikitext[] = "wikitext-2-raw-v1";
constexpr char kPg19[] = "pg19";
// The wikitext zip is a file of the Hub dataset repository ggml-org/ci (the one llama.cpp uses).
constexpr char kWikitextHubRepo[] = "ggml-org/ci";
constexpr char kWikitextHubFile[] = "wikitext-2-raw-v1.zip";
constexpr char kPg19UrlBase[] = "https://storage.googleapis.com/deepmind-gutenberg";
constexpr char kPg19TestList[] =
    "https://huggingface.co/datasets/deepmind/pg19/resolve/main/data/test_files.txt";
constexpr double kLockTimeoutS = 1800;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

bool IsTruthy(const std::string& v) {
  std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(v));
  return s == "1" || s == "true" || s == "yes" || s == "on";
}

bool Offline(const DatasetRequest& r) {
  return r.offline || IsTruthy(Env("HF_HUB_OFFLINE")) || IsTruthy(Env("HF_DATASETS_OFFLINE")) ||
         IsTruthy(Env("KVGRID_OFFLINE"));
}

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Whether a decoded code point is whitespace for Python's str.isspace().
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

// True when every character of the UTF-8 line is whitespace (Python's `not line.strip()`).
bool IsBlankLine(absl::string_view line) {
  size_t i = 0;
  while (i < line.size()) {
    unsigned char b = static_cast<unsigned char>(line[i]);
    uint32_t cp;
    size_t len;
    if (b < 0x80) {
      cp = b;
      len = 1;
    } else if ((b >> 5) == 0x6 && i + 1 < line.size()) {
      cp = ((b & 0x1f) << 6) | (line[i + 1] & 0x3f);
      len = 2;
    } else if ((b >> 4) == 0xe && i + 2 < line.size()) {
      cp = ((b & 0x0f) << 12) | ((line[i + 1] & 0x3f) << 6) | (line[i + 2] & 0x3f);
      len = 3;
    } else {
      return false;  // 4-byte sequences are never whitespace; invalid bytes are not either
    }
    if (!IsPythonSpace(cp)) return false;
    i += len;
  }
  return true;
}

struct SplitInfo {
  std::string canonical;  // "test" | "validation" | "train"
  std::string wikitext_member;
};

absl::StatusOr<SplitInfo> ParseSplit(const std::string& dataset, const std::string& split) {
  std::string s = split.empty() ? "test" : split;
  if (s == "test") return SplitInfo{"test", "wikitext-2-raw/wiki.test.raw"};
  if (s == "validation" || s == "valid") {
    return SplitInfo{"validation", "wikitext-2-raw/wiki.valid.raw"};
  }
  if (s == "train") return SplitInfo{"train", "wikitext-2-raw/wiki.train.raw"};
  return absl::InvalidArgumentError(absl::StrCat("unknown split '", split, "' for dataset ",
                                                 dataset, "; known splits: test, validation, "
                                                 "train"));
}

std::string UnknownDatasetMessage(const std::string& name) {
  return absl::StrCat("unknown dataset '", name, "'; known datasets: ",
                      absl::StrJoin(KnownDatasets(), ", "),
                      " (or set path to read a local text file)");
}

// Reads one member of a zip archive. Errors name the archive and the member.
absl::StatusOr<std::string> ReadZipMember(const std::string& zip_path, const std::string& member) {
  ASSIGN_OR_RETURN(auto archive, ZipArchive::Open(zip_path));
  return archive->Read(member, uint64_t{1} << 32);
}

std::string SidecarPath(const std::string& file) { return file + ".sha256"; }

// Checks a cached file against its sidecar. Ok(true): valid. Ok(false): not cached.
// Error DataLoss: present but corrupt (or without a checksum); both files are removed.
absl::StatusOr<bool> VerifyCached(const std::string& file) {
  if (!Exists(file)) {
    ::unlink(SidecarPath(file).c_str());
    return false;
  }
  std::string problem;
  auto sidecar = ReadFileToString(SidecarPath(file));
  if (!sidecar.ok()) {
    problem = absl::StrCat("it has no checksum file ", SidecarPath(file));
  } else {
    absl::string_view recorded = absl::StripAsciiWhitespace(*sidecar);
    recorded = recorded.substr(0, recorded.find_first_of(" \t"));
    ASSIGN_OR_RETURN(std::string actual, Sha256File(file));
    if (!IsSha256Hex(recorded)) {
      problem = absl::StrCat("its checksum file ", SidecarPath(file), " is malformed");
    } else if (absl::AsciiStrToLower(recorded) != actual) {
      problem = absl::StrCat("sha256 is ", actual, " but ", SidecarPath(file), " records ",
                             recorded);
    }
  }
  if (problem.empty()) return true;
  ::unlink(file.c_str());
  ::unlink(SidecarPath(file).c_str());
  return absl::DataLossError(absl::StrCat("cached dataset file ", file, " is corrupt (", problem,
                                          "); removed it"));
}

// Writes the text and then its sidecar, both atomically.
absl::Status StoreCached(const std::string& file, absl::string_view text) {
  RETURN_IF_ERROR(WriteFileAtomically(file, text));
  return WriteFileAtomically(
      SidecarPath(file),
      absl::StrCat(Sha256Hex(text), "  ", fs::path(file).filename().string(), "\n"));
}

struct Source {
  std::string cache_file;  // where the final text lives in the cache
  std::string url;         // what to download; empty: the Hub file below
  std::string hub_repo;    // a Hub dataset repository and file, through the Hugging Face cache
  std::string hub_file;
  std::string url_base;    // pg19: where books come from
  std::string download;    // where the download goes (then processed into cache_file)
  std::string describe;    // "wikitext-2-raw-v1 test split" / "pg19 test book 10146"
  std::string lock_file;   // {cache}/.locks/<name>.lock
  std::string zip_member;  // wikitext only
  bool pg19 = false;
  int64_t sample = 0;
};

absl::StatusOr<Source> Describe(const DatasetRequest& r) {
  std::string cache = r.cache_dir.empty() ? DefaultDatasetCacheDir() : r.cache_dir;
  Source s;
  if (r.name == kWikitext) {
    ASSIGN_OR_RETURN(SplitInfo split, ParseSplit(r.name, r.split));
    s.cache_file = absl::StrCat(cache, "/", kWikitext, "/", split.canonical, ".txt");
    s.url = Env("KVGRID_WIKITEXT_URL");  // a plain URL instead of the Hub (no Hub cache)
    if (s.url.empty()) {
      s.hub_repo = kWikitextHubRepo;
      s.hub_file = kWikitextHubFile;
    }
    s.download = absl::StrCat(cache, "/downloads/", kWikitext, ".zip");
    s.describe = absl::StrCat(kWikitext, " ", split.canonical, " split");
    s.zip_member = split.wikitext_member;
    s.lock_file = absl::StrCat(cache, "/.locks/", kWikitext, "-", split.canonical, ".lock");
    return s;
  }
  if (r.name == kPg19) {
    ASSIGN_OR_RETURN(SplitInfo split, ParseSplit(r.name, r.split));
    std::string dir = split.canonical;
    if (r.sample < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pg19 sample must be a positive Gutenberg book id (0 = ", kDefaultPg19Sample,
          "), got ", r.sample, "; test book ids are listed in ", kPg19TestList));
    }
    s.pg19 = true;
    s.sample = r.sample == 0 ? kDefaultPg19Sample : r.sample;
    std::string base = Env("KVGRID_PG19_URL_BASE");
    if (base.empty()) base = kPg19UrlBase;
    while (absl::EndsWith(base, "/")) base.pop_back();
    s.url_base = base;
    s.url = absl::StrCat(base, "/", dir, "/", s.sample, ".txt");
    s.cache_file = absl::StrCat(cache, "/", kPg19, "/", dir, "/", s.sample, ".txt");
    s.download = absl::StrCat(cache, "/downloads/", kPg19, "-", dir, "-", s.sample, ".txt");
    s.describe = absl::StrCat("pg19 ", split.canonical, " book ", s.sample);
    s.lock_file = absl::StrCat(cache, "/.locks/", kPg19, "-", dir, "-", s.sample, ".lock");
    return s;
  }
  return absl::InvalidArgumentError(UnknownDatasetMessage(r.name));
}

// Turns the downloaded (or local) bytes into the dataset text.
absl::StatusOr<std::string> Process(const Source& s, const std::string& downloaded_path) {
  if (s.pg19) {
    ASSIGN_OR_RETURN(std::string raw, ReadFileToString(downloaded_path));
    return NormalizeNewlines(raw);
  }
  ASSIGN_OR_RETURN(std::string raw, ReadZipMember(downloaded_path, s.zip_member));
  return WikitextRowsFromRaw(NormalizeNewlines(raw));
}

absl::StatusOr<std::string> LoadLocal(const DatasetRequest& r) {
  if (!Exists(r.path)) {
    return absl::NotFoundError(absl::StrCat("dataset file ", r.path, " (given as path for ",
                                            r.name.empty() ? "the dataset" : r.name,
                                            ") does not exist"));
  }
  if (r.name == kWikitext) {
    ASSIGN_OR_RETURN(SplitInfo split, ParseSplit(r.name, r.split));
    if (absl::EndsWith(r.path, ".zip")) {
      ASSIGN_OR_RETURN(std::string raw, ReadZipMember(r.path, split.wikitext_member));
      return WikitextRowsFromRaw(NormalizeNewlines(raw));
    }
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(r.path));
    if (absl::EndsWith(r.path, ".raw")) return WikitextRowsFromRaw(NormalizeNewlines(text));
    return text;
  }
  if (r.name == kPg19) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(r.path));
    return NormalizeNewlines(text);
  }
  if (r.name.empty() || r.name == "text") return ReadFileToString(r.path);
  return absl::InvalidArgumentError(UnknownDatasetMessage(r.name));
}

}  // namespace

std::vector<std::string> KnownDatasets() { return {kWikitext, kPg19}; }

std::string DefaultDatasetCacheDir() { return KvgridCacheDir() + "/datasets"; }

std::string NormalizeNewlines(absl::string_view text) {
  if (text.find('\r') == absl::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::string WikitextRowsFromRaw(absl::string_view raw) {
  std::string out;
  out.reserve(raw.size() + raw.size() / 8);
  size_t pos = 0;
  bool first = true;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    size_t end = nl == absl::string_view::npos ? raw.size() : nl + 1;
    absl::string_view line = raw.substr(pos, end - pos);
    if (!first) out += "\n\n";
    first = false;
    if (!IsBlankLine(line)) out.append(line.data(), line.size());
    pos = end;
  }
  return out;
}

absl::StatusOr<std::string> EnsureDatasetCached(const DatasetRequest& r) {
  if (!r.path.empty()) {
    if (!Exists(r.path)) {
      return absl::NotFoundError(absl::StrCat("dataset file ", r.path, " does not exist"));
    }
    return r.path;
  }
  ASSIGN_OR_RETURN(Source s, Describe(r));
  const bool offline = Offline(r);
  absl::StatusOr<bool> cached = VerifyCached(s.cache_file);
  if (cached.ok() && *cached) return s.cache_file;
  if (!cached.ok()) {
    if (offline) {
      return absl::DataLossError(absl::StrCat(
          cached.status().message(), "; offline, so it cannot be downloaded again"));
    }
    std::fprintf(stderr, "kvgrid: warning: %s; downloading %s again\n",
                 std::string(cached.status().message()).c_str(), s.describe.c_str());
  }
  // A Hub file comes through the Hugging Face cache (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE, its
  // blobs shared with huggingface_hub); offline, a copy already there is used.
  std::string hub_path, hub_error;
  if (!s.hub_repo.empty()) {
    HubOptions hub = HubOptions::FromEnv();
    hub.http = r.http;
    hub.offline = offline;
    hub.warn_on_fallback = true;
    absl::StatusOr<std::string> p = ResolveHubFile("dataset", s.hub_repo, "main", s.hub_file, hub);
    if (p.ok()) {
      hub_path = *p;
    } else if (!offline) {
      return absl::Status(p.status().code(), absl::StrCat("downloading ", s.describe, " (", s.hub_file, " of the Hub dataset ",
                                                          s.hub_repo, "; HF_ENDPOINT picks the Hub or a mirror): ",
                                                          p.status().message()));
    } else {
      hub_error = absl::StrCat("; nor is the Hub's ", s.hub_file, " (", p.status().message(), ")");
    }
  }
  if (offline && hub_path.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "offline: ", s.describe, " is not in the cache (looked for ", s.cache_file, hub_error,
        "); download it first with `kvgrid download --dataset ", r.name,
        s.pg19 ? absl::StrCat(" --sample ", s.sample) : std::string(), "` or set path"));
  }
  // Locks live in {cache}/.locks/ and are never deleted (see model/hub/hf_hub.cc).
  ASSIGN_OR_RETURN(auto lock, ScopedFileLock::Acquire(s.lock_file, kLockTimeoutS));
  // Another process may have filled the cache while we waited for the lock.
  cached = VerifyCached(s.cache_file);
  if (cached.ok() && *cached) return s.cache_file;
  // The bytes to process: the Hub cache's file (kept there), else a plain download (removed
  // once processed, or when unusable, so the next try fetches it afresh).
  const bool downloaded = hub_path.empty();
  if (downloaded) {
    auto dl = HttpDownloadToFile(s.url, s.download, r.http);
    if (!dl.ok()) {
      std::string hint;
      if (s.pg19 && dl.status().code() == absl::StatusCode::kNotFound) {
        hint = absl::StrCat("; pg19 samples are Gutenberg book ids of the split (the test split's "
                            "100 ids are listed in ", kPg19TestList, "; default ",
                            kDefaultPg19Sample, ")");
      } else if (s.pg19) {
        hint = absl::StrCat("; PG-19 books come from ", s.url_base,
                            " (set KVGRID_PG19_URL_BASE to a mirror holding {split}/{id}.txt)");
      } else {
        hint = " (KVGRID_WIKITEXT_URL is set: unset it to fetch the zip from the Hub)";
      }
      return absl::Status(dl.status().code(), absl::StrCat("downloading ", s.describe, ": ",
                                                           dl.status().message(), hint));
    }
  }
  const std::string& source = downloaded ? s.download : hub_path;
  absl::StatusOr<std::string> text = Process(s, source);
  if (downloaded) ::unlink(s.download.c_str());
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("processing ", s.describe, " from ",
                                                           downloaded ? s.url : hub_path, ": ",
                                                           text.status().message()));
  }
  RETURN_IF_ERROR(StoreCached(s.cache_file, *text));
  return s.cache_file;
}

absl::StatusOr<std::string> LoadDatasetText(const DatasetRequest& r) {
  if (!r.path.empty()) return LoadLocal(r);
  ASSIGN_OR_RETURN(std::string file, EnsureDatasetCached(r));
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
  // Verify what was read (the file could change between the check and the read).
  auto sidecar = ReadFileToString(SidecarPath(file));
  if (!sidecar.ok() || !absl::StartsWith(absl::StripAsciiWhitespace(*sidecar), Sha256Hex(text))) {
    return absl::DataLossError(absl::StrCat("cached dataset file ", file,
                                            " changed while it was being read; try again"));
  }
  return text;
}

}  // namespace kvgrid
