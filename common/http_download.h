// HTTP(S) client for model and dataset downloads (libcurl, no torch).
//
// HttpDownloadToFile(url, dest): GET into `<dest>.incomplete`, follow redirects, resume a partial
// `.incomplete` with a Range request (206 appends, 200 restarts from byte 0), retry transient
// failures (connection errors, dropped bodies, timeouts, HTTP 408/429/5xx) with bounded
// exponential back-off, verify the expected size and SHA-256 when known, then rename atomically
// to `dest`. `dest` is never half-written: it appears complete and verified, or not at all.
//
// Errors name the URL (and the HTTP status or the unreachable host:port):
//   404            -> NotFound         "not found: URL (HTTP 404)"
//   401/403        -> PermissionDenied "access denied (HTTP 401): URL"
//   408/429/5xx    -> Unavailable      (after the retries)
//   connect error  -> Unavailable      "cannot reach HOST:PORT (URL): ..."
//   timeout        -> DeadlineExceeded
//   size/sha256    -> DataLoss
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvgrid {

struct HttpOptions {
  std::string bearer_token;           // sent as "Authorization: Bearer ..." when non-empty
  std::vector<std::string> headers;   // extra "Name: value" request headers
  long connect_timeout_s = 10;
  long low_speed_limit_bytes = 1024;  // abort a transfer slower than this many bytes/s ...
  long low_speed_time_s = 30;         // ... for this many seconds
  long total_timeout_s = 0;           // per attempt; 0 = unlimited (large files)
  int max_attempts = 5;               // total tries for transient failures (>= 1)
  int initial_backoff_ms = 250;       // doubled after each failed attempt ...
  int max_backoff_ms = 8000;          // ... up to this
  std::string user_agent = "kvgrid/0.1";
  // Called with (bytes in the file so far, total or -1). Must not throw.
  std::function<void(int64_t done, int64_t total)> progress;
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names; of the final response
  std::string effective_url;                   // after redirects
};

struct DownloadExpectations {
  int64_t size = -1;    // bytes; -1 = unknown
  std::string sha256;   // lowercase or uppercase hex; empty = unknown
};

struct DownloadResult {
  HttpResponse response;  // of the last (successful) attempt
  std::string path;       // == dest
  int64_t size = 0;
  std::string sha256;     // always computed (lowercase hex)
  int attempts = 0;
  bool resumed = false;   // some bytes came from an earlier partial download
};

// GET `url` into `dest` as described above. Creates dest's parent directory.
absl::StatusOr<DownloadResult> HttpDownloadToFile(const std::string& url, const std::string& dest,
                                                  const HttpOptions& options,
                                                  const DownloadExpectations& expect = {});

// HEAD `url` (with retries for transient failures). With follow_redirects = false a 3xx answer is
// returned as is (its headers are what the Hugging Face Hub puts its metadata in). HTTP >= 400
// is an error as above.
absl::StatusOr<HttpResponse> HttpHead(const std::string& url, const HttpOptions& options,
                                      bool follow_redirects);

// GET a small body into memory (at most `max_bytes`), with the same retries and error mapping.
absl::StatusOr<std::string> HttpGetToString(const std::string& url, const HttpOptions& options,
                                            int64_t max_bytes = 64 << 20);

// "host:port" of a URL (port defaulted from the scheme), for error messages.
std::string UrlEndpoint(const std::string& url);

// The status for an HTTP error answer; `detail` (e.g. a server message) is appended if non-empty.
absl::Status HttpStatusToError(long status, const std::string& url, const std::string& detail);

}  // namespace kvgrid
