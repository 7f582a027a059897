// kvgrid's SQLite store: experiments, runs, leases, results, samples and workers.
//
// The coordinator is the only process that opens the database read-write (WAL mode); `kvgrid
// query` / `kvgrid report` open it read-only. Every method is thread-safe (one connection guarded
// by a mutex); writes use BEGIN IMMEDIATE with a busy timeout and retries, so callers never see
// "database is locked". Times are integer unix milliseconds. No torch, no gRPC here.
// Durability: WAL with synchronous=NORMAL — commits survive a killed coordinator; an OS crash
// may roll back the last commits (a run is then executed again, never recorded twice).
//
// ---------------------------------------------------------------------------------------------
// Schema (version 1). Users query it with sqlite3, pandas or DuckDB; names and units are plain.
//
//   schema_version(version INTEGER PRIMARY KEY, applied_at INTEGER)   -- one row per migration
//
//   experiments(
//     id INTEGER PRIMARY KEY,
//     name TEXT UNIQUE,            -- the grid's `name:`
//     grid_yaml TEXT,              -- the submitted YAML, verbatim
//     grid_hash TEXT,              -- SHA-256 hex of the sorted run keys (identical grid = same hash)
//     submitted_at INTEGER,        -- ms; last (re)submission
//     status TEXT,                 -- active | done | failed | cancelled
//                                  --   done: every run done; failed: finished, >= 1 run failed
//     max_attempts INTEGER)        -- leases per run before it is marked failed
//
//   runs(
//     id INTEGER PRIMARY KEY,
//     experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
//     run_key TEXT,                -- RunKey(spec): 16 hex digits of SHA-256(spec_json)
//     spec_json TEXT,              -- canonical RunSpec JSON (core/run_spec.h)
//     policy TEXT,                 -- canonical policy spec, e.g. "streaming_llm:sink_tokens=4,window=508"
//     dataset TEXT,                -- dataset name, e.g. "wikitext-2-raw-v1"
//     workload TEXT,               -- perplexity | generation | noop
//     device TEXT,                 -- spec device: cpu | cuda | cuda:N | auto
//     status TEXT,                 -- planned | running | done | failed | cancelled
//     attempt INTEGER,             -- leases granted so far (monotonic over the run's life)
//     attempt_base INTEGER,        -- `attempt` at the last (re)planning by a resubmission;
//                                  --   attempts used in the current round = attempt - attempt_base
//     max_attempts INTEGER,
//     worker_id TEXT,              -- current holder while running; the completing worker once done
//     lease_id TEXT,               -- current lease (NULL unless running)
//     lease_expires_at INTEGER,    -- ms
//     not_before INTEGER,          -- ms; retry back-off: not claimable before this time
//     progress REAL, phase TEXT,   -- last heartbeat's progress in [0,1] and phase label
//     result_attempt INTEGER,      -- the attempt whose results are the accepted ones (NULL until done)
//     created_at, started_at, finished_at INTEGER,   -- ms (started_at: last lease)
//     error TEXT,                  -- last failure message
//     UNIQUE(experiment_id, run_key))
//
//   leases(                        -- audit trail: one row per lease ever granted
//     lease_id TEXT PRIMARY KEY, run_id INTEGER, attempt INTEGER, worker_id TEXT,
//     granted_at INTEGER, expires_at INTEGER, ended_at INTEGER,
//     outcome TEXT)                -- NULL while active | completed | late_completed | failed |
//                                  --   released | expired | superseded | cancelled | duplicate
//
//   results(run_id, attempt, metric TEXT, value REAL, unit TEXT,
//           PRIMARY KEY(run_id, attempt, metric))
//     -- unit: "ms", "tok/s", "bytes", "tokens", "" (dimensionless); metric names in README "Metrics"
//   samples(run_id, attempt, series TEXT, idx INTEGER, value REAL, unit TEXT,
//           PRIMARY KEY(run_id, attempt, series, idx))   -- raw per-repetition values
//   result_records(run_id, attempt, worker_id TEXT, lease_id TEXT, environment_json TEXT,
//                  received_at INTEGER, PRIMARY KEY(run_id, attempt))
//     -- at most one accepted record per run and round: the current one is
//     -- (runs.id, runs.result_attempt). Older rounds (after `submit --force`) stay, keyed by attempt.
//
//   workers(id TEXT PRIMARY KEY, host TEXT, device TEXT, device_name TEXT, info_json TEXT,
//           registered_at INTEGER, last_heartbeat_at INTEGER,
//           status TEXT,               -- idle | busy | draining | gone
//           current_run_id INTEGER)
//
//   Views (the easy way in for users and reports):
//   run_metrics: experiment, run_id, run_key, status, policy, dataset, workload, device,
//                position_mode, kv_dtype, protocol, prompt_tokens, new_tokens, attempt, worker_id,
//                metric, value, unit  -- accepted results only (results.attempt = runs.result_attempt)
//   run_samples: experiment, run_id, run_key, policy, dataset, workload, attempt, series, idx,
//                value, unit             -- accepted samples only
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/run_result.h"
#include "core/run_spec.h"

