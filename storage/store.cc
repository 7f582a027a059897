#include "storage/store.h"

#include <openssl/rand.h>
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
#include "common/sha256.h"
#include "common/status_macros.h"
#include "core/run_lifecycle.h"
#include "storage/schema.h"
#include "storage/sql.h"

// Store: opening (checks, migrations), the write transactions (experiments, leases, results,
// workers) and the health they record. Reads: store_reads.cc; the query console: query_console.cc.
namespace kvgrid {
using namespace sql;  // NOLINT: storage's own SQL helpers
namespace {

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
  st = MigrateForward(db, version);
  if (!st.ok()) return with_path(st);
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
      one.Bind(experiment_id, p.key, p.spec->CanonicalJson(), p.spec->policy.ToString(),
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

    lifecycle::ResultContext ctx;
    ctx.run_status = status;
    ctx.experiment_cancelled = experiment_status == "cancelled";
    ctx.attempt = attempt;
    ctx.attempt_base = attempt_base;
    ctx.lease_is_current = status == "running" && current_lease == lease_id;
    if (status == "done") {
      Stmt rec(db_, "SELECT lease_id FROM result_records WHERE run_id = ? AND attempt = ?");
      rec.Bind(run_id, static_cast<int64_t>(attempt));
      ASSIGN_OR_RETURN(bool has_rec, rec.Step());
      ctx.recorded_by_this_lease = has_rec && result_attempt == attempt && rec.Text(0) == lease_id;
    }
    const lifecycle::ResultVerdict verdict = lifecycle::JudgeResult(ctx);
    out = {lifecycle::Accepted(verdict), lifecycle::Explain(verdict)};
    if (verdict == lifecycle::ResultVerdict::kAlreadyRecorded) return absl::OkStatus();
    if (!out.accepted) return EndLease(db_, lease_id, lifecycle::LeaseOutcome(verdict), now_ms);
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
    if (status == "running" && !ctx.lease_is_current) {
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
    RETURN_IF_ERROR(end.Bind(lifecycle::LeaseOutcome(verdict), now_ms, lease_id).Exec());
    return RefreshExperimentStatus(db_, experiment_id);
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
    const lifecycle::Next next = lifecycle::AfterFailure(error, retryable, used, max_attempts, now_ms);
    if (next.retry) {
      Stmt upd(db_, R"sql(
        UPDATE runs SET status = 'planned', not_before = ?, error = ?, worker_id = NULL,
          lease_id = NULL, lease_expires_at = NULL, phase = 'retry back-off'
        WHERE id = ?)sql");
      RETURN_IF_ERROR(upd.Bind(next.not_before_ms, next.error, run_id).Exec());
    } else {
      Stmt upd(db_, R"sql(
        UPDATE runs SET status = 'failed', error = ?, lease_id = NULL, lease_expires_at = NULL,
          finished_at = ?
        WHERE id = ?)sql");
      RETURN_IF_ERROR(upd.Bind(next.error, now_ms, run_id).Exec());
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
      Stmt c(db_, R"sql(
        SELECT COUNT(*) FROM leases WHERE run_id = ? AND attempt > ? AND outcome = 'expired')sql");
      c.Bind(r.id, r.base);
      RETURN_IF_ERROR(c.Step().status());
      const lifecycle::Next next = lifecycle::AfterLeaseExpired(r.worker_id, r.used, r.max_attempts, c.Int(0));
      if (next.retry) {
        Stmt upd(db_, R"sql(
          UPDATE runs SET status = 'planned', not_before = 0, worker_id = NULL, lease_id = NULL,
            lease_expires_at = NULL, phase = 'lease expired',
            error = ?
          WHERE id = ?)sql");
        RETURN_IF_ERROR(upd.Bind(next.error, r.id).Exec());
      } else {
        Stmt upd(db_, R"sql(
          UPDATE runs SET status = 'failed', error = ?, lease_id = NULL, lease_expires_at = NULL,
            finished_at = ?
          WHERE id = ?)sql");
        RETURN_IF_ERROR(upd.Bind(next.error, now_ms, r.id).Exec());
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

}  // namespace kvgrid
