// `kvgrid run GRID.yaml [--workers N] [--db FILE]`: the all-in-one mode. Starts an embedded
// coordinator on a loopback port (random token, never written anywhere), N in-process worker
// daemons (each with its own executor, connection and heartbeat thread), submits the grid through
// the same gRPC path as `kvgrid submit`, shows progress, then prints the markdown report.
// Resubmitting the same grid to the same database reuses finished runs (--force reruns them).
#include <CLI/CLI.hpp>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/command_registry.h"
#include "coordinator/client.h"
#include "coordinator/grid/grid.h"
#include "coordinator/results_format.h"
#include "coordinator/server.h"
#include "model/hub/hf_hub.h"
#include "proto/rpc_common.h"
#include "reports/report.h"
#include "storage/store.h"
#include "worker/daemon/noop_executor.h"
#include "worker/daemon/signal_watcher.h"
#include "worker/daemon/worker_daemon.h"
#include "worker/run_executor.h"
#include "common/host_name.h"

namespace kvgrid::cli {
namespace {

struct RunFlags {
  std::string grid;
  int workers = 1;
  std::string db;
  std::string device;
  std::string executor = "engine";
  std::string output;
  std::string plots_dir;
  bool force = false;
  bool verbose = false;
  double store_timeout_s = 600;
};

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "kvgrid run: error: %s\n", std::string(st.message()).c_str());
  return 1;
}

// The device local workers advertise: a CUDA device if the grid asks for one, else the CPU
// ("auto" runs go to any worker).
std::string DeviceForGrid(const Grid& grid) {
  for (const auto& spec : grid.runs) {
    if (absl::StartsWith(spec.device, "cuda")) return spec.device;
  }
  return "cpu";
}

// Fetches (or finds in the Hugging Face cache) every Hub model the grid names, once, before
// anything is stored: a machine that cannot reach the Hub learns it here, with the way out,
// instead of from every run failing. Local directories and random:* models need nothing.
absl::Status PrefetchModels(const Grid& grid) {
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& spec : grid.runs) {
    const std::string& id = spec.model.id;
    if (absl::StartsWith(id, "random:") || std::filesystem::is_directory(id)) continue;
    if (!seen.insert({id, spec.model.revision}).second) continue;
    std::fprintf(stderr, "kvgrid run: resolving %s@%s (Hugging Face cache / $HF_ENDPOINT)\n",
                 id.c_str(), spec.model.revision.c_str());
    auto snapshot = ResolveModelSnapshot(id, spec.model.revision, HubOptions::FromEnv());
    if (!snapshot.ok()) {
      return absl::Status(
          snapshot.status().code(),
          absl::StrCat("model ", id, "@", spec.model.revision, " is not available: ",
                       snapshot.status().message(),
                       "\n  Without access to the Hugging Face Hub, run the offline demo instead "
                       "(a random Pythia-70M-shaped model and the wikitext copy shipped in the "
                       "repository; its PPL is meaningless, its costs are real):\n"
                       "    kvgrid run experiments/offline-demo.yaml\n"
                       "  or point the grid's model.id at a local checkpoint directory."));
    }
  }
  return absl::OkStatus();
}

// The id prefix of this machine's `kvgrid run` workers: "local-HOST-" then "PID-I:DEVICE".
std::string LocalWorkerPrefix() { return absl::StrCat("local-", HostName(), "-"); }

