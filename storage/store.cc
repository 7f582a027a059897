#include "storage/store.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

// ------------------------------------------------------------------------------------------
// Migrations: append a step, never edit a released one. Version N brings the schema from N-1.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE experiments(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  grid_yaml TEXT NOT NULL,
  grid_hash TEXT NOT NULL,
  submitted_at INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'active'
    CHECK(status IN ('active', 'done', 'failed', 'cancelled')),
  max_attempts INTEGER NOT NULL
);
CREATE TABLE runs(
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
  run_key TEXT NOT NULL,
  spec_json TEXT NOT NULL,
  policy TEXT NOT NULL,
  dataset TEXT NOT NULL,
  workload TEXT NOT NULL,
  device TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'planned'
    CHECK(status IN ('planned', 'running', 'done', 'failed', 'cancelled')),
  attempt INTEGER NOT NULL DEFAULT 0,
  attempt_base INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  worker_id TEXT,
  lease_id TEXT,
  lease_expires_at INTEGER,
  not_before INTEGER NOT NULL DEFAULT 0,
  progress REAL,
  phase TEXT,
  result_attempt INTEGER,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  error TEXT,
  UNIQUE(experiment_id, run_key)
);
CREATE INDEX runs_claim ON runs(status, not_before, id);
CREATE INDEX runs_lease ON runs(lease_id);
CREATE TABLE leases(
  lease_id TEXT PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  granted_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  ended_at INTEGER,
  outcome TEXT
);
CREATE INDEX leases_run ON leases(run_id);
CREATE TABLE results(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  metric TEXT NOT NULL,
  value REAL,
  unit TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(run_id, attempt, metric)
);
CREATE TABLE samples(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  series TEXT NOT NULL,
  idx INTEGER NOT NULL,
  value REAL,
  unit TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(run_id, attempt, series, idx)
);
CREATE TABLE result_records(
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  lease_id TEXT NOT NULL,
  environment_json TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  PRIMARY KEY(run_id, attempt)
);
CREATE TABLE workers(
  id TEXT PRIMARY KEY,
  host TEXT NOT NULL DEFAULT '',
  device TEXT NOT NULL DEFAULT '',
  device_name TEXT NOT NULL DEFAULT '',
  info_json TEXT NOT NULL DEFAULT '{}',
  registered_at INTEGER NOT NULL,
  last_heartbeat_at INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'idle',
  current_run_id INTEGER
);
CREATE VIEW run_metrics AS
  SELECT e.name AS experiment, r.id AS run_id, r.run_key, r.status, r.policy, r.dataset,
         r.workload, r.device,
         json_extract(r.spec_json, '$.position_mode') AS position_mode,
         json_extract(r.spec_json, '$.perplexity.protocol') AS protocol,
         json_extract(r.spec_json, '$.generation.prompt_tokens') AS prompt_tokens,
         json_extract(r.spec_json, '$.generation.new_tokens') AS new_tokens,
         res.attempt, r.worker_id, res.metric, res.value, res.unit
  FROM runs r
  JOIN experiments e ON e.id = r.experiment_id
  JOIN results res ON res.run_id = r.id AND res.attempt = r.result_attempt;
CREATE VIEW run_samples AS
  SELECT e.name AS experiment, r.id AS run_id, r.run_key, r.policy, r.dataset, r.workload,
         s.attempt, s.series, s.idx, s.value, s.unit
  FROM runs r
  JOIN experiments e ON e.id = r.experiment_id
  JOIN samples s ON s.run_id = r.id AND s.attempt = r.result_attempt;
)sql"},
};

constexpr int kBusyTimeoutMs = 5000;
constexpr int kBusyRetries = 100;

bool IsBusy(int rc) {
  int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

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

// SQLite failures as kvgrid reports them, by what the user can do about them:
//   disk full, I/O error, read-only, cannot open, busy past the timeout -> Unavailable (the
//   store may work again: callers retry; the coordinator stops leasing meanwhile);
//   corrupt / not a database -> DataLoss (nothing more is trusted from the file);
//   anything else -> Internal. Messages name the database file.
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
  absl::Status st;
  for (int i = 0; i < kBusyRetries; ++i) {
    st = ExecScript(db, sql, what);
    if (st.ok() || !IsBusy(sqlite3_extended_errcode(db))) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return st;
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  std::string hex;
  for (unsigned char b : digest) absl::StrAppendFormat(&hex, "%02x", b);
  return hex;
}

std::string NewLeaseId() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    std::random_device rd;
    for (auto& b : bytes) b = static_cast<unsigned char>(rd());
  }
  std::string hex;
  for (unsigned char b : bytes) absl::StrAppendFormat(&hex, "%02x", b);
  return hex;
}

// Spec devices a worker of `device` may run.
std::vector<std::string> AcceptedDevices(const std::string& device) {
  if (device == "cpu") return {"auto", "cpu", "cpu"};
  if (device == "cuda" || device == "cuda:0") return {"auto", "cuda", "cuda:0"};
  if (device.rfind("cuda:", 0) == 0) return {"auto", "cuda", device};
  return {"auto", device, device};
}

absl::Status RequireWritable(OpenMode mode, const std::string& path) {
  if (mode == OpenMode::kReadOnly) {
    return absl::FailedPreconditionError(
        absl::StrCat("database ", path, " is open read-only; only the coordinator writes it"));
  }
  return absl::OkStatus();
}

// Recomputes experiments.status from its runs (cancelled stays cancelled).
absl::Status RefreshExperimentStatus(sqlite3* db, int64_t experiment_id) {
  Stmt st(db, R"sql(
    UPDATE experiments SET status = (
      SELECT CASE
        WHEN experiments.status = 'cancelled' THEN 'cancelled'
        WHEN COALESCE(SUM(status IN ('planned', 'running')), 0) > 0 THEN 'active'
        WHEN COALESCE(SUM(status = 'failed'), 0) > 0 THEN 'failed'
        ELSE 'done' END
      FROM runs WHERE experiment_id = experiments.id)
    WHERE id = ?)sql");
  return st.Bind(experiment_id).Exec();
}

absl::Status RefreshExperimentOfRun(sqlite3* db, int64_t run_id) {
  Stmt q(db, "SELECT experiment_id FROM runs WHERE id = ?");
  q.Bind(run_id);
  ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return absl::OkStatus();
  return RefreshExperimentStatus(db, q.Int(0));
}

