// Load test of the coordinator (a program, not a timed test): an in-process coordinator on a
// loopback port with its SQLite database on disk, N worker daemons (threads, each with its own
// gRPC connection, heartbeat thread and noop executor) and a grid of R noop runs submitted over
// gRPC. Prints the dispatch overhead per run, the coordinator's throughput, client-side RPC
// latencies, and whether SQLite ever reported SQLITE_BUSY / "database is locked" (counted with
// SQLITE_CONFIG_LOG, which sees busy events even when the busy handler retried them), and checks
// that every run completed exactly once.
//
//   load_test [--runs 1000] [--workers 32] [--noop-ms 0] [--db FILE] [--lease-ms 30000] [--json]
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "coordinator/client.h"
#include "coordinator/server.h"
#include "proto/rpc_common.h"
#include "worker/daemon/noop_executor.h"
#include "worker/daemon/worker_daemon.h"
#include "core/metric_catalog.h"

namespace {

std::atomic<int64_t> g_sqlite_busy{0};
std::atomic<int64_t> g_sqlite_locked_messages{0};
std::atomic<int64_t> g_sqlite_log{0};

void SqliteLog(void*, int code, const char* msg) {
  g_sqlite_log.fetch_add(1);
  const int primary = code & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) g_sqlite_busy.fetch_add(1);
  if (msg != nullptr && std::strstr(msg, "database is locked") != nullptr) {
    g_sqlite_locked_messages.fetch_add(1);
  }
}