struct sqlite3;

namespace kvgrid {

// The schema version this build writes; a database with a higher version is refused.
inline constexpr int kStoreSchemaVersion = 2;

enum class OpenMode {
  kReadWrite,  // creates the file if needed and migrates it forward (the coordinator)
  kReadOnly,   // SQLITE_OPEN_READONLY + PRAGMA query_only (kvgrid query / report)
};

struct SubmitOutcome {
  int64_t experiment_id = 0;
  bool created = false;      // a new experiment (false: resubmission of an existing name)
  int total = 0;             // runs in the grid (after de-duplication)
  int planned = 0;           // runs newly inserted as planned
  int reused_done = 0;       // finished runs kept (identical resubmission)
  int requeued = 0;          // failed/cancelled (or, with force, all existing) runs re-planned
  int removed = 0;           // force with a different grid: runs no longer in the grid, deleted
};

struct LeasedRun {
  int64_t run_id = 0;
  std::string run_key;
  std::string experiment;    // experiment name
  std::string spec_json;     // canonical RunSpec JSON
  int attempt = 0;           // this lease's attempt number (results are keyed by it)
  std::string lease_id;      // random 128-bit hex
  int64_t lease_expires_at = 0;
};

struct CompleteOutcome {
  bool accepted = false;
  // accepted: "recorded", "late result accepted (lease expired)", "already recorded (retry)";
  // rejected: "duplicate", "cancelled", "superseded by a forced resubmission".
  std::string reason;
};

struct WorkerInfo {
  std::string id;            // unique per daemon (e.g. host:pid:device)
  std::string host;
  std::string device;        // cpu | cuda | cuda:N
  std::string device_name;   // e.g. "NVIDIA H100 80GB HBM3" or the CPU model
  std::string info_json;     // capabilities/software versions as JSON
  int64_t now_ms = 0;
};

struct WorkerView {
  std::string id, host, device, device_name, status, info_json;
  int64_t registered_at = 0;
  int64_t last_heartbeat_at = 0;
  std::string current_run_key;  // "" when idle
  int runs_done = 0;            // runs of the experiment in question completed by this worker
                                // (ListWorkers: over all experiments)
};

struct ExperimentView {
  int64_t id = 0;
  std::string name, grid_yaml, grid_hash, status;
  int64_t submitted_at = 0;
  int max_attempts = 0;
  int total = 0, planned = 0, running = 0, done = 0, failed = 0, cancelled = 0;
};

struct ProgressView {
  std::string experiment, status;
  int total = 0, planned = 0, running = 0, done = 0, failed = 0, cancelled = 0;
  std::vector<WorkerView> workers;  // workers holding a run of it or having completed one
};

struct RunView {
  int64_t run_id = 0;
  std::string experiment, run_key, status;
  int attempts = 0;            // leases used in the current round (attempt - attempt_base)
  int attempt = 0;             // raw attempt counter
  std::optional<int> result_attempt;
  std::string policy, dataset, workload, device;
  std::string worker_id, error, spec_json;
  std::string lease_id;        // while running
  int64_t lease_expires_at = 0, not_before = 0;
  int64_t created_at = 0, started_at = 0, finished_at = 0;
  double progress = 0;
  std::string phase;
  std::map<std::string, std::pair<double, std::string>> metrics;  // name -> (value, unit)
  std::map<std::string, std::vector<double>> samples;             // series -> values by idx
  std::map<std::string, std::string> sample_units;                // series -> unit
  std::string environment_json;                                   // "" until done
};

struct QueryCell {
  enum Kind { kNull, kInteger, kReal, kText };
  Kind kind = kNull;
  std::string text;  // SQLite's text rendering ("" for NULL; blobs as hex)
};

struct QueryTable {
  std::vector<std::string> columns;
  std::vector<std::vector<QueryCell>> rows;
};

// Whether the database takes writes, from the last write transaction: after a failure (disk
// full, I/O error, read-only, corrupt, busy past the timeout) `problem` says what and where.
struct StoreHealth {
  bool ok = true;
  std::string problem;        // the last failed write's error ("" when ok)
  int64_t since_ms = 0;       // wall ms of the first failure of this spell (0 when ok)
  int64_t failed_writes = 0;  // over the store's life
};

class Store {
 public:
  // Opens (kReadWrite: creates and migrates) the database at `path`. Errors name the path:
  // a newer schema ("written by a newer kvgrid"), a missing file in read-only mode, an older
  // schema in read-only mode (open it once with the coordinator to migrate).
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path, OpenMode mode);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const { return path_; }
  bool read_only() const { return mode_ == OpenMode::kReadOnly; }
  StoreHealth health() const;  // thread-safe, never blocks on a write in progress
  absl::StatusOr<int> SchemaVersion();