absl::Status ReleaseWorkerOfRun(sqlite3* db, int64_t run_id) {
  Stmt st(db, R"sql(
    UPDATE workers SET current_run_id = NULL,
      status = CASE WHEN status IN ('draining', 'gone') THEN status ELSE 'idle' END
    WHERE current_run_id = ?)sql");
  return st.Bind(run_id).Exec();
}

absl::Status EndLease(sqlite3* db, const std::string& lease_id, const char* outcome, int64_t now) {
  Stmt st(db, "UPDATE leases SET outcome = ?, ended_at = ? WHERE lease_id = ? AND outcome IS NULL");
  return st.Bind(outcome, now, lease_id).Exec();
}

constexpr const char* kExperimentColumns = R"sql(
  SELECT e.id, e.name, e.grid_yaml, e.grid_hash, e.submitted_at, e.status, e.max_attempts,
         COUNT(r.id),
         COALESCE(SUM(r.status = 'planned'), 0), COALESCE(SUM(r.status = 'running'), 0),
         COALESCE(SUM(r.status = 'done'), 0), COALESCE(SUM(r.status = 'failed'), 0),
         COALESCE(SUM(r.status = 'cancelled'), 0)
  FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id)sql";

ExperimentView ReadExperiment(const Stmt& q) {
  ExperimentView e;
  e.id = q.Int(0);
  e.name = q.Text(1);
  e.grid_yaml = q.Text(2);
  e.grid_hash = q.Text(3);
  e.submitted_at = q.Int(4);
  e.status = q.Text(5);
  e.max_attempts = static_cast<int>(q.Int(6));
  e.total = static_cast<int>(q.Int(7));
  e.planned = static_cast<int>(q.Int(8));
  e.running = static_cast<int>(q.Int(9));
  e.done = static_cast<int>(q.Int(10));
  e.failed = static_cast<int>(q.Int(11));
  e.cancelled = static_cast<int>(q.Int(12));
  return e;
}

absl::StatusOr<std::vector<ExperimentView>> QueryExperiments(sqlite3* db, const std::string& where,
                                                             const std::string& arg) {
  std::string sql = absl::StrCat(kExperimentColumns, " ", where,
                                 " GROUP BY e.id ORDER BY e.submitted_at DESC, e.id DESC");
  Stmt q(db, sql.c_str());
  if (!arg.empty()) q.Bind(arg);
  std::vector<ExperimentView> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(ReadExperiment(q));
  }
  return out;
}

// Loads runs matching `where` (on alias r) with bound int64 argument, plus accepted results.
absl::StatusOr<std::vector<RunView>> QueryRuns(sqlite3* db, const char* where, int64_t arg) {
  std::vector<RunView> out;
  std::unordered_map<int64_t, size_t> index;
  {
    std::string sql = absl::StrCat(R"sql(
      SELECT r.id, e.name, r.run_key, r.status, r.attempt, r.attempt_base, r.result_attempt,
             r.policy, r.dataset, r.workload, r.device, r.worker_id, r.error, r.spec_json,
             r.lease_id, r.lease_expires_at, r.not_before, r.created_at, r.started_at,
             r.finished_at, r.progress, r.phase
      FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE )sql",
                                   where, " ORDER BY r.id");
    Stmt q(db, sql.c_str());
    q.Bind(arg);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      RunView v;
      v.run_id = q.Int(0);
      v.experiment = q.Text(1);
      v.run_key = q.Text(2);
      v.status = q.Text(3);
      v.attempt = static_cast<int>(q.Int(4));
      v.attempts = static_cast<int>(q.Int(4) - q.Int(5));
      if (!q.Null(6)) v.result_attempt = static_cast<int>(q.Int(6));
      v.policy = q.Text(7);
      v.dataset = q.Text(8);
      v.workload = q.Text(9);
      v.device = q.Text(10);
      v.worker_id = q.Text(11);
      v.error = q.Text(12);
      v.spec_json = q.Text(13);
      v.lease_id = q.Text(14);
      v.lease_expires_at = q.Int(15);
      v.not_before = q.Int(16);
      v.created_at = q.Int(17);
      v.started_at = q.Int(18);
      v.finished_at = q.Int(19);
      v.progress = q.Real(20);
      v.phase = q.Text(21);
      index[v.run_id] = out.size();
      out.push_back(std::move(v));
    }
  }
  if (out.empty()) return out;
  {
    std::string sql = absl::StrCat(R"sql(
      SELECT res.run_id, res.metric, res.value, res.unit
      FROM results res JOIN runs r ON r.id = res.run_id AND res.attempt = r.result_attempt
      WHERE )sql", where);
    Stmt q(db, sql.c_str());
    q.Bind(arg);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto it = index.find(q.Int(0));
      if (it == index.end()) continue;
      double value = q.Null(2) ? std::nan("") : q.Real(2);
      out[it->second].metrics[q.Text(1)] = {value, q.Text(3)};
    }
  }
  {
    std::string sql = absl::StrCat(R"sql(
      SELECT s.run_id, s.series, s.value, s.unit
      FROM samples s JOIN runs r ON r.id = s.run_id AND s.attempt = r.result_attempt
      WHERE )sql", where, " ORDER BY s.run_id, s.series, s.idx");
    Stmt q(db, sql.c_str());
    q.Bind(arg);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto it = index.find(q.Int(0));
      if (it == index.end()) continue;
      RunView& v = out[it->second];
      std::string series = q.Text(1);
      v.samples[series].push_back(q.Null(2) ? std::nan("") : q.Real(2));
      v.sample_units[series] = q.Text(3);
    }
  }
  {
    std::string sql = absl::StrCat(R"sql(
      SELECT rr.run_id, rr.environment_json
      FROM result_records rr JOIN runs r ON r.id = rr.run_id AND rr.attempt = r.result_attempt
      WHERE )sql", where);
    Stmt q(db, sql.c_str());
    q.Bind(arg);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto it = index.find(q.Int(0));
      if (it != index.end()) out[it->second].environment_json = q.Text(1);
    }
  }
  return out;
}

WorkerView ReadWorker(const Stmt& q) {
  WorkerView w;
  w.id = q.Text(0);
  w.host = q.Text(1);
  w.device = q.Text(2);
  w.device_name = q.Text(3);
  w.status = q.Text(4);
  w.info_json = q.Text(5);
  w.registered_at = q.Int(6);
  w.last_heartbeat_at = q.Int(7);
  w.current_run_key = q.Text(8);
  w.runs_done = static_cast<int>(q.Int(9));
  return w;
}

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