struct Flags {
  int runs = 1000;
  int workers = 32;
  int noop_ms = 0;
  int64_t lease_ms = 30000;
  std::string db;
  bool json = false;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "load_test: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs") f->runs = std::atoi(next("--runs"));
    else if (a == "--workers") f->workers = std::atoi(next("--workers"));
    else if (a == "--noop-ms") f->noop_ms = std::atoi(next("--noop-ms"));
    else if (a == "--lease-ms") f->lease_ms = std::atoll(next("--lease-ms"));
    else if (a == "--db") f->db = next("--db");
    else if (a == "--json") f->json = true;
    else {
      std::fprintf(stderr,
                   "usage: load_test [--runs N] [--workers N] [--noop-ms MS] [--db FILE] "
                   "[--lease-ms MS] [--json]\n");
      return false;
    }
  }
  return f->runs > 0 && f->workers > 0 && f->noop_ms >= 0;
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  // Must precede any other SQLite use in the process.
  sqlite3_config(SQLITE_CONFIG_LOG, SqliteLog, nullptr);
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return 2;
  std::string tmpdir;
  if (f.db.empty()) {
    char tmpl[] = "/tmp/kvgrid-load-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    tmpdir = tmpl;
    f.db = tmpdir + "/load.db";
  }
  using kvgrid::CoordinatorServer;
  kvgrid::CoordinatorOptions copt;
  copt.db_path = f.db;
  copt.listen = "127.0.0.1:0";
  copt.token = kvgrid::rpc::GenerateToken();
  copt.lease_ms = f.lease_ms;
  copt.heartbeat_ms = std::max<int64_t>(100, f.lease_ms / 6);
  copt.max_wait_ms = 2000;
  auto server = CoordinatorServer::Start(copt);
  if (!server.ok()) {
    std::fprintf(stderr, "load_test: %s\n", server.status().ToString().c_str());
    return 1;
  }

  std::vector<std::unique_ptr<kvgrid::RunExecutor>> executors;
  std::vector<std::unique_ptr<kvgrid::WorkerDaemon>> daemons;
  std::atomic<int64_t> worker_log_errors{0};
  for (int i = 0; i < f.workers; ++i) {
    executors.push_back(kvgrid::MakeNoopExecutor("cpu"));
    kvgrid::WorkerDaemonOptions wopt;
    wopt.coordinator = (*server)->address();
    wopt.token = copt.token;
    wopt.device = "cpu";
    wopt.worker_id = absl::StrCat("load-", i);
    wopt.lease_wait_ms = 2000;
    wopt.own_connection = true;
    wopt.log = [&worker_log_errors](const std::string& msg) {
      // Only the unusual is worth printing: every run is logged by default.
      if (msg.rfind("run ", 0) == 0 && msg.find("failed") == std::string::npos &&
          msg.find("rejected") == std::string::npos) {
        return;
      }
      if (msg.rfind("registered", 0) == 0 || msg.rfind("draining", 0) == 0) return;
      worker_log_errors.fetch_add(1);
      std::fprintf(stderr, "  worker: %s\n", msg.c_str());
    };
    daemons.push_back(std::make_unique<kvgrid::WorkerDaemon>(wopt, executors.back().get()));
  }
  std::vector<std::thread> threads;
  for (auto& d : daemons) threads.emplace_back([&d] { (void)d->Run(); });
  // Let every worker register and start long-polling before the clock starts.
  while (true) {
    auto workers = (*server)->store().ListWorkers();
    if (workers.ok() && static_cast<int>(workers->size()) >= f.workers) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  const std::string grid = absl::StrCat(
      "name: load-test\n"
      "model: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: float32}\n"
      "device: cpu\n"
      "datasets:\n"
      "  - {name: wikitext-2-raw-v1, split: test, samples: ", f.runs, "}\n",
      "workloads:\n"
      "  noop: {ms: ", f.noop_ms, "}\n",
      "grid:\n"
      "  policy:\n"
      "    - {name: full}\n");
  kvgrid::ClientOptions client_opt;
  client_opt.address = (*server)->address();
  client_opt.token = copt.token;
  auto client = kvgrid::CoordinatorClient::Connect(client_opt);
  if (!client.ok()) return 1;
  const auto t_submit = std::chrono::steady_clock::now();
  auto submitted = (*client)->Submit(grid, "load-test.yaml", /*force=*/true);
  const auto t_stored = std::chrono::steady_clock::now();
  if (!submitted.ok()) {
    std::fprintf(stderr, "load_test: submit: %s\n", submitted.status().ToString().c_str());
    return 1;
  }
  kvgrid::ProgressView progress;
  while (true) {
    auto p = (*server)->store().Progress("load-test");
    if (p.ok()) {
      progress = *p;
      if (p->planned == 0 && p->running == 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto t_done = std::chrono::steady_clock::now();
  for (auto& d : daemons) d->Drain();
  for (auto& t : threads) t.join();

  // Aggregate.
  kvgrid::WorkerDaemonStats total;
  for (auto& d : daemons) {
    auto s = d->stats();
    total.leases += s.leases;
    total.accepted += s.accepted;
    total.rejected += s.rejected;
    total.failed += s.failed;
    total.reconnects += s.reconnects;
    total.heartbeats += s.heartbeats;
    total.lease_rpc_ms += s.lease_rpc_ms;
    total.complete_rpc_ms += s.complete_rpc_ms;
    total.execute_ms += s.execute_ms;
  }
  auto& store = (*server)->store();
  auto count = [&](const std::string& sql) -> int64_t {
    auto t = store.ExecuteReadOnlyQuery(sql);
    if (!t.ok() || t->rows.empty()) return -1;
    return std::atoll(t->rows[0][0].text.c_str());
  };
  const int64_t records = count("SELECT COUNT(*) FROM result_records");
  const int64_t multi = count(
      "SELECT COUNT(*) FROM (SELECT run_id FROM result_records GROUP BY run_id HAVING COUNT(*) > 1)");
  const auto& counters = (*server)->service().counters();

  const double wall_ms = Ms(t_done - t_stored);
  const double submit_ms = Ms(t_stored - t_submit);
  const double throughput = f.runs / (wall_ms / 1000.0);
  // Worker-time not spent in the executor, per run: what scheduling costs a run.
  const double overhead_ms = (wall_ms * f.workers - total.execute_ms) / f.runs;
  const bool exactly_once = progress.done == f.runs && records == f.runs && multi == 0;
  const bool locked = g_sqlite_busy.load() > 0 || g_sqlite_locked_messages.load() > 0 ||
                      counters.database_locked.load() > 0;

  nlohmann::json j = {
      {"runs", f.runs},
      {"workers", f.workers},
      {std::string(kvgrid::metric::kNoopMs.name), f.noop_ms},
      {"db", f.db},
      {"submit_ms", submit_ms},
      {"grid_wall_ms", wall_ms},
      {"throughput_runs_per_s", throughput},
      {"dispatch_overhead_ms_per_run", wall_ms / f.runs - static_cast<double>(f.noop_ms) / f.workers},
      {"worker_time_outside_executor_ms_per_run", overhead_ms},
      {"lease_rpc_ms_mean", total.leases > 0 ? total.lease_rpc_ms / total.leases : 0},
      {"complete_rpc_ms_mean",
       total.accepted + total.rejected > 0
           ? total.complete_rpc_ms / (total.accepted + total.rejected)
           : 0},
      {"runs_done", progress.done},
      {"runs_failed", progress.failed},
      {"result_records", records},
      {"exactly_once", exactly_once},
      {"leases", total.leases},
      {"accepted", total.accepted},
      {"rejected", total.rejected},
      {"heartbeats", total.heartbeats},
      {"coordinator_store_errors", counters.store_errors.load()},
      {"sqlite_busy_events", g_sqlite_busy.load()},
      {"sqlite_database_is_locked_messages", g_sqlite_locked_messages.load()},
      {"database_locked", locked},
      {"worker_unusual_log_lines", worker_log_errors.load()},
  };
  if (f.json) {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("kvgrid load test: %d noop runs (noop_ms=%d), %d workers on loopback, db %s\n",
                f.runs, f.noop_ms, f.workers, f.db.c_str());
    std::printf("  submit (parse, expand, store %d runs):   %.1f ms\n", f.runs, submit_ms);
    std::printf("  all runs done after:                    %.1f ms\n", wall_ms);
    std::printf("  coordinator throughput:                 %.1f runs/s\n", throughput);
    std::printf("  dispatch overhead per run (coordinator wall time / runs): %.2f ms\n",
                wall_ms / f.runs - static_cast<double>(f.noop_ms) / f.workers);
    std::printf("  worker-time outside the executor per run (incl. queueing): %.2f ms\n",
                overhead_ms);
    std::printf("  mean LeaseRun latency (granted):        %.2f ms\n",
                j["lease_rpc_ms_mean"].get<double>());
    std::printf("  mean CompleteRun latency:               %.2f ms\n",
                j["complete_rpc_ms_mean"].get<double>());
    std::printf("  runs done %d, failed %d; result records %lld; exactly once: %s\n",
                progress.done, progress.failed, static_cast<long long>(records),
                exactly_once ? "yes" : "NO");
    std::printf("  results accepted %lld, rejected %lld, heartbeats %lld\n",
                static_cast<long long>(total.accepted), static_cast<long long>(total.rejected),
                static_cast<long long>(total.heartbeats));
    std::printf("  SQLITE_BUSY events %lld, \"database is locked\" %lld, store errors %lld: %s\n",
                static_cast<long long>(g_sqlite_busy.load()),
                static_cast<long long>(g_sqlite_locked_messages.load()),
                static_cast<long long>(counters.store_errors.load()),
                locked ? "DATABASE WAS LOCKED" : "never locked");
  }
  daemons.clear();
  (*server)->Shutdown();
  if (!tmpdir.empty()) {
    std::string cmd = "rm -rf '" + tmpdir + "'";
    (void)std::system(cmd.c_str());
  }
  return exactly_once && !locked ? 0 : 1;
}
