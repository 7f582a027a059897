// Evaluation texts: WikiText-2 (raw, v1) and PG-19 books, downloaded once into a local cache or
// read from a local file. No torch.
//
// wikitext-2-raw-v1: the zip llama.cpp uses, wikitext-2-raw-v1.zip of the Hub dataset ggml-org/ci,
//   fetched like a model file (model/hub/hf_hub.h: HF_ENDPOINT for a mirror, HF_TOKEN, HF_HUB_OFFLINE,
//   the Hugging Face cache); $KVGRID_WIKITEXT_URL fetches a plain URL instead; member
//   wikitext-2-raw/wiki.{test,valid,train}.raw is turned into the Hugging Face rows (one per line
//   with its newline, whitespace-only lines as "") joined with "\n\n" — byte for byte the text of
//   "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split=...)["text"]).
// pg19: one book, {base}/{split}/{id}.txt with base $KVGRID_PG19_URL_BASE or
//   https://storage.googleapis.com/deepmind-gutenberg (not a Hub file: HF_ENDPOINT does not move it);
//   newlines normalised like Python's text mode.
//
// Cache: {cache_dir}/wikitext-2-raw-v1/{split}.txt and {cache_dir}/pg19/{split}/{id}.txt, each
// with a sha256sum-style sidecar "<file>.sha256" written after the file. A cached file whose
// checksum does not match (or has no sidecar) is removed; online it is downloaded again (with a
// warning on stderr), offline it is a DataLoss error that says the cache was corrupt. Files are
// written atomically, so the cache never holds a half-written text.
//
// A local `path` is read instead of downloading: for wikitext a .zip (the member above), a .raw
// file (rows rebuilt as above) or anything else taken as the final text; for pg19 the book file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/http_download.h"

namespace kvgrid {

inline constexpr int64_t kDefaultPg19Sample = 10146;  // first PG-19 test book

struct DatasetRequest {
  std::string name = "wikitext-2-raw-v1";  // "wikitext-2-raw-v1" | "pg19"
  std::string split = "test";              // "test" | "validation" | "train"
  int64_t sample = 0;      // pg19 book id (Gutenberg id); 0 = 10146. Ignored for wikitext.
  std::string path;        // local file instead of the download
  std::string cache_dir;   // "" = DefaultDatasetCacheDir()
  // Cache only. Also on when HF_HUB_OFFLINE, HF_DATASETS_OFFLINE or KVGRID_OFFLINE is set.
  bool offline = false;
  HttpOptions http;        // timeouts and retries
};

// The dataset's text (see above).
absl::StatusOr<std::string> LoadDatasetText(const DatasetRequest& request);

// Makes sure the text is in the cache (downloading it if needed) and returns the cached file's
// path; with `path` set, returns that path after checking it exists.
absl::StatusOr<std::string> EnsureDatasetCached(const DatasetRequest& request);

// $KVGRID_CACHE/datasets, else $XDG_CACHE_HOME/kvgrid/datasets, else ~/.cache/kvgrid/datasets.
std::string DefaultDatasetCacheDir();

// "wikitext-2-raw-v1", "pg19".
std::vector<std::string> KnownDatasets();

// wiki.*.raw bytes -> Hugging Face rows joined with "\n\n" (see above).
std::string WikitextRowsFromRaw(absl::string_view raw);

// "\r\n" and lone "\r" -> "\n" (Python's universal newlines).
std::string NormalizeNewlines(absl::string_view text);

}  // namespace kvgrid
