#include "storage/sql.h"

#include <sys/statvfs.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace kvgrid::sql {
namespace {

// Free bytes on the filesystem holding `path`, or -1.
int64_t FreeBytesNear(const std::string& path) {
  std::string dir = path;
  const size_t slash = dir.rfind('/');
  dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
  struct statvfs v;
  if (::statvfs(dir.c_str(), &v) != 0) return -1;
  return static_cast<int64_t>(v.f_bavail) * static_cast<int64_t>(v.f_frsize);
}

std::string HumanBytes(int64_t b) {
  if (b < 0) return "unknown";
  if (b < (1 << 20)) return absl::StrFormat("%.1f KiB", b / 1024.0);
  if (b < (int64_t{1} << 30)) return absl::StrFormat("%.1f MiB", b / 1048576.0);
  return absl::StrFormat("%.2f GiB", b / 1073741824.0);
}

}  // namespace

constexpr int kBusyRetries = 100;

bool IsBusy(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

absl::Status SqlError(sqlite3* db, int rc, absl::string_view what) {
  const std::string file = db != nullptr && sqlite3_db_filename(db, "main") != nullptr
                               ? std::string(sqlite3_db_filename(db, "main")) : std::string("(database)");
  const std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(absl::StrCat(
          "database ", file, " busy while ", what, " (another connection holds the write lock)"));
    case SQLITE_FULL:
      return absl::UnavailableError(absl::StrCat("database ", file, ": disk full while ", what, " (",
                                                 HumanBytes(FreeBytesNear(file)), " free on its filesystem)"));
    case SQLITE_IOERR:
      return absl::UnavailableError(absl::StrCat("database ", file, ": I/O error while ", what, " (",
                                                 detail, ", code ", rc, ")"));
    case SQLITE_READONLY:
      return absl::UnavailableError(absl::StrCat("database ", file, ": read-only while ", what,
                                                 " (the file or its filesystem does not accept writes)"));
    case SQLITE_CANTOPEN:
      return absl::UnavailableError(absl::StrCat("database ", file, ": cannot open a file it needs while ",
                                                 what, " (", detail, ")"));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(absl::StrCat(
          "database ", file, " is corrupt (", detail, " while ", what, "); its results are not trusted: check it with `kvgrid db check ",
          file, "` and recover what is readable with `kvgrid db recover ", file, " --out NEW.db`"));
    default:
      return absl::InternalError(absl::StrCat("database ", file, ": sqlite error while ", what, ": ", detail));
  }
}

absl::Status ExecScript(sqlite3* db, const char* sql, absl::string_view what) {
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    sqlite3_free(err);
    return SqlError(db, sqlite3_extended_errcode(db) != SQLITE_OK ? sqlite3_extended_errcode(db) : rc, what);
  }
  return absl::OkStatus();
}

// Runs `sql` (BEGIN IMMEDIATE / COMMIT), retrying while another connection holds the lock.
// Only "busy" is retried here: after a failed COMMIT for any other reason (disk full, I/O error)
// SQLite has rolled the transaction back, and the caller must see that error.
absl::Status ExecWithRetry(sqlite3* db, const char* sql, absl::string_view what) {
  // SQLite's busy handler already waits up to kBusyTimeoutMs per attempt; the loop covers the
  // cases it returns SQLITE_BUSY at once (lock upgrades), bounded by the same time in total, so a
  // lock held by someone else surfaces as "busy" after about kBusyTimeoutMs, not 100 of them.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  absl::Status st;
  for (int i = 0; i < kBusyRetries; ++i) {
    st = ExecScript(db, sql, what);
    if (st.ok() || !IsBusy(sqlite3_extended_errcode(db))) return st;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return st;
}

absl::Status InReadTxn(sqlite3* db, const std::function<absl::Status()>& body) {
  RETURN_IF_ERROR(ExecWithRetry(db, "BEGIN", "starting a read transaction"));
  absl::Status st = body();
  ExecScript(db, "COMMIT", "ending a read transaction").IgnoreError();
  return st;
}

absl::Status QuickCheck(sqlite3* db, const char* pragma) {
  Stmt q(db, pragma);
  std::vector<std::string> problems;
  while (true) {
    absl::StatusOr<bool> row = q.Step();
    if (!row.ok()) return absl::DataLossError(row.status().message());
    if (!*row) break;
    problems.push_back(q.Text(0));
  }
  if (problems.size() == 1 && problems[0] == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrJoin(problems, "; "));
}

int64_t WallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace kvgrid::sql