absl::StatusOr<int> ReadSchemaVersion(sqlite3* db) {
  Stmt exists(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  ASSIGN_OR_RETURN(bool has, exists.Step());
  if (!has) return 0;
  Stmt q(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? static_cast<int>(q.Int(0)) : 0;
}

int64_t WallNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// PRAGMA quick_check (or integrity_check): OK, or DataLoss listing the first problems.
absl::Status QuickCheck(sqlite3* db, const char* pragma = "PRAGMA quick_check(5)") {
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

}  // namespace

// ------------------------------------------------------------------------------------------

std::string DefaultDbPath() {
  const char* env = std::getenv("KVGRID_DB");
  return (env != nullptr && *env != '\0') ? std::string(env) : std::string("kvgrid.db");
}

Store::Store(std::string path, OpenMode mode, sqlite3* db)
    : path_(std::move(path)), mode_(mode), db_(db) {}

Store::~Store() {
  if (query_db_ != nullptr) sqlite3_close_v2(query_db_);
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path, OpenMode mode) {
  if (path.empty()) return absl::InvalidArgumentError("database path is empty");
  const bool ro = mode == OpenMode::kReadOnly;
  if (ro) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
      return absl::NotFoundError(absl::StrCat("database ", path, " does not exist (set --db or "
                                              "$KVGRID_DB to the coordinator's database)"));
    }
    std::fclose(f);
  }
  sqlite3* db = nullptr;
  int flags = (ro ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) |
              SQLITE_OPEN_FULLMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return absl::InternalError(absl::StrCat("cannot open database ", path, ": ", msg));
  }
  std::unique_ptr<Store> store(new Store(path, mode, db));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db, 1);
  auto with_path = [&](const absl::Status& st) {
    if (absl::StrContains(st.message(), path)) return st;
    return absl::Status(st.code(), absl::StrCat("database ", path, ": ", st.message()));
  };
  absl::Status st = ExecScript(db, "PRAGMA foreign_keys = ON", "enabling foreign keys");
  if (!st.ok()) return with_path(st);
  if (ro) {
    st = ExecScript(db, "PRAGMA query_only = ON", "setting query_only");
  } else {
    // WAL + synchronous=NORMAL: a committed transaction survives the coordinator being killed
    // (kill -9); only an OS crash or power loss can roll back the last few commits, which at
    // worst re-runs a run (never duplicates a result). FULL would fsync on every claim.
    // The WAL is checkpointed every 1000 pages (and when the coordinator is idle) and truncated
    // to 64 MiB after each checkpoint, so it stays bounded however long a grid runs.
    st = ExecWithRetry(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                           "PRAGMA wal_autocheckpoint = 1000; PRAGMA journal_size_limit = 67108864;",
                       "enabling WAL");
  }
  if (!st.ok()) {
    if (absl::StrContains(st.message(), "not a database")) {
      return absl::FailedPreconditionError(
          absl::StrCat("database ", path, " is not a SQLite database"));
    }
    return with_path(st);
  }
  auto version_or = ReadSchemaVersion(db);
  if (!version_or.ok()) return with_path(version_or.status());
  int version = *version_or;
  if (version > 0) {
    // A damaged file is refused before anything is read from it or reported.
    absl::Status check = QuickCheck(db);
    if (!check.ok()) {
      return absl::DataLossError(absl::StrCat(
          "database ", path, " is corrupt (", check.message(), "); nothing was read from it. Check it with "
          "`kvgrid db check ", path, "` and recover what is readable into a new file with `kvgrid db recover ",
          path, " --out NEW.db` (the damaged file is left as it is)"));
    }
  }
  if (version > kStoreSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "database %s has schema version %d, written by a newer kvgrid; this kvgrid supports up to "
        "version %d (upgrade kvgrid to open it)",
        path, version, kStoreSchemaVersion));
  }
  if (ro) {
    if (version == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("database ", path, " is not a kvgrid database (no schema_version table)"));
    }
    if (version < kStoreSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "database %s has schema version %d; this kvgrid expects %d. Open it once with "
          "`kvgrid coordinator --db %s` to migrate it",
          path, version, kStoreSchemaVersion, path));
    }
    return store;
  }
  if (version == 0) {
    // A fresh file, or a SQLite file from something else: refuse foreign files with tables.
    Stmt q(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'");
    auto row = q.Step();
    if (!row.ok()) return with_path(row.status());
    if (q.Int(0) > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "database ", path, " has tables but no schema_version table: not a kvgrid database"));
    }
  }
  for (const Migration& m : kMigrations) {
    if (m.version <= version) continue;
    st = ExecWithRetry(db, "BEGIN IMMEDIATE", "starting a migration");
    if (st.ok()) {
      // Re-check under the write lock (another process may have migrated meanwhile).
      auto current = ReadSchemaVersion(db);
      if (!current.ok()) {
        st = current.status();
      } else if (*current < m.version) {
        st = ExecScript(db,
                        "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY, "
                        "applied_at INTEGER NOT NULL)",
                        "creating schema_version");
        if (st.ok()) st = ExecScript(db, m.sql, absl::StrCat("migrating to version ", m.version));
        if (st.ok()) {
          Stmt ins(db, "INSERT INTO schema_version(version, applied_at) VALUES(?, ?)");
          st = ins.Bind(m.version, WallNowMs()).Exec();
        }
      }
      if (st.ok()) {
        st = ExecWithRetry(db, "COMMIT", "committing a migration");
      } else {
        ExecScript(db, "ROLLBACK", "rolling back").IgnoreError();
      }
    }
    if (!st.ok()) return with_path(st);
  }
  return store;
}

absl::StatusOr<int> Store::SchemaVersion() {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadSchemaVersion(db_);
}

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) and records whether the
// database took the write (health()). Caller holds mu_.
absl::Status Store::WriteTxn(const std::function<absl::Status()>& body) {
  const int64_t changes_before = sqlite3_total_changes64(db_);
  absl::Status st = ExecWithRetry(db_, "BEGIN IMMEDIATE", "starting a write transaction");
  if (st.ok()) {
    st = body();
    if (st.ok()) st = ExecWithRetry(db_, "COMMIT", "committing");
    if (!st.ok()) ExecScript(db_, "ROLLBACK", "rolling back").IgnoreError();
  }
  // Only a transaction that wrote something proves the store healthy again (an empty commit
  // succeeds on a full disk).
  if (!st.ok() || sqlite3_total_changes64(db_) > changes_before) NoteWrite(st);
  return st;
}

