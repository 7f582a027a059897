#include "common/http_download.h"

#include <curl/curl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/atomic_file.h"
#include "common/sha256.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

// Per-attempt transfer state shared with the libcurl callbacks.
struct Transfer {
  // Responses seen in this attempt (redirects first); headers lowercased.
  std::vector<HttpResponse> responses;
  // Body sink: a file (download) or a string (HttpGetToString). Exactly one is set.
  FILE* file = nullptr;
  std::string* text = nullptr;
  int64_t max_text = 0;
  int64_t offset = 0;         // bytes already in the file when this attempt started
  bool range_requested = false;
  bool body_started = false;
  bool restart_from_zero = false;  // the server sent a range we cannot append; truncate + retry
  std::string local_error;         // a write failure on our side (not transient)
  std::string error_body;          // first bytes of an HTTP error answer
  int64_t written = 0;             // body bytes written in this attempt
  const HttpOptions* options = nullptr;
};

long LastStatus(const Transfer& t) { return t.responses.empty() ? 0 : t.responses.back().status; }

size_t HeaderCallback(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  size_t n = size * nitems;
  absl::string_view line(buffer, n);
  line = absl::StripTrailingAsciiWhitespace(line);
  if (absl::StartsWith(line, "HTTP/")) {
    HttpResponse r;
    // "HTTP/1.1 206 Partial Content" / "HTTP/2 200"
    size_t sp = line.find(' ');
    if (sp != absl::string_view::npos) {
      absl::string_view rest = line.substr(sp + 1);
      long code = 0;
      if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &code)) r.status = code;
    }
    t->responses.push_back(std::move(r));
    return n;
  }
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos && !t->responses.empty()) {
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    t->responses.back().headers[name] = value;
  }
  return n;
}

// Parses "bytes START-END/TOTAL" and returns START (or -1).
int64_t ContentRangeStart(const HttpResponse& r) {
  auto it = r.headers.find("content-range");
  if (it == r.headers.end()) return -1;
  absl::string_view v = it->second;
  if (!absl::ConsumePrefix(&v, "bytes ")) return -1;
  int64_t start = -1;
  if (!absl::SimpleAtoi(v.substr(0, v.find('-')), &start)) return -1;
  return start;
}

size_t WriteCallback(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  size_t n = size * nmemb;
  long status = LastStatus(*t);
  if (status < 200 || status >= 300) {
    if (t->error_body.size() < 2048) {
      t->error_body.append(ptr, std::min<size_t>(n, 2048 - t->error_body.size()));
    }
    return n;
  }
  if (!t->body_started) {
    t->body_started = true;
    if (t->file != nullptr && t->offset > 0) {
      if (status == 206) {
        if (ContentRangeStart(t->responses.back()) != t->offset) {
          t->restart_from_zero = true;  // not the range we asked for: do not append
          return 0;
        }
      } else {
        // The server ignored the Range request and sends the whole body: start over.
        if (std::fflush(t->file) != 0 || ::ftruncate(fileno(t->file), 0) != 0 ||
            std::fseek(t->file, 0, SEEK_SET) != 0) {
          t->local_error = absl::StrCat("cannot truncate partial file: ", std::strerror(errno));
          return 0;
        }
        t->offset = 0;
      }
    }
  }
  if (t->file != nullptr) {
    if (std::fwrite(ptr, 1, n, t->file) != n) {
      t->local_error = absl::StrCat("write failed: ", std::strerror(errno));
      return 0;
    }
  } else if (t->text != nullptr) {
    if (static_cast<int64_t>(t->text->size() + n) > t->max_text) {
      t->local_error = absl::StrCat("response larger than ", t->max_text, " bytes");
      return 0;
    }
    t->text->append(ptr, n);
  }
  t->written += static_cast<int64_t>(n);
  return n;
}

int ProgressCallback(void* clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(clientp);
  if (t->options->progress && t->body_started) {
    int64_t total = dltotal > 0 ? t->offset + static_cast<int64_t>(dltotal) : -1;
    t->options->progress(t->offset + static_cast<int64_t>(dlnow), total);
  }
  return 0;
}

bool IsTransientCurlError(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_COULDNT_RESOLVE_HOST:
      return true;
    default:
      return false;
  }
}

bool IsTransientHttpStatus(long s) { return s == 408 || s == 429 || (s >= 500 && s <= 599); }

std::string HeaderOr(const HttpResponse& r, const std::string& name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? std::string() : it->second;
}

