// `kvgrid worker`: a worker daemon. Registers its device with the coordinator, pulls runs, runs
// them with the engine (or the torch-free noop executor for scheduler tests), heartbeats from its
// own thread and reports every result. SIGTERM/SIGINT: finish the current run (within
// --drain-timeout) or hand it back, then exit; a second signal hands back at once.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <regex>

#include "absl/strings/str_cat.h"
#include "cli/command_registry.h"
#include "common/cache_dir.h"
#include "proto/rpc_common.h"
#include "worker/daemon/noop_executor.h"
#include "worker/daemon/signal_watcher.h"
#include "worker/daemon/worker_daemon.h"
#include "worker/run_executor.h"

namespace kvgrid::cli {
namespace {

struct WorkerFlags {
  std::string coordinator;
  std::string device = "cpu";
  std::string token_file;
  std::string tls_ca;
  std::string tls_server_name;
  std::string executor = "engine";
  std::string worker_id;
  int max_runs = 0;
  double exit_when_idle_s = 0;
  double drain_timeout_s = 20;
  int64_t lease_wait_ms = 10000;
  int64_t backoff_max_ms = 10000;
  std::string spool_dir;
};

int RunWorker(const WorkerFlags& f) {
  static const std::regex kDevice("^(cpu|cuda|cuda:[0-9]+)$");
  if (!std::regex_match(f.device, kDevice)) {
    std::fprintf(stderr, "kvgrid worker: error: --device must be cpu, cuda or cuda:N, got '%s'\n",
                 f.device.c_str());
    return 2;
  }
  auto token = rpc::ResolveToken(f.token_file);
  if (!token.ok()) {
    std::fprintf(stderr, "kvgrid worker: error: %s\n", std::string(token.status().message()).c_str());
    return 1;
  }
  if (token->empty()) {
    std::fprintf(stderr,
                 "kvgrid worker: error: no bearer token: pass --token-file F or set "
                 "$KVGRID_TOKEN_FILE (or $KVGRID_TOKEN) to the coordinator's token\n");
    return 1;
  }
  std::unique_ptr<RunExecutor> executor;
  if (f.executor == "noop") {
    executor = MakeNoopExecutor(f.device);
  } else {
    executor = MakeEngineExecutor(f.device);
    if (executor == nullptr) {
      std::fprintf(stderr, "kvgrid worker: error: the engine executor is not available in this "
                           "build (use --executor noop for scheduler tests)\n");
      return 1;
    }
  }

  WorkerDaemonOptions opt;
  opt.coordinator = rpc::ResolveCoordinatorAddress(f.coordinator);
  opt.token = *token;
  opt.security.tls_ca_file = rpc::ResolveTlsCa(f.tls_ca);
  opt.security.tls_server_name = f.tls_server_name;
  opt.device = f.device;
  opt.worker_id = f.worker_id;
  opt.max_runs = f.max_runs;
  opt.exit_when_idle_ms = static_cast<int64_t>(f.exit_when_idle_s * 1000);
  opt.drain_timeout_ms = static_cast<int64_t>(f.drain_timeout_s * 1000);
  opt.lease_wait_ms = f.lease_wait_ms;
  opt.max_backoff_ms = f.backoff_max_ms;
  opt.spool_dir = f.spool_dir.empty() ? KvgridCacheDir() + "/worker-spool" : f.spool_dir;
  auto daemon = std::make_unique<WorkerDaemon>(opt, executor.get());

  SignalWatcher signals([&](int signo, int count) {
    std::fprintf(stderr, "[worker %s] %s received\n", daemon->worker_id().c_str(),
                 signo == SIGINT ? "SIGINT" : "SIGTERM");
    if (count == 1) {
      daemon->Drain();
    } else {
      // At once: the running run is handed back, a result the coordinator has not taken stays
      // in the spool for the next start.
      daemon->Stop();
    }
  });

  absl::Status st = daemon->Run();
  auto stats = daemon->stats();
  std::fprintf(stderr,
               "[worker %s] exiting: %lld leased, %lld accepted, %lld rejected, %lld failed, "
               "%lld handed back\n",
               daemon->worker_id().c_str(), static_cast<long long>(stats.leases),
               static_cast<long long>(stats.accepted), static_cast<long long>(stats.rejected),
               static_cast<long long>(stats.failed), static_cast<long long>(stats.released));
  if (daemon->execution_abandoned()) {
    // The handed-back run is still executing on the executor thread: do not wait for it.
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(st.ok() ? 0 : 1);
  }
  if (!st.ok()) {
    std::fprintf(stderr, "kvgrid worker: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}

std::function<int()> SetupWorker(CLI::App& app) {
  auto f = std::make_shared<WorkerFlags>();
  CLI::App* sub = app.add_subcommand(
      "worker", "Run experiment runs leased from a coordinator (one worker per device)");
  sub->add_option("--coordinator", f->coordinator,
                  "coordinator address (default $KVGRID_COORDINATOR, else 127.0.0.1:50051)");
  sub->add_option("--device", f->device, "cpu | cuda | cuda:N")->capture_default_str();
  sub->add_option("--token-file", f->token_file,
                  "bearer token file (default $KVGRID_TOKEN_FILE, else $KVGRID_TOKEN)");
  sub->add_option("--tls-ca", f->tls_ca, "PEM CA certificate: connect with TLS (default $KVGRID_TLS_CA)");
  sub->add_option("--tls-server-name", f->tls_server_name,
                  "name to verify in the coordinator's certificate (when it differs from ADDR)");
  sub->add_option("--executor", f->executor, "engine (the model) | noop (scheduler tests)")
      ->capture_default_str()
      ->check(CLI::IsMember({"engine", "noop"}));
  sub->add_option("--worker-id", f->worker_id, "worker identity (default HOST:PID:DEVICE)");
  sub->add_option("--max-runs", f->max_runs, "exit after this many runs (0 = no limit)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--exit-when-idle", f->exit_when_idle_s,
                  "exit after this many seconds without work (0 = never; batch jobs)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--spool-dir", f->spool_dir,
                  "finished results wait here (fsynced) until the coordinator takes them; offered "
                  "again at the next start (default $KVGRID_CACHE/worker-spool, ~/.cache/kvgrid/worker-spool)");
  sub->add_option("--drain-timeout", f->drain_timeout_s,
                  "on SIGTERM: seconds to finish the current run before handing it back")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--lease-wait-ms", f->lease_wait_ms, "LeaseRun long-poll length (ms)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--backoff-max-ms", f->backoff_max_ms,
                  "longest reconnect back-off (ms) while the coordinator is away")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  return [f]() { return RunWorker(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(worker, "worker", SetupWorker);

}  // namespace kvgrid::cli