absl::Status Store::Checkpoint() {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  return ExecScript(db_, "PRAGMA wal_checkpoint(PASSIVE)", "checkpointing the WAL");
}

void Store::NoteWrite(const absl::Status& st) {
  const bool fault = absl::IsUnavailable(st) || absl::IsDataLoss(st) || absl::IsInternal(st);
  std::lock_guard<std::mutex> lock(health_mu_);
  if (st.ok()) {
    health_.ok = true;
    health_.problem.clear();
    health_.since_ms = 0;
  } else if (fault) {
    if (health_.ok) health_.since_ms = WallNowMs();
    health_.ok = false;
    health_.problem = std::string(st.message());
    ++health_.failed_writes;
  }
}

StoreHealth Store::health() const {
  std::lock_guard<std::mutex> lock(health_mu_);
  return health_;
}

// A consistent snapshot for multi-query reads. Caller holds mu_.
static absl::Status InReadTxn(sqlite3* db, const std::function<absl::Status()>& body) {
  RETURN_IF_ERROR(ExecWithRetry(db, "BEGIN", "starting a read transaction"));
  absl::Status st = body();
  ExecScript(db, "COMMIT", "ending a read transaction").IgnoreError();
  return st;
}

absl::StatusOr<SubmitOutcome> Store::SubmitExperiment(const std::string& name,
                                                      const std::string& grid_yaml,
                                                      const std::vector<RunSpec>& runs,
                                                      int max_attempts, bool force,
                                                      int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  if (name.empty()) return absl::InvalidArgumentError("experiment name is empty");
  if (runs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("experiment '", name, "' has no runs"));
  }
  if (max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("experiment '", name, "': max_attempts must be >= 1, got ", max_attempts));
  }
  // De-duplicate by key, keeping the first occurrence's order.
  struct Planned {
    std::string key;
    const RunSpec* spec;
  };
  std::vector<Planned> unique;
  std::unordered_set<std::string> seen;
  for (const RunSpec& spec : runs) {
    std::string key = RunKey(spec);
    if (seen.insert(key).second) unique.push_back({key, &spec});
  }
  std::vector<std::string> sorted_keys(seen.begin(), seen.end());
  std::sort(sorted_keys.begin(), sorted_keys.end());
  const std::string grid_hash = Sha256Hex(absl::StrJoin(sorted_keys, "\n"));

  std::lock_guard<std::mutex> lock(mu_);
  SubmitOutcome out;
  out.total = static_cast<int>(unique.size());
  auto insert_runs = [&](int64_t experiment_id) -> absl::Status {
    for (const Planned& p : unique) {
      Stmt one(db_, R"sql(
        INSERT OR IGNORE INTO runs(experiment_id, run_key, spec_json, policy, dataset, workload,
                                   device, status, max_attempts, created_at)
        VALUES(?, ?, ?, ?, ?, ?, ?, 'planned', ?, ?))sql");
      one.Bind(experiment_id, p.key, p.spec->CanonicalJson(), p.spec->policy,
               p.spec->dataset.name, p.spec->workload, p.spec->device, max_attempts, now_ms);
      RETURN_IF_ERROR(one.Exec());
      out.planned += one.Changes();
    }
    return absl::OkStatus();
  };

  absl::Status st = WriteTxn([&]() -> absl::Status {
    Stmt find(db_, "SELECT id, grid_hash FROM experiments WHERE name = ?");
    find.Bind(name);
    ASSIGN_OR_RETURN(bool exists, find.Step());
    if (!exists) {
      Stmt ins(db_, R"sql(
        INSERT INTO experiments(name, grid_yaml, grid_hash, submitted_at, status, max_attempts)
        VALUES(?, ?, ?, ?, 'active', ?))sql");
      RETURN_IF_ERROR(ins.Bind(name, grid_yaml, grid_hash, now_ms, max_attempts).Exec());
      out.experiment_id = sqlite3_last_insert_rowid(db_);
      out.created = true;
      return insert_runs(out.experiment_id);
    }
    out.experiment_id = find.Int(0);
    const std::string old_hash = find.Text(1);
    if (old_hash != grid_hash && !force) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "experiment '%s' already exists with a different grid (hash %s..., new %s...); use "
          "--force to replace it and rerun every run, or give the grid another name",
          name, old_hash.substr(0, 12), grid_hash.substr(0, 12)));
    }
    if (!force) {
      // Identical resubmission: keep done/planned/running, re-plan failed and cancelled.
      Stmt requeue(db_, R"sql(
        UPDATE runs SET status = 'planned', attempt_base = attempt, max_attempts = ?,
          not_before = 0, worker_id = NULL, lease_id = NULL, lease_expires_at = NULL,
          progress = NULL, phase = NULL, started_at = NULL, finished_at = NULL
        WHERE experiment_id = ? AND status IN ('failed', 'cancelled'))sql");
      RETURN_IF_ERROR(requeue.Bind(max_attempts, out.experiment_id).Exec());
      out.requeued = requeue.Changes();
      Stmt done(db_, "SELECT COUNT(*) FROM runs WHERE experiment_id = ? AND status = 'done'");
      done.Bind(out.experiment_id);
      RETURN_IF_ERROR(done.Step().status());
      out.reused_done = static_cast<int>(done.Int(0));
      RETURN_IF_ERROR(insert_runs(out.experiment_id));  // defensive: same hash, same keys
    } else {
      // Forced: supersede live leases, drop runs not in the grid, re-plan everything.
      Stmt leases(db_, R"sql(
        UPDATE leases SET outcome = 'superseded', ended_at = ?
        WHERE outcome IS NULL AND run_id IN (SELECT id FROM runs WHERE experiment_id = ?))sql");
      RETURN_IF_ERROR(leases.Bind(now_ms, out.experiment_id).Exec());
      Stmt workers(db_, R"sql(
        UPDATE workers SET current_run_id = NULL,
          status = CASE WHEN status IN ('draining', 'gone') THEN status ELSE 'idle' END
        WHERE current_run_id IN (SELECT id FROM runs WHERE experiment_id = ?))sql");
      RETURN_IF_ERROR(workers.Bind(out.experiment_id).Exec());
      std::vector<int64_t> stale;
      {
        Stmt existing(db_, "SELECT id, run_key FROM runs WHERE experiment_id = ?");
        existing.Bind(out.experiment_id);
        while (true) {
          ASSIGN_OR_RETURN(bool row, existing.Step());
          if (!row) break;
          if (!seen.count(existing.Text(1))) stale.push_back(existing.Int(0));
        }
      }
      for (int64_t id : stale) {
        Stmt del(db_, "DELETE FROM runs WHERE id = ?");
        RETURN_IF_ERROR(del.Bind(id).Exec());
      }
      out.removed = static_cast<int>(stale.size());
      Stmt replan(db_, R"sql(
        UPDATE runs SET status = 'planned', attempt_base = attempt, max_attempts = ?,
          result_attempt = NULL, error = NULL, not_before = 0, worker_id = NULL, lease_id = NULL,
          lease_expires_at = NULL, progress = NULL, phase = NULL, started_at = NULL,
          finished_at = NULL
        WHERE experiment_id = ?)sql");
      RETURN_IF_ERROR(replan.Bind(max_attempts, out.experiment_id).Exec());
      out.requeued = replan.Changes();
      RETURN_IF_ERROR(insert_runs(out.experiment_id));
    }
    Stmt upd(db_, R"sql(
      UPDATE experiments SET grid_yaml = ?, grid_hash = ?, submitted_at = ?, max_attempts = ?,
        status = 'active'
      WHERE id = ?)sql");
    RETURN_IF_ERROR(
        upd.Bind(grid_yaml, grid_hash, now_ms, max_attempts, out.experiment_id).Exec());
    return RefreshExperimentStatus(db_, out.experiment_id);
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<std::optional<LeasedRun>> Store::ClaimNextRun(const std::string& worker_id,
                                                             const std::string& device,
                                                             int64_t lease_ms, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  if (worker_id.empty()) return absl::InvalidArgumentError("ClaimNextRun: empty worker id");
  std::vector<std::string> devices = AcceptedDevices(device);
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<LeasedRun> leased;
  absl::Status st = WriteTxn([&]() -> absl::Status {
    Stmt pick(db_, R"sql(
      SELECT r.id, r.run_key, e.name, r.spec_json, r.attempt
      FROM runs r JOIN experiments e ON e.id = r.experiment_id
      WHERE r.status = 'planned' AND r.not_before <= ? AND e.status != 'cancelled'
        AND r.device IN (?, ?, ?)
      ORDER BY r.id LIMIT 1)sql");
    pick.Bind(now_ms, devices[0], devices[1], devices[2]);
    ASSIGN_OR_RETURN(bool row, pick.Step());
    if (!row) return absl::OkStatus();
    LeasedRun l;
    l.run_id = pick.Int(0);
    l.run_key = pick.Text(1);
    l.experiment = pick.Text(2);
    l.spec_json = pick.Text(3);
    l.attempt = static_cast<int>(pick.Int(4)) + 1;
    l.lease_id = NewLeaseId();
    l.lease_expires_at = now_ms + lease_ms;
    Stmt upd(db_, R"sql(
      UPDATE runs SET status = 'running', attempt = ?, worker_id = ?, lease_id = ?,
        lease_expires_at = ?, started_at = ?, progress = 0, phase = 'leased'
      WHERE id = ? AND status = 'planned')sql");
    RETURN_IF_ERROR(
        upd.Bind(l.attempt, worker_id, l.lease_id, l.lease_expires_at, now_ms, l.run_id).Exec());
    if (upd.Changes() != 1) return absl::InternalError("claimed run changed under the write lock");
    Stmt lease(db_, R"sql(
      INSERT INTO leases(lease_id, run_id, attempt, worker_id, granted_at, expires_at)
      VALUES(?, ?, ?, ?, ?, ?))sql");
    RETURN_IF_ERROR(
        lease.Bind(l.lease_id, l.run_id, l.attempt, worker_id, now_ms, l.lease_expires_at).Exec());
    Stmt w(db_, R"sql(
      UPDATE workers SET current_run_id = ?, last_heartbeat_at = ?,
        status = CASE WHEN status = 'draining' THEN status ELSE 'busy' END
      WHERE id = ?)sql");
    RETURN_IF_ERROR(w.Bind(l.run_id, now_ms, worker_id).Exec());
    leased = std::move(l);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return leased;
}

absl::Status Store::ExtendLease(const std::string& lease_id, int64_t now_ms, int64_t lease_ms,
                                double progress, const std::string& phase) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt q(db_, R"sql(
      SELECT l.run_id, l.outcome, r.status, r.lease_id, r.run_key
      FROM leases l JOIN runs r ON r.id = l.run_id WHERE l.lease_id = ?)sql");
    q.Bind(lease_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("unknown lease ", lease_id));
    const int64_t run_id = q.Int(0);
    const std::string outcome = q.Text(1);
    const std::string status = q.Text(2);
    const std::string current = q.Text(3);
    const std::string run_key = q.Text(4);
    if (status == "running" && current == lease_id) {
      Stmt upd(db_, R"sql(
        UPDATE runs SET lease_expires_at = ?, progress = ?, phase = ? WHERE id = ?)sql");
      RETURN_IF_ERROR(upd.Bind(now_ms + lease_ms, progress, phase, run_id).Exec());
      Stmt l(db_, "UPDATE leases SET expires_at = ? WHERE lease_id = ?");
      return l.Bind(now_ms + lease_ms, lease_id).Exec();
    }
    std::string why;
    if (status == "cancelled") {
      why = "the run was cancelled";
    } else if (outcome == "superseded") {
      why = status == "done" ? "another attempt completed the run"
                             : "the run was re-planned by a forced resubmission";
    } else if (status == "done") {
      why = "the run is already done";
    } else if (outcome == "expired") {
      why = "the lease expired and the run was re-queued";
    } else if (!outcome.empty()) {
      why = absl::StrCat("the lease already ended (", outcome, ")");
    } else {
      why = absl::StrCat("the run is ", status, " under another lease");
    }
    return absl::FailedPreconditionError(
        absl::StrCat("lease ", lease_id, " of run ", run_key, " is no longer valid: ", why));
  });
}