// Runs left running by an earlier `kvgrid run` on this machine whose process is gone (killed,
// or it exited while the database refused writes) are handed back now instead of waiting for
// their leases to expire. Their finished results, if any, come from the spool and are still
// accepted (once). Returns how many were handed back.
int ReleaseStaleLocalLeases(Store& store, const std::string& experiment) {
  auto runs = store.ListRuns(experiment);
  if (!runs.ok()) return 0;
  const std::string prefix = LocalWorkerPrefix();
  int released = 0;
  for (const RunView& r : *runs) {
    if (r.status != "running" || r.lease_id.empty() || !absl::StartsWith(r.worker_id, prefix)) continue;
    int64_t pid = 0;
    std::string rest = r.worker_id.substr(prefix.size());
    if (!absl::SimpleAtoi(rest.substr(0, rest.find('-')), &pid) || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still alive
    if (store.ReleaseRun(r.lease_id, rpc::NowMs()).ok()) ++released;
  }
  return released;
}

v1::ExperimentStatus ToStatus(const ProgressView& p) {
  v1::ExperimentStatus e;
  e.set_name(p.experiment);
  e.set_status(p.status);
  e.set_total(p.total);
  e.set_planned(p.planned);
  e.set_running(p.running);
  e.set_done(p.done);
  e.set_failed(p.failed);
  e.set_cancelled(p.cancelled);
  return e;
}

int RunAllInOne(const RunFlags& f) {
  auto grid = ParseGridFile(f.grid);
  if (!grid.ok()) return Fail(grid.status());
  for (const auto& note : grid->skipped) {
    std::fprintf(stderr, "kvgrid run: note: %s\n", note.c_str());
  }
  const std::string db = f.db.empty() ? DefaultDbPath() : f.db;
  const std::string device = f.device.empty() ? DeviceForGrid(*grid) : f.device;
  const int n_workers = std::max(1, f.workers);

  if (f.executor == "engine") {
    if (absl::Status st = PrefetchModels(*grid); !st.ok()) return Fail(st);
  }
  // Executors first: an engine that cannot be built should fail before anything is stored.
  std::vector<std::unique_ptr<RunExecutor>> executors;
  for (int i = 0; i < n_workers; ++i) {
    // threads: 0 in the grid = this machine's cores shared among the local workers.
    const int share = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / n_workers);
    auto ex = f.executor == "noop" ? MakeNoopExecutor(device) : MakeEngineExecutor(device, share);
    if (ex == nullptr) {
      return Fail(absl::UnavailableError(
          "the engine executor is not available in this build (use --executor noop)"));
    }
    executors.push_back(std::move(ex));
  }

  auto log = [&](const std::string& msg) {
    if (f.verbose) std::fprintf(stderr, "[kvgrid run] %s\n", msg.c_str());
  };
  CoordinatorOptions copt;
  copt.db_path = db;
  copt.listen = "127.0.0.1:0";
  copt.token = rpc::GenerateToken();
  copt.lease_ms = 60000;
  copt.heartbeat_ms = 2000;
  copt.max_wait_ms = 1000;
  copt.log = log;
  auto server = CoordinatorServer::Start(copt);
  if (!server.ok()) return Fail(server.status());

  std::atomic<bool> interrupted{false};
  std::vector<std::unique_ptr<WorkerDaemon>> daemons;
  for (int i = 0; i < n_workers; ++i) {
    WorkerDaemonOptions wopt;
    wopt.coordinator = (*server)->address();
    wopt.token = copt.token;
    wopt.device = device;
    wopt.worker_id = absl::StrCat(LocalWorkerPrefix(), ::getpid(), "-", i, ":", device);
    wopt.lease_wait_ms = 1000;
    wopt.drain_timeout_ms = 0;
    wopt.spool_dir = db + ".spool";  // results the database could not take yet survive an exit
    wopt.log = log;
    daemons.push_back(std::make_unique<WorkerDaemon>(wopt, executors[i].get()));
  }
  SignalWatcher signals([&](int, int count) {
    interrupted.store(true);
    if (count >= 2) {
      // A second signal ends the process now, whatever the database is doing: committed results
      // are safe (WAL), results not yet taken wait in the spool for the next run.
      std::fprintf(stderr, "\nkvgrid run: second interrupt: exiting now (results not yet stored "
                           "wait in %s.spool for the next `kvgrid run`)\n", db.c_str());
      std::fflush(stderr);
      std::_Exit(130);
    }
    std::fprintf(stderr, "\nkvgrid run: interrupted; handing back running runs (they resume "
                         "with the next `kvgrid run` of this grid on %s; interrupt again to exit "
                         "at once)\n", db.c_str());
    for (auto& d : daemons) d->Drain();
  });
  std::vector<std::thread> threads;
  std::vector<absl::Status> worker_status(n_workers);
  std::atomic<int> workers_running{n_workers};
  for (int i = 0; i < n_workers; ++i) {
    threads.emplace_back([&, i] {
      worker_status[i] = daemons[i]->Run();
      workers_running.fetch_sub(1);
    });
  }

  // Submit through the same gRPC path as `kvgrid submit`.
  ClientOptions client_opt;
  client_opt.address = (*server)->address();
  client_opt.token = copt.token;
  auto client = CoordinatorClient::Connect(client_opt);
  absl::StatusOr<v1::SubmitResponse> submitted =
      client.ok() ? (*client)->Submit(grid->yaml, f.grid, f.force)
                  : absl::StatusOr<v1::SubmitResponse>(client.status());
  int rc = 0;
  if (!submitted.ok()) {
    rc = Fail(submitted.status());
  } else {
    if (int n = ReleaseStaleLocalLeases((*server)->store(), submitted->experiment()); n > 0) {
      std::fprintf(stderr, "kvgrid run: %d run(s) left running by an earlier `kvgrid run` that is gone: planned again\n", n);
    }
    // Counted from the database, not from what this submission changed: after an interrupted
    // run, runs still planned from before are to run too.
    auto counts = (*server)->store().Progress(submitted->experiment());
    const int already_done = counts.ok() ? counts->done : submitted->reused_done();
    const int to_run = counts.ok() ? counts->planned + counts->running
                                   : submitted->planned() + submitted->requeued();
    std::fprintf(stderr, "kvgrid run: %s: %d runs (%d to run, %d already done in %s), %d worker(s) on %s\n",
                 submitted->experiment().c_str(), submitted->total(), to_run, already_done,
                 db.c_str(), n_workers, device.c_str());
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    std::string last;
    while (!interrupted.load()) {
      auto progress = (*server)->store().Progress(submitted->experiment());
      if (!progress.ok()) {
        rc = Fail(progress.status());
        break;
      }
      v1::ExperimentStatus e = ToStatus(*progress);
      std::string line = ProgressLine(e);
      const StoreHealth health = (*server)->store().health();
      const int64_t now = rpc::NowMs();
      std::string key = line;  // a log (not a terminal) gets a line when this changes
      if (!health.ok) {
        absl::StrAppend(&line, " · ", StoreProblemLine(health.problem, health.since_ms, now));
        absl::StrAppend(&key, health.problem, (now - health.since_ms) / 60000);
        if (now - health.since_ms > static_cast<int64_t>(f.store_timeout_s * 1000)) {
          if (tty) std::fprintf(stderr, "\n");
          rc = Fail(absl::UnavailableError(absl::StrCat(
              "the results database has not accepted writes for ", (now - health.since_ms) / 1000,
              " s (--store-timeout ", f.store_timeout_s, " s): ", health.problem,
              ". Handing back; finished results not yet stored wait in ", db, ".spool and are "
              "offered again by the next `kvgrid run` of this grid, after you fix the cause")));
          break;
        }
      }
      if (tty) {
        std::fprintf(stderr, "\r%s\033[K", line.c_str());
      } else if (key != last) {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
      last = key;
      if (IsFinished(e)) {
        if (tty) std::fprintf(stderr, "\n");
        if (e.done() != e.total()) rc = 1;
        break;
      }
      if (workers_running.load() == 0) {
        rc = Fail(absl::AbortedError("every local worker stopped before the grid finished"));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 200 : 1000));
    }
    if (interrupted.load()) rc = 1;
  }
  for (auto& d : daemons) d->Drain();
  for (auto& t : threads) t.join();
  for (int i = 0; i < n_workers; ++i) {
    if (!worker_status[i].ok()) {
      std::fprintf(stderr, "kvgrid run: worker %d: %s\n", i,
                   std::string(worker_status[i].message()).c_str());
      rc = 1;
    }
  }
  if (submitted.ok()) {
    reports::ReportOptions ropt;
    ropt.plots_dir = f.plots_dir;
    ropt.db_path = db;
    auto report = reports::RenderExperimentReport((*server)->store(), submitted->experiment(), ropt);
    if (!report.ok()) {
      rc = Fail(report.status());
    } else if (!f.output.empty()) {
      std::ofstream out(f.output, std::ios::binary);
      out << *report;
      if (!out) {
        rc = Fail(absl::InternalError(f.output + ": cannot write the report"));
      } else {
        std::fprintf(stderr, "kvgrid run: report written to %s\n", f.output.c_str());
      }
    } else {
      std::fwrite(report->data(), 1, report->size(), stdout);
    }
  }
  (*server)->Shutdown();
  for (auto& d : daemons) {
    if (d->execution_abandoned()) {
      // A handed-back run is still executing in-process: exit without waiting for it.
      std::fflush(stdout);
      std::fflush(stderr);
      std::_Exit(rc == 0 ? 1 : rc);
    }
  }
  daemons.clear();
  return rc;
}