// A short server-side explanation: the Hub's X-Error-Message header or the body's first line.
std::string ErrorDetail(const HttpResponse& r, const std::string& body) {
  std::string msg = HeaderOr(r, "x-error-message");
  if (!msg.empty()) return msg;
  absl::string_view b = absl::StripAsciiWhitespace(body);
  b = b.substr(0, std::min<size_t>(b.find('\n'), 200));
  // Skip HTML pages; they are noise in an error message.
  if (absl::StartsWith(b, "<")) return "";
  return std::string(b);
}

// The error for an HTTP answer >= 300. Servers that name the reason (the Hub's X-Error-Code
// "RepoNotFound", "EntryNotFound", "RevisionNotFound", sent with 401/404) are mapped to NotFound.
absl::Status ResponseError(const HttpResponse& r, const std::string& url, const std::string& body) {
  std::string detail = ErrorDetail(r, body);
  if (absl::EndsWith(HeaderOr(r, "x-error-code"), "NotFound") && r.status != 404) {
    return absl::NotFoundError(absl::StrCat("not found: ", url, " (HTTP ", r.status, ", ",
                                            HeaderOr(r, "x-error-code"), ")",
                                            detail.empty() ? "" : ": ", detail));
  }
  return HttpStatusToError(r.status, url, detail);
}

absl::Status CurlError(CURLcode code, const char* errbuf, const std::string& url) {
  std::string what = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(code);
  std::string where = absl::StrCat(UrlEndpoint(url), " (", url, ")");
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
      return absl::UnavailableError(absl::StrCat("cannot reach ", where, ": ", what));
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(absl::StrCat("timed out talking to ", where, ": ", what));
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
      return absl::UnavailableError(absl::StrCat("connection to ", where, " failed: ", what));
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return absl::InvalidArgumentError(absl::StrCat("bad URL or redirect for ", url, ": ", what));
    default:
      return absl::UnknownError(absl::StrCat("transfer from ", where, " failed: ", what));
  }
}

int BackoffMs(const HttpOptions& o, int attempt, const HttpResponse* r) {
  int64_t ms = o.initial_backoff_ms;
  for (int i = 1; i < attempt && ms < o.max_backoff_ms; ++i) ms *= 2;
  if (r != nullptr) {
    int64_t retry_after = 0;
    if (absl::SimpleAtoi(HeaderOr(*r, "retry-after"), &retry_after) && retry_after > 0) {
      ms = std::max<int64_t>(ms, retry_after * 1000);
    }
  }
  return static_cast<int>(std::min<int64_t>(ms, o.max_backoff_ms));
}

enum class Method { kGet, kHead };

// Sets the options common to every request. Returns the header list (kept alive by the caller).
std::unique_ptr<curl_slist, SlistDeleter> Configure(CURL* c, const std::string& url,
                                                    const HttpOptions& o, Method method,
                                                    bool follow, Transfer* t, char* errbuf) {
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o.connect_timeout_s);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, o.low_speed_limit_bytes);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o.low_speed_time_s);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, o.total_timeout_s);
  curl_easy_setopt(c, CURLOPT_USERAGENT, o.user_agent.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, HeaderCallback);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WriteCallback);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, ProgressCallback);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, t);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, o.progress ? 0L : 1L);
  if (method == Method::kHead) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_slist* list = nullptr;
  // Without this the Hub may answer with a compressed body whose size differs from the file's.
  list = curl_slist_append(list, "Accept-Encoding: identity");
  if (!o.bearer_token.empty()) {
    list = curl_slist_append(list, absl::StrCat("Authorization: Bearer ", o.bearer_token).c_str());
  }
  for (const auto& h : o.headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  return std::unique_ptr<curl_slist, SlistDeleter>(list);
}

HttpResponse FinalResponse(CURL* c, const Transfer& t) {
  HttpResponse r = t.responses.empty() ? HttpResponse() : t.responses.back();
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (code != 0) r.status = code;
  char* eff = nullptr;
  curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &eff);
  if (eff != nullptr) r.effective_url = eff;
  return r;
}

