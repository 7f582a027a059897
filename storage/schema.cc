#include "storage/schema.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storage/sql.h"

namespace kvgrid::sql {
namespace {

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
    // 2: run_metrics names the KV cache's storage type (kv_dtype; absent from older specs).
    {2, R"sql(
DROP VIEW run_metrics;
CREATE VIEW run_metrics AS
  SELECT e.name AS experiment, r.id AS run_id, r.run_key, r.status, r.policy, r.dataset,
         r.workload, r.device,
         json_extract(r.spec_json, '$.position_mode') AS position_mode,
         COALESCE(json_extract(r.spec_json, '$.kv_dtype'), 'model') AS kv_dtype,
         json_extract(r.spec_json, '$.perplexity.protocol') AS protocol,
         json_extract(r.spec_json, '$.generation.prompt_tokens') AS prompt_tokens,
         json_extract(r.spec_json, '$.generation.new_tokens') AS new_tokens,
         res.attempt, r.worker_id, res.metric, res.value, res.unit
  FROM runs r
  JOIN experiments e ON e.id = r.experiment_id
  JOIN results res ON res.run_id = r.id AND res.attempt = r.result_attempt;
)sql"},
};

}  // namespace

absl::StatusOr<int> ReadSchemaVersion(sqlite3* db) {
  Stmt exists(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  ASSIGN_OR_RETURN(bool has, exists.Step());
  if (!has) return 0;
  Stmt q(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? static_cast<int>(q.Int(0)) : 0;
}

absl::Status MigrateForward(sqlite3* db, int version) {
  absl::Status st;
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
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace kvgrid::sql
