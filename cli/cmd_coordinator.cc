// `kvgrid coordinator`: serves the Coordinator gRPC service over the SQLite results database
// (the only process that opens it). Listens on 127.0.0.1:50051 unless told otherwise; every call
// must carry the bearer token; TLS with --tls-cert/--tls-key. SIGINT/SIGTERM stop it cleanly
// (restarting it resumes every unfinished experiment); a second signal exits at once.
#include <CLI/CLI.hpp>

#include <csignal>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/command_registry.h"
#include "coordinator/server.h"
#include "proto/rpc_common.h"
#include "worker/daemon/signal_watcher.h"

namespace kvgrid::cli {
namespace {

struct CoordinatorFlags {
  std::string db;
  std::string listen = "127.0.0.1:50051";
  std::string token_file;
  std::string tls_cert, tls_key;
  int64_t lease_ms = 30000;
  int64_t heartbeat_ms = 5000;
  int64_t max_wait_ms = 10000;
  bool quiet = false;
};

void LogLine(const std::string& msg) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  std::fprintf(stderr, "%s [coordinator] %s\n", buf, msg.c_str());
  std::fflush(stderr);
}

bool IsLoopback(const std::string& listen) {
  return absl::StartsWith(listen, "127.") || absl::StartsWith(listen, "localhost:") ||
         absl::StartsWith(listen, "[::1]:") || absl::StartsWith(listen, "unix:");
}

int RunCoordinator(const CoordinatorFlags& f) {
  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "kvgrid coordinator: error: %s\n", std::string(st.message()).c_str());
    return 1;
  };
  auto token = rpc::ResolveToken(f.token_file);
  if (!token.ok()) return fail(token.status());
  std::string token_value = *token;
  if (token_value.empty()) {
    // No token configured: make one and leave it next to the database (mode 0600) for the
    // workers and clients of this machine; it never appears on a command line.
    const std::string path = f.db + ".token";
    auto existing = rpc::ReadTokenFile(path);
    if (existing.ok()) {
      token_value = *existing;
    } else {
      token_value = rpc::GenerateToken();
      if (absl::Status st = rpc::WriteTokenFile(path, token_value); !st.ok()) return fail(st);
    }
    LogLine(absl::StrCat("no --token-file or $KVGRID_TOKEN: using the token in ", path,
                         " (give workers and clients --token-file ", path, ")"));
  }
  if ((f.tls_cert.empty() != f.tls_key.empty())) {
    std::fprintf(stderr, "kvgrid coordinator: error: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (!IsLoopback(f.listen) && f.tls_cert.empty()) {
    LogLine(absl::StrCat("warning: listening on ", f.listen,
                         " without TLS: the bearer token and results travel in clear text "
                         "(use --tls-cert/--tls-key)"));
  }

  CoordinatorOptions opt;
  opt.db_path = f.db;
  opt.listen = f.listen;
  opt.token = token_value;
  opt.tls_cert_file = f.tls_cert;
  opt.tls_key_file = f.tls_key;
  opt.lease_ms = f.lease_ms;
  opt.heartbeat_ms = f.heartbeat_ms;
  opt.max_wait_ms = f.max_wait_ms;
  if (!f.quiet) opt.log = LogLine;

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  SignalWatcher signals([&](int signo, int count) {
    if (count >= 2) {  // a second signal: now, whatever the database is doing (WAL: committed is safe)
      LogLine("second signal: exiting now");
      std::fflush(stderr);
      std::_Exit(130);
    }
    LogLine(absl::StrCat(signo == SIGINT ? "SIGINT" : "SIGTERM", ": shutting down (again to exit at once)"));
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    cv.notify_all();
  });

  auto server = CoordinatorServer::Start(opt);
  if (!server.ok()) return fail(server.status());
  // Machine-readable line for scripts and tests (the port matters with --listen HOST:0).
  std::printf("kvgrid coordinator listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stop; });
  }
  (*server)->Shutdown();
  return 0;
}

std::function<int()> SetupCoordinator(CLI::App& app) {
  auto f = std::make_shared<CoordinatorFlags>();
  CLI::App* sub = app.add_subcommand(
      "coordinator", "Serve experiments to worker daemons over gRPC (owns the SQLite database)");
  sub->add_option("--db", f->db, "SQLite results database (created if missing)")->required();
  sub->add_option("--listen", f->listen, "address to listen on (HOST:PORT; port 0 = any free)")
      ->capture_default_str();
  sub->add_option("--token-file", f->token_file,
                  "file holding the bearer token (default $KVGRID_TOKEN_FILE, else $KVGRID_TOKEN, "
                  "else DB.token, generated if missing)");
  sub->add_option("--tls-cert", f->tls_cert, "PEM certificate: serve TLS (with --tls-key)");
  sub->add_option("--tls-key", f->tls_key, "PEM private key of --tls-cert");
  sub->add_option("--lease-ms", f->lease_ms, "lease lifetime without a heartbeat (ms)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--heartbeat-ms", f->heartbeat_ms,
                  "heartbeat interval asked of workers (ms, at most half the lease)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-wait-ms", f->max_wait_ms, "longest LeaseRun long-poll (ms)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_flag("--quiet", f->quiet, "no log lines on stderr");
  return [f]() { return RunCoordinator(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(coordinator, "coordinator", SetupCoordinator);

}  // namespace kvgrid::cli