absl::StatusOr<CompleteOutcome> Store::CompleteRun(int64_t run_id, int attempt,
                                                   const std::string& lease_id,
                                                   const RunResult& result,
                                                   const std::string& worker_id, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  CompleteOutcome out;
  absl::Status st = WriteTxn([&]() -> absl::Status {
    Stmt lq(db_, "SELECT run_id, attempt, outcome FROM leases WHERE lease_id = ?");
    lq.Bind(lease_id);
    ASSIGN_OR_RETURN(bool has_lease, lq.Step());
    if (!has_lease) {
      return absl::NotFoundError(
          absl::StrCat("CompleteRun: unknown lease ", lease_id, " for run ", run_id));
    }
    if (lq.Int(0) != run_id) {
      return absl::InvalidArgumentError(absl::StrCat("CompleteRun: lease ", lease_id,
                                                     " belongs to run ", lq.Int(0), ", not ",
                                                     run_id));
    }
    if (lq.Int(1) != attempt) {
      return absl::InvalidArgumentError(absl::StrCat("CompleteRun: lease ", lease_id,
                                                     " is attempt ", lq.Int(1), ", not ", attempt));
    }
    Stmt rq(db_, R"sql(
      SELECT r.status, r.lease_id, r.attempt_base, r.result_attempt, e.status, r.experiment_id
      FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?)sql");
    rq.Bind(run_id);
    ASSIGN_OR_RETURN(bool has_run, rq.Step());
    if (!has_run) return absl::NotFoundError(absl::StrCat("CompleteRun: unknown run ", run_id));
    const std::string status = rq.Text(0);
    const std::string current_lease = rq.Text(1);
    const int64_t attempt_base = rq.Int(2);
    const std::optional<int64_t> result_attempt =
        rq.Null(3) ? std::nullopt : std::optional<int64_t>(rq.Int(3));
    const std::string experiment_status = rq.Text(4);
    const int64_t experiment_id = rq.Int(5);

    if (status == "done") {
      Stmt rec(db_, "SELECT lease_id FROM result_records WHERE run_id = ? AND attempt = ?");
      rec.Bind(run_id, static_cast<int64_t>(attempt));
      ASSIGN_OR_RETURN(bool has_rec, rec.Step());
      if (has_rec && result_attempt == attempt && rec.Text(0) == lease_id) {
        out = {true, "already recorded (retry)"};
        return absl::OkStatus();
      }
      RETURN_IF_ERROR(EndLease(db_, lease_id, "duplicate", now_ms));
      out = {false, "duplicate"};
      return absl::OkStatus();
    }
    if (status == "cancelled" || experiment_status == "cancelled") {
      RETURN_IF_ERROR(EndLease(db_, lease_id, "cancelled", now_ms));
      out = {false, "cancelled"};
      return absl::OkStatus();
    }
    if (attempt <= attempt_base) {
      RETURN_IF_ERROR(EndLease(db_, lease_id, "superseded", now_ms));
      out = {false, "superseded by a forced resubmission"};
      return absl::OkStatus();
    }
    const bool current = status == "running" && current_lease == lease_id;
    // Write the record.
    for (const Metric& m : result.metrics) {
      Stmt ins(db_, R"sql(
        INSERT OR REPLACE INTO results(run_id, attempt, metric, value, unit)
        VALUES(?, ?, ?, ?, ?))sql");
      ins.Bind(run_id, attempt, m.name);
      if (std::isfinite(m.value)) ins.Bind(m.value); else ins.Bind(nullptr);
      RETURN_IF_ERROR(ins.Bind(m.unit).Exec());
    }
    for (const SampleSeries& s : result.samples) {
      for (size_t i = 0; i < s.values.size(); ++i) {
        Stmt ins(db_, R"sql(
          INSERT OR REPLACE INTO samples(run_id, attempt, series, idx, value, unit)
          VALUES(?, ?, ?, ?, ?, ?))sql");
        ins.Bind(run_id, attempt, s.name, static_cast<int64_t>(i));
        if (std::isfinite(s.values[i])) ins.Bind(s.values[i]); else ins.Bind(nullptr);
        RETURN_IF_ERROR(ins.Bind(s.unit).Exec());
      }
    }
    Stmt rec(db_, R"sql(
      INSERT OR REPLACE INTO result_records(run_id, attempt, worker_id, lease_id,
                                            environment_json, received_at)
      VALUES(?, ?, ?, ?, ?, ?))sql");
    RETURN_IF_ERROR(
        rec.Bind(run_id, attempt, worker_id, lease_id, result.environment.dump(), now_ms).Exec());
    if (status == "running" && !current) {
      // Another worker holds the re-leased run: its lease is superseded by this result.
      RETURN_IF_ERROR(EndLease(db_, current_lease, "superseded", now_ms));
    }
    RETURN_IF_ERROR(ReleaseWorkerOfRun(db_, run_id));
    Stmt upd(db_, R"sql(
      UPDATE runs SET status = 'done', result_attempt = ?, worker_id = ?, lease_id = NULL,
        lease_expires_at = NULL, finished_at = ?, error = NULL, progress = 1, phase = 'done'
      WHERE id = ?)sql");
    RETURN_IF_ERROR(upd.Bind(attempt, worker_id, now_ms, run_id).Exec());
    Stmt end(db_, "UPDATE leases SET outcome = ?, ended_at = ? WHERE lease_id = ?");
    RETURN_IF_ERROR(end.Bind(current ? "completed" : "late_completed", now_ms, lease_id).Exec());
    RETURN_IF_ERROR(RefreshExperimentStatus(db_, experiment_id));
    out = {true, current ? "recorded" : "late result accepted (lease expired)"};
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

absl::Status Store::FailRun(int64_t run_id, int attempt, const std::string& lease_id,
                            const std::string& error, bool retryable, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt q(db_, R"sql(
      SELECT status, lease_id, attempt, attempt_base, max_attempts, run_key FROM runs
      WHERE id = ?)sql");
    q.Bind(run_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("FailRun: unknown run ", run_id));
    if (q.Text(0) != "running" || q.Text(1) != lease_id) {
      return absl::FailedPreconditionError(
          absl::StrCat("FailRun: lease ", lease_id, " is not the current lease of run ",
                       q.Text(5), " (status ", q.Text(0), ")"));
    }
    if (q.Int(2) != attempt) {
      return absl::InvalidArgumentError(
          absl::StrCat("FailRun: run ", q.Text(5), " is at attempt ", q.Int(2), ", not ", attempt));
    }
    const int64_t used = q.Int(2) - q.Int(3);
    const int64_t max_attempts = q.Int(4);
    RETURN_IF_ERROR(ReleaseWorkerOfRun(db_, run_id));
    RETURN_IF_ERROR(EndLease(db_, lease_id, "failed", now_ms));
    if (retryable && used < max_attempts) {
      int64_t backoff = 1000LL << std::min<int64_t>(std::max<int64_t>(used - 1, 0), 6);
      backoff = std::min<int64_t>(backoff, 60000);
      Stmt upd(db_, R"sql(
        UPDATE runs SET status = 'planned', not_before = ?, error = ?, worker_id = NULL,
          lease_id = NULL, lease_expires_at = NULL, phase = 'retry back-off'
        WHERE id = ?)sql");
      RETURN_IF_ERROR(upd.Bind(now_ms + backoff, error, run_id).Exec());
    } else {
      std::string message =
          retryable ? absl::StrCat(error, " (gave up after ", used, " attempts)") : error;
      Stmt upd(db_, R"sql(
        UPDATE runs SET status = 'failed', error = ?, lease_id = NULL, lease_expires_at = NULL,
          finished_at = ?
        WHERE id = ?)sql");
      RETURN_IF_ERROR(upd.Bind(message, now_ms, run_id).Exec());
    }
    return RefreshExperimentOfRun(db_, run_id);
  });
}

absl::Status Store::ReleaseRun(const std::string& lease_id, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt q(db_, "SELECT id FROM runs WHERE lease_id = ? AND status = 'running'");
    q.Bind(lease_id);
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) {
      Stmt l(db_, "SELECT outcome FROM leases WHERE lease_id = ?");
      l.Bind(lease_id);
      ASSIGN_OR_RETURN(bool known, l.Step());
      if (!known) return absl::NotFoundError(absl::StrCat("ReleaseRun: unknown lease ", lease_id));
      return absl::FailedPreconditionError(absl::StrCat(
          "ReleaseRun: lease ", lease_id, " is no longer current (", l.Text(0), ")"));
    }
    const int64_t run_id = q.Int(0);
    RETURN_IF_ERROR(ReleaseWorkerOfRun(db_, run_id));
    RETURN_IF_ERROR(EndLease(db_, lease_id, "released", now_ms));
    Stmt upd(db_, R"sql(
      UPDATE runs SET status = 'planned', attempt = attempt - 1, not_before = 0, worker_id = NULL,
        lease_id = NULL, lease_expires_at = NULL, progress = NULL, phase = 'released'
      WHERE id = ?)sql");
    return upd.Bind(run_id).Exec();
  });
}

