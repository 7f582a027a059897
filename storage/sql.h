// Internal to storage/: SQLite statements, transactions and errors as kvgrid reports them (the
// classification in SqlError is what the coordinator and `kvgrid run` act on: store.h).
#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace kvgrid::sql {

inline constexpr int kBusyTimeoutMs = 5000;

bool IsBusy(int rc);

// SQLite failures by what the user can do about them: disk full, I/O error, read-only, cannot
// open, busy past the timeout -> Unavailable (callers retry; the coordinator stops leasing);
// corrupt / not a database -> DataLoss with the way out; else Internal. Messages name the file.
absl::Status SqlError(sqlite3* db, int rc, absl::string_view what);

// A prepared statement with sequential binding.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db), sql_(sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return SqlError(db_, rc_, Head());
  }

  template <typename... Args>
  Stmt& Bind(const Args&... args) {
    (BindOne(args), ...);
    return *this;
  }

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step() {
    RETURN_IF_ERROR(status());
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, rc, Head());
  }
  absl::Status Exec() {
    while (true) {
      ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return absl::OkStatus();
    }
  }
  int Changes() const { return sqlite3_changes(db_); }

  bool Null(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  int64_t Int(int c) const { return sqlite3_column_int64(stmt_, c); }
  double Real(int c) const { return sqlite3_column_double(stmt_, c); }
  std::string Text(int c) const {
    const unsigned char* t = sqlite3_column_text(stmt_, c);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, c))
             : std::string();
  }

 private:
  std::string Head() const {
    std::string s(sql_);
    std::replace(s.begin(), s.end(), '\n', ' ');
    if (s.size() > 60) s = s.substr(0, 60) + "...";
    return absl::StrCat("running '", s, "'");
  }
  void Check(int rc) {
    if (rc != SQLITE_OK && rc_ == SQLITE_OK) rc_ = rc;
  }
  void BindOne(int64_t v) { Check(sqlite3_bind_int64(stmt_, ++idx_, v)); }
  void BindOne(int v) { Check(sqlite3_bind_int64(stmt_, ++idx_, v)); }
  void BindOne(double v) { Check(sqlite3_bind_double(stmt_, ++idx_, v)); }
  void BindOne(const std::string& v) {
    Check(sqlite3_bind_text(stmt_, ++idx_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  void BindOne(const char* v) { BindOne(std::string(v)); }
  void BindOne(std::nullptr_t) { Check(sqlite3_bind_null(stmt_, ++idx_)); }
  void BindOne(const std::optional<int64_t>& v) {
    if (v) BindOne(*v); else BindOne(nullptr);
  }

  sqlite3* db_;
  const char* sql_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
  int idx_ = 0;
};

// Runs `sql` (no rows expected).
absl::Status ExecScript(sqlite3* db, const char* sql, absl::string_view what);
// ExecScript, retried while another connection holds the lock (busy only: after a failed COMMIT
// for any other reason SQLite has rolled back, and the caller must see that error).
absl::Status ExecWithRetry(sqlite3* db, const char* sql, absl::string_view what);
// A consistent snapshot for multi-query reads.
absl::Status InReadTxn(sqlite3* db, const std::function<absl::Status()>& body);
// PRAGMA quick_check (or integrity_check): OK, or DataLoss listing the first problems.
absl::Status QuickCheck(sqlite3* db, const char* pragma = "PRAGMA quick_check(5)");
int64_t WallNowMs();

}  // namespace kvgrid::sql
