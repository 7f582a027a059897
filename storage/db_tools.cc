#include "storage/db_tools.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/atomic_file.h"
#include "common/status_macros.h"
#include "storage/store.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

absl::Status RequireAbsent(const std::string& out) {
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  if (Exists(out)) {
    return absl::AlreadyExistsError(absl::StrCat(out, " already exists; pick a new file (nothing is overwritten)"));
  }
  return absl::OkStatus();
}

// The first rows of a one-column PRAGMA.
absl::StatusOr<std::vector<std::string>> PragmaRows(sqlite3* db, const char* sql, const std::string& path) {
  sqlite3_stmt* st = nullptr;
  std::vector<std::string> rows;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      rows.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    return absl::DataLossError(absl::StrCat("database ", path, ": ", sqlite3_errstr(rc), " (", sqlite3_errmsg(db), ")"));
  }
  return rows;
}

// Runs argv with stdout into `out_path`; returns stderr's text and the exit status.
absl::StatusOr<std::pair<int, std::string>> RunToFile(const std::vector<std::string>& argv,
                                                      const std::string& out_path, const std::string& in_path) {
  const std::string err_path = out_path + ".stderr";
  pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    if (!in_path.empty() && std::freopen(in_path.c_str(), "rb", stdin) == nullptr) ::_exit(126);
    if (std::freopen(out_path.c_str(), "wb", stdout) == nullptr) ::_exit(126);
    if (std::freopen(err_path.c_str(), "wb", stderr) == nullptr) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  absl::StatusOr<std::string> err = ReadFileToString(err_path);
  ::unlink(err_path.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  if (code == 127) {
    return absl::FailedPreconditionError(
        "the sqlite3 command-line shell is not installed (Debian: apt-get install sqlite3); kvgrid db recover uses its .dump");
  }
  return std::make_pair(code, err.ok() ? *err : std::string());
}

}  // namespace

absl::Status CheckDatabase(const std::string& path) {
  if (!Exists(path)) return absl::NotFoundError(absl::StrCat("database ", path, " does not exist"));
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", msg));
  }
  auto rows = PragmaRows(db, "PRAGMA integrity_check(20)", path);
  sqlite3_close_v2(db);
  if (!rows.ok()) return rows.status();
  if (rows->size() == 1 && (*rows)[0] == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("database ", path, " is damaged: ", absl::StrJoin(*rows, "; ")));
}

absl::Status BackupDatabase(const std::string& path, const std::string& out) {
  RETURN_IF_ERROR(RequireAbsent(out));
  if (!Exists(path)) return absl::NotFoundError(absl::StrCat("database ", path, " does not exist"));
  sqlite3* src = nullptr;
  sqlite3* dst = nullptr;
  absl::Status status;
  if (sqlite3_open_v2(path.c_str(), &src, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK ||
      sqlite3_open_v2(out.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
    status = absl::UnavailableError(absl::StrCat("cannot open ", path, " or ", out, ": ",
                                                 sqlite3_errmsg(src != nullptr ? src : dst)));
  } else {
    sqlite3_busy_timeout(src, 5000);
    sqlite3_backup* b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == nullptr) {
      status = absl::InternalError(absl::StrCat("backup of ", path, ": ", sqlite3_errmsg(dst)));
    } else {
      int rc;
      // 256 pages a step; a coordinator writing meanwhile makes the backup restart from its
      // snapshot, which SQLite handles (the copy is consistent as of its last step).
      while ((rc = sqlite3_backup_step(b, 256)) == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        if (rc != SQLITE_OK) sqlite3_sleep(50);
      }
      sqlite3_backup_finish(b);
      if (rc != SQLITE_DONE) {
        status = absl::Status(rc == SQLITE_FULL ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kDataLoss,
                              absl::StrCat("backup of ", path, " into ", out, " failed: ", sqlite3_errstr(rc)));
      }
    }
  }
  sqlite3_close_v2(src);
  sqlite3_close_v2(dst);
  if (!status.ok()) std::remove(out.c_str());
  return status;
}

absl::StatusOr<RecoverReport> RecoverDatabase(const std::string& path, const std::string& out) {
  RETURN_IF_ERROR(RequireAbsent(out));
  if (!Exists(path)) return absl::NotFoundError(absl::StrCat("database ", path, " does not exist"));
  // A private copy (with its WAL): opening the original could checkpoint into it.
  const std::string work = out + ".recover-work";
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", work, ": ", ec.message()));
  const std::string copy = work + "/damaged.db";
  fs::copy_file(path, copy, ec);
  if (!ec && Exists(path + "-wal")) fs::copy_file(path + "-wal", copy + "-wal", ec);
  if (ec) {
    fs::remove_all(work, ec);
    return absl::UnavailableError(absl::StrCat("cannot copy ", path, " to ", copy));
  }
  const std::string dump = work + "/dump.sql";
  auto dumped = RunToFile({"sqlite3", copy, ".dump"}, dump, "");
  if (!dumped.ok()) {
    fs::remove_all(work, ec);
    return dumped.status();
  }
  RecoverReport report;
  report.dump_errors = dumped->second;
  // The new file gets kvgrid's schema first (the damage may have taken the old one's table
  // definitions); then every row the dump could read goes in, each on its own: a row that no
  // longer fits (its experiment lost, a duplicate) is skipped, not the whole table.
  {
    auto fresh = Store::Open(out, OpenMode::kReadWrite);
    if (!fresh.ok()) {
      fs::remove_all(work, ec);
      return fresh.status();
    }
  }
  {
    std::ifstream in(dump, std::ios::binary);
    std::ofstream rows(work + "/rows.sql", std::ios::binary);
    rows << "PRAGMA foreign_keys = OFF;\nBEGIN;\n";
    std::string line;
    const char* kTables[] = {"experiments", "runs", "leases", "results", "samples", "result_records", "workers"};
    while (std::getline(in, line)) {
      for (const char* t : kTables) {
        const std::string prefix = absl::StrCat("INSERT INTO ", t, " VALUES(");
        const std::string quoted = absl::StrCat("INSERT INTO \"", t, "\" VALUES(");
        if (absl::StartsWith(line, prefix) || absl::StartsWith(line, quoted)) {
          rows << "INSERT OR IGNORE INTO " << t << line.substr(line.find(" VALUES(")) << "\n";
          break;
        }
      }
    }
    rows << "COMMIT;\n";
  }
  auto replayed = RunToFile({"sqlite3", out}, work + "/replay.out", work + "/rows.sql");
  fs::remove_all(work, ec);
  if (!replayed.ok()) return replayed.status();
  if (!replayed->second.empty()) absl::StrAppend(&report.dump_errors, replayed->second);
  // The new file must open as a kvgrid database (schema checked, migrated if old).
  auto store = Store::Open(out, OpenMode::kReadWrite);
  if (!store.ok()) {
    return absl::DataLossError(absl::StrCat("the recovered file ", out, " does not open as a kvgrid database: ",
                                            store.status().message()));
  }
  auto q = (*store)->ExecuteReadOnlyQuery(
      "SELECT (SELECT COUNT(*) FROM experiments), (SELECT COUNT(*) FROM runs), "
      "(SELECT COUNT(*) FROM runs WHERE status = 'done'), (SELECT COUNT(*) FROM results)");
  if (q.ok() && q->rows.size() == 1) {
    report.experiments = std::stoll(q->rows[0][0].text);
    report.runs = std::stoll(q->rows[0][1].text);
    report.runs_done = std::stoll(q->rows[0][2].text);
    report.result_rows = std::stoll(q->rows[0][3].text);
  }
  return report;
}

}  // namespace kvgrid