absl::StatusOr<int> Store::ExpireLeases(int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  int expired = 0;
  absl::Status st = WriteTxn([&]() -> absl::Status {
    struct Row {
      int64_t id, experiment_id, used, max_attempts, base;
      std::string lease_id, worker_id;
    };
    std::vector<Row> rows;
    {
      Stmt q(db_, R"sql(
        SELECT id, experiment_id, attempt - attempt_base, max_attempts, attempt_base, lease_id,
               worker_id
        FROM runs WHERE status = 'running' AND lease_expires_at < ?)sql");
      q.Bind(now_ms);
      while (true) {
        ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        rows.push_back({q.Int(0), q.Int(1), q.Int(2), q.Int(3), q.Int(4), q.Text(5), q.Text(6)});
      }
    }
    std::set<int64_t> experiments;
    for (const Row& r : rows) {
      RETURN_IF_ERROR(EndLease(db_, r.lease_id, "expired", now_ms));
      RETURN_IF_ERROR(ReleaseWorkerOfRun(db_, r.id));
      if (r.used >= r.max_attempts) {
        Stmt c(db_, R"sql(
          SELECT COUNT(*) FROM leases WHERE run_id = ? AND attempt > ? AND outcome = 'expired')sql");
        c.Bind(r.id, r.base);
        RETURN_IF_ERROR(c.Step().status());
        std::string error = absl::StrCat("lease expired ", c.Int(0), " times (last worker ",
                                         r.worker_id, ")");
        Stmt upd(db_, R"sql(
          UPDATE runs SET status = 'failed', error = ?, lease_id = NULL, lease_expires_at = NULL,
            finished_at = ?
          WHERE id = ?)sql");
        RETURN_IF_ERROR(upd.Bind(error, now_ms, r.id).Exec());
      } else {
        Stmt upd(db_, R"sql(
          UPDATE runs SET status = 'planned', not_before = 0, worker_id = NULL, lease_id = NULL,
            lease_expires_at = NULL, phase = 'lease expired',
            error = ?
          WHERE id = ?)sql");
        RETURN_IF_ERROR(
            upd.Bind(absl::StrCat("lease expired (worker ", r.worker_id, ")"), r.id).Exec());
      }
      experiments.insert(r.experiment_id);
      ++expired;
    }
    for (int64_t e : experiments) RETURN_IF_ERROR(RefreshExperimentStatus(db_, e));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return expired;
}

absl::StatusOr<int> Store::CancelExperiment(const std::string& name, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  int cancelled = 0;
  absl::Status st = WriteTxn([&]() -> absl::Status {
    Stmt find(db_, "SELECT id FROM experiments WHERE name = ?");
    find.Bind(name);
    ASSIGN_OR_RETURN(bool row, find.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no experiment named '", name, "'"));
    const int64_t id = find.Int(0);
    Stmt leases(db_, R"sql(
      UPDATE leases SET outcome = 'cancelled', ended_at = ?
      WHERE outcome IS NULL AND lease_id IN
        (SELECT lease_id FROM runs WHERE experiment_id = ? AND status = 'running'))sql");
    RETURN_IF_ERROR(leases.Bind(now_ms, id).Exec());
    Stmt workers(db_, R"sql(
      UPDATE workers SET current_run_id = NULL,
        status = CASE WHEN status IN ('draining', 'gone') THEN status ELSE 'idle' END
      WHERE current_run_id IN (SELECT id FROM runs WHERE experiment_id = ? AND status = 'running'))sql");
    RETURN_IF_ERROR(workers.Bind(id).Exec());
    Stmt runs(db_, R"sql(
      UPDATE runs SET status = 'cancelled', lease_id = NULL, lease_expires_at = NULL,
        finished_at = ?, error = 'cancelled'
      WHERE experiment_id = ? AND status IN ('planned', 'running'))sql");
    RETURN_IF_ERROR(runs.Bind(now_ms, id).Exec());
    cancelled = runs.Changes();
    Stmt e(db_, "UPDATE experiments SET status = 'cancelled' WHERE id = ?");
    return e.Bind(id).Exec();
  });
  if (!st.ok()) return st;
  return cancelled;
}

absl::Status Store::UpsertWorker(const WorkerInfo& info) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  if (info.id.empty()) return absl::InvalidArgumentError("UpsertWorker: empty worker id");
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt st(db_, R"sql(
      INSERT INTO workers(id, host, device, device_name, info_json, registered_at,
                          last_heartbeat_at, status)
      VALUES(?, ?, ?, ?, ?, ?, ?, 'idle')
      ON CONFLICT(id) DO UPDATE SET host = excluded.host, device = excluded.device,
        device_name = excluded.device_name, info_json = excluded.info_json,
        last_heartbeat_at = excluded.last_heartbeat_at,
        status = CASE WHEN current_run_id IS NULL THEN 'idle' ELSE 'busy' END)sql");
    return st
        .Bind(info.id, info.host, info.device, info.device_name,
              info.info_json.empty() ? std::string("{}") : info.info_json, info.now_ms,
              info.now_ms)
        .Exec();
  });
}