// Runs a request without a file sink (HEAD, or GET into memory) with retries.
absl::StatusOr<HttpResponse> SimpleRequest(const std::string& url, const HttpOptions& o,
                                           Method method, bool follow, std::string* body,
                                           int64_t max_bytes) {
  GlobalInitOnce();
  absl::Status last;
  const int attempts = std::max(1, o.max_attempts);
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    std::unique_ptr<CURL, CurlDeleter> c(curl_easy_init());
    if (!c) return absl::InternalError("curl_easy_init failed");
    Transfer t;
    t.options = &o;
    if (body != nullptr) {
      body->clear();
      t.text = body;
      t.max_text = max_bytes;
    }
    char errbuf[CURL_ERROR_SIZE] = {0};
    auto headers = Configure(c.get(), url, o, method, follow, &t, errbuf);
    CURLcode code = curl_easy_perform(c.get());
    HttpResponse r = FinalResponse(c.get(), t);
    if (!t.local_error.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat(url, ": ", t.local_error));
    }
    const HttpResponse* retry_hint = nullptr;
    if (code != CURLE_OK) {
      last = CurlError(code, errbuf, url);
      if (!IsTransientCurlError(code)) return last;
    } else if (r.status >= 400) {
      last = ResponseError(r, url, t.error_body);
      if (!IsTransientHttpStatus(r.status)) return last;
      retry_hint = &r;
    } else {
      return r;
    }
    if (attempt < attempts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(BackoffMs(o, attempt, retry_hint)));
    }
  }
  return absl::Status(last.code(),
                      absl::StrCat(last.message(), " (gave up after ", attempts, " attempts)"));
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_size);
}

void RemoveIfEmpty(const std::string& path) {
  if (FileSize(path) == 0) ::unlink(path.c_str());
}

}  // namespace

std::string UrlEndpoint(const std::string& url) {
  absl::string_view u = url;
  std::string scheme = "http";
  size_t p = u.find("://");
  if (p != absl::string_view::npos) {
    scheme = absl::AsciiStrToLower(u.substr(0, p));
    u = u.substr(p + 3);
  }
  u = u.substr(0, u.find_first_of("/?#"));
  size_t at = u.rfind('@');
  if (at != absl::string_view::npos) u = u.substr(at + 1);
  bool has_port = false;
  if (!u.empty() && u.front() == '[') {
    size_t close = u.find(']');
    has_port = close != absl::string_view::npos && close + 1 < u.size() && u[close + 1] == ':';
  } else {
    has_port = u.find(':') != absl::string_view::npos;
  }
  if (has_port) return std::string(u);
  return absl::StrCat(u, ":", scheme == "https" ? "443" : "80");
}

absl::Status HttpStatusToError(long status, const std::string& url, const std::string& detail) {
  std::string suffix = detail.empty() ? "" : absl::StrCat(": ", detail);
  if (status == 404 || status == 410) {
    return absl::NotFoundError(absl::StrCat("not found: ", url, " (HTTP ", status, ")", suffix));
  }
  if (status == 401 || status == 403) {
    return absl::PermissionDeniedError(
        absl::StrCat("access denied (HTTP ", status, "): ", url, suffix));
  }
  if (IsTransientHttpStatus(status)) {
    return absl::UnavailableError(absl::StrCat("HTTP ", status, " from ", url, suffix));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("unexpected HTTP ", status, " from ", url, suffix));
}

absl::StatusOr<HttpResponse> HttpHead(const std::string& url, const HttpOptions& options,
                                      bool follow_redirects) {
  return SimpleRequest(url, options, Method::kHead, follow_redirects, nullptr, 0);
}

absl::StatusOr<std::string> HttpGetToString(const std::string& url, const HttpOptions& options,
                                            int64_t max_bytes) {
  std::string body;
  auto r = SimpleRequest(url, options, Method::kGet, true, &body, max_bytes);
  if (!r.ok()) return r.status();
  return body;
}