std::function<int()> SetupRun(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* sub = app.add_subcommand(
      "run", "Run a grid on this machine (embedded coordinator + local workers), then report");
  sub->add_option("grid", f->grid, "grid YAML file")->required();
  sub->add_option("--workers", f->workers, "local worker threads (each loads its own model)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  sub->add_option("--db", f->db, "SQLite results database (default $KVGRID_DB, else ./kvgrid.db)");
  sub->add_option("--device", f->device,
                  "device of the local workers (default: the grid's CUDA device if any, else cpu)");
  sub->add_option("--executor", f->executor, "engine | noop (scheduler tests)")
      ->capture_default_str()
      ->check(CLI::IsMember({"engine", "noop"}));
  sub->add_option("-o,--output", f->output, "write the markdown report here instead of stdout");
  sub->add_option("--plots", f->plots_dir, "also write SVG plots into this directory");
  sub->add_flag("--force", f->force, "rerun runs already finished in this database");
  sub->add_option("--store-timeout", f->store_timeout_s,
                  "seconds the database may refuse writes (disk full, I/O errors) before the run "
                  "hands back and exits non-zero")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("-v,--verbose", f->verbose, "log coordinator and worker events");
  return [f]() { return RunAllInOne(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(run, "run", SetupRun);

}  // namespace kvgrid::cli