absl::Status Store::WorkerHeartbeat(const std::string& worker_id, int64_t now_ms) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt st(db_, R"sql(
      UPDATE workers SET last_heartbeat_at = ?,
        status = CASE WHEN status != 'gone' THEN status
                      WHEN current_run_id IS NULL THEN 'idle' ELSE 'busy' END
      WHERE id = ?)sql");
    RETURN_IF_ERROR(st.Bind(now_ms, worker_id).Exec());
    if (st.Changes() == 0) {
      return absl::NotFoundError(absl::StrCat("unknown worker '", worker_id, "' (register first)"));
    }
    return absl::OkStatus();
  });
}

absl::Status Store::MarkWorker(const std::string& worker_id, const std::string& status) {
  RETURN_IF_ERROR(RequireWritable(mode_, path_));
  static const std::set<std::string> kStatuses = {"idle", "busy", "draining", "gone"};
  if (!kStatuses.count(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("MarkWorker: status must be idle, busy, draining or gone, got '", status, "'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return WriteTxn([&]() -> absl::Status {
    Stmt st(db_, status == "gone"
                     ? "UPDATE workers SET status = ?, current_run_id = NULL WHERE id = ?"
                     : "UPDATE workers SET status = ? WHERE id = ?");
    RETURN_IF_ERROR(st.Bind(status, worker_id).Exec());
    if (st.Changes() == 0) return absl::NotFoundError(absl::StrCat("unknown worker '", worker_id, "'"));
    return absl::OkStatus();
  });
}

// ----- reads -----

absl::StatusOr<std::vector<ExperimentView>> Store::ListExperiments() {
  std::lock_guard<std::mutex> lock(mu_);
  return QueryExperiments(db_, "", "");
}

absl::StatusOr<ExperimentView> Store::GetExperiment(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(auto list, QueryExperiments(db_, "WHERE e.name = ?", name));
  if (list.empty()) return absl::NotFoundError(absl::StrCat("no experiment named '", name, "'"));
  return list.front();
}

absl::StatusOr<std::vector<ExperimentView>> Store::ListUnfinishedExperiments() {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(auto list, QueryExperiments(db_, "WHERE e.status = 'active'", ""));
  std::reverse(list.begin(), list.end());  // oldest first: resume in submission order
  return list;
}

absl::StatusOr<ProgressView> Store::Progress(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  ProgressView p;
  absl::Status st = InReadTxn(db_, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(auto list, QueryExperiments(db_, "WHERE e.name = ?", name));
    if (list.empty()) return absl::NotFoundError(absl::StrCat("no experiment named '", name, "'"));
    const ExperimentView& e = list.front();
    p.experiment = e.name;
    p.status = e.status;
    p.total = e.total;
    p.planned = e.planned;
    p.running = e.running;
    p.done = e.done;
    p.failed = e.failed;
    p.cancelled = e.cancelled;
    Stmt q(db_, R"sql(
      SELECT w.id, w.host, w.device, w.device_name, w.status, w.info_json, w.registered_at,
             w.last_heartbeat_at, COALESCE(cr.run_key, ''),
             (SELECT COUNT(*) FROM runs d WHERE d.experiment_id = ?1 AND d.status = 'done'
                AND d.worker_id = w.id)
      FROM workers w LEFT JOIN runs cr ON cr.id = w.current_run_id AND cr.experiment_id = ?1
      WHERE w.id IN (SELECT worker_id FROM runs WHERE experiment_id = ?1
                     AND status IN ('running', 'done') AND worker_id IS NOT NULL)
      ORDER BY w.id)sql");
    q.Bind(e.id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      p.workers.push_back(ReadWorker(q));
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return p;
}

absl::StatusOr<std::vector<RunView>> Store::ListRuns(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RunView> out;
  absl::Status st = InReadTxn(db_, [&]() -> absl::Status {
    Stmt find(db_, "SELECT id FROM experiments WHERE name = ?");
    find.Bind(name);
    ASSIGN_OR_RETURN(bool row, find.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no experiment named '", name, "'"));
    ASSIGN_OR_RETURN(out, QueryRuns(db_, "r.experiment_id = ?", find.Int(0)));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<RunView> Store::GetRun(int64_t run_id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RunView> out;
  absl::Status st = InReadTxn(db_, [&]() -> absl::Status {
    ASSIGN_OR_RETURN(out, QueryRuns(db_, "r.id = ?", run_id));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (out.empty()) return absl::NotFoundError(absl::StrCat("unknown run ", run_id));
  return out.front();
}

absl::StatusOr<std::vector<WorkerView>> Store::ListWorkers() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt q(db_, R"sql(
    SELECT w.id, w.host, w.device, w.device_name, w.status, w.info_json, w.registered_at,
           w.last_heartbeat_at, COALESCE(cr.run_key, ''),
           (SELECT COUNT(*) FROM runs d WHERE d.status = 'done' AND d.worker_id = w.id)
    FROM workers w LEFT JOIN runs cr ON cr.id = w.current_run_id
    ORDER BY w.id)sql");
  std::vector<WorkerView> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(ReadWorker(q));
  }
  return out;
}

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