absl::StatusOr<DownloadResult> HttpDownloadToFile(const std::string& url, const std::string& dest,
                                                  const HttpOptions& o,
                                                  const DownloadExpectations& expect) {
  GlobalInitOnce();
  const std::string partial = dest + ".incomplete";
  fs::path parent = fs::path(dest).parent_path();
  if (!parent.empty()) {
    absl::Status s = CreateDirectories(parent.string());
    if (!s.ok()) return s;
  }
  const std::string want_sha = absl::AsciiStrToLower(expect.sha256);
  DownloadResult result;
  result.path = dest;
  absl::Status last;
  const int attempts = std::max(1, o.max_attempts);
  bool verified_from_scratch_once = false;
  int attempt = 0;
  while (attempt < attempts) {
    ++attempt;
    result.attempts = attempt;
    int64_t have = std::max<int64_t>(0, FileSize(partial));
    if (expect.size >= 0 && have > expect.size) {
      ::unlink(partial.c_str());  // longer than the real file: garbage
      have = 0;
    }
    FILE* f = std::fopen(partial.c_str(), have > 0 ? "ab" : "wb");
    if (f == nullptr) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", partial, ": ", std::strerror(errno)));
    }
    std::unique_ptr<CURL, CurlDeleter> c(curl_easy_init());
    if (!c) {
      std::fclose(f);
      return absl::InternalError("curl_easy_init failed");
    }
    Transfer t;
    t.options = &o;
    t.file = f;
    t.offset = have;
    char errbuf[CURL_ERROR_SIZE] = {0};
    auto headers = Configure(c.get(), url, o, Method::kGet, true, &t, errbuf);
    std::string range;
    bool complete_already = expect.size >= 0 && have == expect.size && have > 0;
    if (have > 0 && !complete_already) {
      range = absl::StrCat(have, "-");
      curl_easy_setopt(c.get(), CURLOPT_RANGE, range.c_str());
      t.range_requested = true;
    }
    CURLcode code = CURLE_OK;
    HttpResponse r;
    if (!complete_already) {
      code = curl_easy_perform(c.get());
      r = FinalResponse(c.get(), t);
    } else {
      r.status = 206;  // nothing left to fetch; verify below
      r.effective_url = url;
    }
    bool flushed = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
    std::fclose(f);
    if (!t.local_error.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat("downloading ", url, " to ", partial, ": ",
                                                       t.local_error));
    }
    if (!flushed) {
      return absl::DataLossError(
          absl::StrCat("cannot flush ", partial, ": ", std::strerror(errno)));
    }
    if (t.restart_from_zero) {
      ::unlink(partial.c_str());
      last = absl::UnavailableError(
          absl::StrCat(url, " answered a different byte range than requested (", range, ")"));
      continue;  // retry immediately from byte 0
    }
    if (have > 0 && (t.offset > 0 || complete_already)) result.resumed = true;
    const HttpResponse* retry_hint = nullptr;
    if (code != CURLE_OK) {
      last = CurlError(code, errbuf, url);
      RemoveIfEmpty(partial);
      if (!IsTransientCurlError(code)) return last;
    } else if (r.status == 416 && have > 0) {
      // Range not satisfiable: our partial file is as long as (or longer than) the resource,
      // or the resource changed. Start over.
      ::unlink(partial.c_str());
      last = absl::UnavailableError(absl::StrCat("HTTP 416 for ", url, " resuming at byte ", have));
      continue;
    } else if (r.status >= 300) {
      last = ResponseError(r, url, t.error_body);
      RemoveIfEmpty(partial);
      if (!IsTransientHttpStatus(r.status)) return last;
      retry_hint = &r;
    } else {
      // Transfer finished: verify, then publish atomically.
      int64_t size = FileSize(partial);
      absl::StatusOr<std::string> sha = Sha256File(partial);
      if (!sha.ok()) return sha.status();
      std::string problem;
      if (expect.size >= 0 && size != expect.size) {
        problem = absl::StrCat("size mismatch for ", url, ": got ", size, " bytes, expected ",
                               expect.size);
      } else if (!want_sha.empty() && *sha != want_sha) {
        problem = absl::StrCat("sha256 mismatch for ", url, ": got ", *sha, ", expected ",
                               want_sha);
      }
      if (!problem.empty()) {
        ::unlink(partial.c_str());
        if (result.resumed && !verified_from_scratch_once) {
          // The kept prefix may have been stale; one clean download before giving up.
          verified_from_scratch_once = true;
          result.resumed = false;
          last = absl::DataLossError(problem);
          --attempt;
          continue;
        }
        return absl::DataLossError(problem);
      }
      if (std::rename(partial.c_str(), dest.c_str()) != 0) {
        return absl::PermissionDeniedError(absl::StrCat("cannot rename ", partial, " to ", dest,
                                                        ": ", std::strerror(errno)));
      }
      result.response = std::move(r);
      result.size = size;
      result.sha256 = *sha;
      return result;
    }
    if (attempt < attempts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(BackoffMs(o, attempt, retry_hint)));
    }
  }
  return absl::Status(last.code(),
                      absl::StrCat(last.message(), " (gave up after ", attempts, " attempts)"));
}

}  // namespace kvgrid