  // ----- writes (coordinator) -----

  // Persists an experiment and all its runs in one transaction (nothing is claimable before it
  // commits). Same name + same grid_hash: finished runs reused, failed/cancelled re-planned,
  // planned/running untouched. Same name + different grid: AlreadyExists unless `force`.
  // force: every run re-planned (new round: attempt_base = attempt, so old results stay keyed
  // by their attempt), runs not in the new grid deleted, running leases superseded.
  // Duplicate specs in `runs` are stored once. Empty `runs` is InvalidArgument.
  absl::StatusOr<SubmitOutcome> SubmitExperiment(const std::string& name,
                                                 const std::string& grid_yaml,
                                                 const std::vector<RunSpec>& runs,
                                                 int max_attempts, bool force, int64_t now_ms);

  // Atomically leases the oldest claimable run: status planned, not_before <= now, experiment
  // not cancelled, device matching the worker ("auto" runs match any worker; a cpu worker takes
  // cpu/auto; a cuda or cuda:N worker takes cuda/cuda:N/auto, "cuda" meaning cuda:0). Sets it
  // running with attempt+1 and a new random lease id. nullopt when nothing is claimable.
  absl::StatusOr<std::optional<LeasedRun>> ClaimNextRun(const std::string& worker_id,
                                                        const std::string& device,
                                                        int64_t lease_ms, int64_t now_ms);

  // Heartbeat for a lease: expires_at = now + lease_ms, records progress/phase.
  // NotFound: unknown lease. FailedPrecondition (message says why) when the lease is no longer
  // the run's current one: expired and re-leased, run completed by another attempt, cancelled,
  // superseded by a forced resubmission. An expired lease whose run was not yet re-queued is
  // extended (the worker is alive after all).
  absl::Status ExtendLease(const std::string& lease_id, int64_t now_ms, int64_t lease_ms,
                           double progress, const std::string& phase);

