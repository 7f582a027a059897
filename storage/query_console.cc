// Store::ExecuteReadOnlyQuery: `kvgrid query`'s console — one read-only statement on a read-only
// connection, refusing writes, ATTACH and writing pragmas (store.h).
#include <sqlite3.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "storage/sql.h"
#include "storage/store.h"

namespace kvgrid {
using namespace sql;  // NOLINT: storage's own SQL helpers
namespace {

// Authorizer for ExecuteReadOnlyQuery: no ATTACH/DETACH, no transactions, read pragmas only.
int QueryAuthorizer(void*, int action, const char* arg1, const char* arg2, const char*,
                    const char*) {
  switch (action) {
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      return SQLITE_DENY;
    case SQLITE_PRAGMA: {
      static const std::set<std::string> kReadPragmas = {
          "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
          "foreign_key_list", "table_list", "database_list", "collation_list", "function_list"};
      std::string name = arg1 ? arg1 : "";
      if (kReadPragmas.count(name)) return SQLITE_OK;
      (void)arg2;
      return SQLITE_DENY;
    }
    default:
      return SQLITE_OK;
  }
}

}  // namespace

absl::StatusOr<QueryTable> Store::ExecuteReadOnlyQuery(const std::string& sql, int64_t max_rows) {
  std::lock_guard<std::mutex> lock(mu_);
  if (query_db_ == nullptr) {
    sqlite3* q = nullptr;
    int rc = sqlite3_open_v2(path_.c_str(), &q, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX,
                             nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = q ? sqlite3_errmsg(q) : sqlite3_errstr(rc);
      sqlite3_close_v2(q);
      return absl::InternalError(
          absl::StrCat("cannot open database ", path_, " read-only: ", msg));
    }
    sqlite3_busy_timeout(q, kBusyTimeoutMs);
    absl::Status st = ExecScript(q, "PRAGMA query_only = ON", "setting query_only");
    if (!st.ok()) {
      sqlite3_close_v2(q);
      return st;
    }
    sqlite3_set_authorizer(q, QueryAuthorizer, nullptr);
    query_db_ = q;
  }
  sqlite3* db = query_db_;
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt, &tail);
  if (rc != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    if ((rc & 0xff) == SQLITE_AUTH) {
      return absl::PermissionDeniedError(absl::StrCat(
          "query refused: only read-only SELECT/WITH/EXPLAIN statements (and read pragmas) are "
          "allowed (", msg, ")"));
    }
    return absl::InvalidArgumentError(absl::StrCat("query: ", msg));
  }
  if (stmt == nullptr) return absl::InvalidArgumentError("query: empty statement");
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(stmt, sqlite3_finalize);
  // Anything after the first statement must be whitespace, ';' or comments.
  while (tail != nullptr && *tail != '\0') {
    sqlite3_stmt* extra = nullptr;
    const char* next = nullptr;
    int rc2 = sqlite3_prepare_v2(db, tail, -1, &extra, &next);
    bool has_more = extra != nullptr || rc2 != SQLITE_OK;
    sqlite3_finalize(extra);
    if (has_more) {
      return absl::InvalidArgumentError(
          "query refused: give exactly one SQL statement (found more after the first ';')");
    }
    if (next == tail) break;
    tail = next;
  }
  if (!sqlite3_stmt_readonly(stmt)) {
    return absl::PermissionDeniedError(
        "query refused: the statement would modify the database; kvgrid query is read-only");
  }
  QueryTable table;
  const int ncols = sqlite3_column_count(stmt);
  for (int c = 0; c < ncols; ++c) table.columns.push_back(sqlite3_column_name(stmt, c));
  while (true) {
    if (max_rows >= 0 && static_cast<int64_t>(table.rows.size()) >= max_rows) break;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      if ((rc & 0xff) == SQLITE_READONLY) {
        return absl::PermissionDeniedError("query refused: kvgrid query is read-only");
      }
      return absl::InvalidArgumentError(absl::StrCat("query: ", sqlite3_errmsg(db)));
    }
    std::vector<QueryCell> row(ncols);
    for (int c = 0; c < ncols; ++c) {
      switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_NULL:
          row[c].kind = QueryCell::kNull;
          break;
        case SQLITE_INTEGER:
          row[c].kind = QueryCell::kInteger;
          row[c].text = std::to_string(sqlite3_column_int64(stmt, c));
          break;
        case SQLITE_FLOAT:
          row[c].kind = QueryCell::kReal;
          row[c].text = absl::StrFormat("%.17g", sqlite3_column_double(stmt, c));
          {
            // Prefer the shortest form that round-trips.
            double v = sqlite3_column_double(stmt, c);
            for (int prec = 6; prec <= 17; ++prec) {
              std::string s = absl::StrFormat("%.*g", prec, v);
              if (std::strtod(s.c_str(), nullptr) == v) {
                row[c].text = s;
                break;
              }
            }
          }
          break;
        case SQLITE_BLOB: {
          row[c].kind = QueryCell::kText;
          const unsigned char* b = static_cast<const unsigned char*>(sqlite3_column_blob(stmt, c));
          int n = sqlite3_column_bytes(stmt, c);
          std::string hex = "x'";
          for (int i = 0; i < n; ++i) absl::StrAppendFormat(&hex, "%02x", b[i]);
          row[c].text = hex + "'";
          break;
        }
        default: {
          row[c].kind = QueryCell::kText;
          const unsigned char* t = sqlite3_column_text(stmt, c);
          row[c].text = t ? std::string(reinterpret_cast<const char*>(t),
                                        sqlite3_column_bytes(stmt, c))
                          : std::string();
        }
      }
    }
    table.rows.push_back(std::move(row));
  }
  return table;
}

}  // namespace kvgrid
