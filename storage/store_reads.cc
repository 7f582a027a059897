// Store's reads: experiments with their counts, progress, runs with accepted metrics and samples,
// workers (store.h).
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

}  // namespace


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

}  // namespace kvgrid