  // Records a result. First valid completion wins: already done -> rejected "duplicate" (nothing
  // written), except an identical retry of the accepted call (same lease) which answers accepted
  // "already recorded (retry)"; an expired lease whose run is not done (re-queued or re-leased) is
  // accepted (valid measurement) and the run marked done; cancelled -> rejected. `attempt` must
  // be the lease's attempt (InvalidArgument otherwise); unknown lease/run -> NotFound.
  // results, samples and result_records are written in the same transaction.
  absl::StatusOr<CompleteOutcome> CompleteRun(int64_t run_id, int attempt,
                                              const std::string& lease_id, const RunResult& result,
                                              const std::string& worker_id, int64_t now_ms);

  // Ends a lease with an error. Only the current lease acts (others: FailedPrecondition).
  // retryable and attempts used < max_attempts -> planned with not_before = now + back-off
  // (1 s * 2^(attempts-1), capped at 60 s); otherwise failed with `error`.
  absl::Status FailRun(int64_t run_id, int attempt, const std::string& lease_id,
                       const std::string& error, bool retryable, int64_t now_ms);

  // A draining worker hands its run back without costing an attempt (attempt - 1), planned again
  // immediately. Only the current lease (others: FailedPrecondition).
  absl::Status ReleaseRun(const std::string& lease_id, int64_t now_ms);

  // Running runs with lease_expires_at < now: planned again (attempt kept: it counts leases), or
  // failed with "lease expired N times" once attempts used >= max_attempts. Returns how many
  // leases expired.
  absl::StatusOr<int> ExpireLeases(int64_t now_ms);

  // planned/running runs -> cancelled, experiment status cancelled; running leases become invalid
  // (ExtendLease/CompleteRun answer FailedPrecondition/"cancelled"). NotFound for an unknown name.
  // Returns the number of runs cancelled.
  absl::StatusOr<int> CancelExperiment(const std::string& name, int64_t now_ms);

  // Registers or re-registers a worker (status idle, heartbeat now).
  absl::Status UpsertWorker(const WorkerInfo& info);
  absl::Status WorkerHeartbeat(const std::string& worker_id, int64_t now_ms);  // NotFound if unknown
  // status: idle | busy | draining | gone ("gone" also clears current_run_id).
  absl::Status MarkWorker(const std::string& worker_id, const std::string& status);

  // Copies the WAL into the database file (PASSIVE: never waits for readers); the coordinator
  // calls it when idle so the WAL stays small.
  absl::Status Checkpoint();

  // ----- reads -----
  absl::StatusOr<std::vector<ExperimentView>> ListExperiments();        // newest first, with counts
  absl::StatusOr<ExperimentView> GetExperiment(const std::string& name);  // NotFound
  absl::StatusOr<std::vector<ExperimentView>> ListUnfinishedExperiments();  // status active
  absl::StatusOr<ProgressView> Progress(const std::string& name);
  // Runs of an experiment in insertion order, with accepted metrics/samples/environment.
  absl::StatusOr<std::vector<RunView>> ListRuns(const std::string& name);
  absl::StatusOr<RunView> GetRun(int64_t run_id);
  absl::StatusOr<std::vector<WorkerView>> ListWorkers();

  // Runs one read-only SQL statement on a read-only connection (opened on first use) and returns
  // its rows. Refuses anything else: several statements, writes, ATTACH/DETACH, writing pragmas.
  absl::StatusOr<QueryTable> ExecuteReadOnlyQuery(const std::string& sql, int64_t max_rows = -1);

 private:
  Store(std::string path, OpenMode mode, sqlite3* db);

  absl::Status WriteTxn(const std::function<absl::Status()>& body);  // caller holds mu_
  void NoteWrite(const absl::Status& st);

  std::string path_;
  OpenMode mode_;
  sqlite3* db_ = nullptr;
  sqlite3* query_db_ = nullptr;  // read-only connection for ExecuteReadOnlyQuery
  std::mutex mu_;
  mutable std::mutex health_mu_;
  StoreHealth health_;
};

// Default database path for CLI commands: $KVGRID_DB, else "./kvgrid.db".
std::string DefaultDbPath();

}  // namespace kvgrid
