// The worker daemon: registers with the coordinator (device, GPU name and memory, software
// versions from RunExecutor::Capabilities()), pulls runs with LeaseRun (long-poll), executes them
// on one executor thread, heartbeats from its own thread (independent of the model work; carries
// progress and learns whether the lease is still wanted), and reports results.
//
// Robustness:
//  - The coordinator going away: every call is retried with exponential back-off and jitter;
//    an unknown worker (coordinator with a new database) re-registers.
//  - A computed result is never dropped: CompleteRun is retried until the coordinator answers
//    (accepted, or rejected for good: duplicate / cancelled / superseded) — through outages of
//    the coordinator and of its database (disk full, I/O errors answer UNAVAILABLE). With a
//    spool_dir the request is first written there (fsynced) and removed once answered; a daemon
//    that has to stop before that (drain timeout, Stop) leaves it, and the next daemon with the
//    same spool_dir offers it again at start (the coordinator accepts it exactly once).
//  - Executor failures become FailRun (retryable unless the error is InvalidArgument).
//  - Drain() (SIGTERM): no new leases; the current run is finished if it ends within
//    drain_timeout_ms, otherwise handed back (ReleaseRun, costs no attempt) and Run() returns.
//    Stop() (second SIGTERM) hands back at once.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "proto/kvgrid.grpc.pb.h"
#include "proto/rpc_common.h"
#include "worker/run_executor.h"

namespace kvgrid {

struct WorkerDaemonOptions {
  std::string coordinator = rpc::kDefaultCoordinatorAddress;
  std::string token;
  rpc::ClientSecurity security;
  std::string device = "cpu";         // cpu | cuda | cuda:N: which runs this worker takes
  std::string worker_id;              // "" = host:pid:device
  int max_runs = 0;                   // exit after this many runs (0 = no limit)
  int64_t exit_when_idle_ms = 0;      // exit after this long without work (0 = never)
  int64_t lease_wait_ms = 10000;      // long-poll length asked for (the coordinator caps it)
  int64_t rpc_timeout_ms = 15000;     // per call, on top of the long-poll wait
  int64_t initial_backoff_ms = 200;   // reconnect back-off: doubles up to max, with jitter
  int64_t max_backoff_ms = 10000;
  int64_t drain_timeout_ms = 20000;   // Drain(): finish the current run within this, else hand back;
                                      // also bounds offering a finished result while draining
  std::string spool_dir;              // "" = results kept in memory only
  bool own_connection = true;         // a TCP connection of its own (several daemons per process)
  std::function<void(const std::string&)> log;  // null: stderr with a "[worker ID]" prefix
};

struct WorkerDaemonStats {
  int64_t leases = 0;               // runs leased
  int64_t accepted = 0;             // results accepted by the coordinator
  int64_t rejected = 0;             // results rejected (duplicate, cancelled, superseded)
  int64_t failed = 0;               // FailRun reports
  int64_t released = 0;             // runs handed back
  int64_t reconnects = 0;           // outages survived
  int64_t heartbeats = 0;
  int64_t lease_invalidations = 0;  // heartbeats answered "lease no longer valid"
  double lease_rpc_ms = 0;          // time in LeaseRun calls that returned a run
  double complete_rpc_ms = 0;       // time in CompleteRun (with retries)
  double execute_ms = 0;            // time in the executor
};

class WorkerDaemon {
 public:
  // `executor` must outlive the daemon.
  WorkerDaemon(WorkerDaemonOptions options, RunExecutor* executor);
  ~WorkerDaemon();  // joins its threads (waits for an abandoned execution to end)
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Runs until drained, stopped, max_runs reached or idle for exit_when_idle_ms. Errors only for
  // what retrying cannot fix: a refused token, an invalid registration.
  absl::Status Run();

  void Drain();  // thread-safe; not async-signal-safe (call from a signal-watching thread)
  void Stop();   // thread-safe

  // True when Run() returned while the executor was still busy with a handed-back run
  // (a process should then exit without waiting for it).
  bool execution_abandoned() const { return execution_abandoned_.load(); }
  const std::string& worker_id() const { return worker_id_; }
  WorkerDaemonStats stats() const;

 private:
  struct CurrentLease {
    std::string lease_id;
    int64_t run_id = 0;
    int attempt = 0;
    std::string run_key;
    double progress = 0;
    std::string phase;
    bool valid = true;
  };

  absl::Status Register();
  void ExecuteLease(const v1::LeaseRunResponse& leased);
  void ReportResult(const v1::Lease& lease, const std::string& run_key, const RunResult& result);
  // Offers `req` until answered; false when the daemon had to stop first (the spool file stays).
  bool OfferResult(const v1::CompleteRunRequest& req, const std::string& run_key,
                   const std::string& spool_file);
  void OfferSpooledResults();
  void ReportFailure(const v1::Lease& lease, const std::string& run_key,
                     const absl::Status& error);
  bool HandBack(const v1::Lease& lease, const std::string& reason);
  void HeartbeatLoop();
  void ExecLoop();
  // Sleeps up to `ms`; returns early (false) when stopping (or draining if `wake_on_drain`).
  bool Sleep(int64_t ms, bool wake_on_drain);
  int64_t NextBackoff();
  void ResetBackoff();
  void NoteOutage(const grpc::Status& st, const char* what);
  void NoteRecovered();
  void Log(const std::string& msg) const;

  WorkerDaemonOptions options_;
  RunExecutor* executor_;
  std::string worker_id_;
  nlohmann::json capabilities_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // stop/drain/state changes
  bool stop_ = false;
  bool drain_ = false;
  bool quit_heartbeat_ = false;
  int64_t drain_started_ms_ = 0;
  bool registered_ = false;
  int64_t register_generation_ = 0;  // bumped by each successful registration
  int64_t heartbeat_ms_ = 5000;
  int64_t max_wait_ms_ = 10000;
  std::optional<CurrentLease> current_;
  grpc::ClientContext* lease_ctx_ = nullptr;  // in-flight LeaseRun, cancelled by Drain/Stop
  WorkerDaemonStats stats_;
  int64_t backoff_step_ = 0;
  bool in_outage_ = false;
  std::atomic<bool> execution_abandoned_{false};

  // Executor thread: one job at a time.
  std::mutex exec_mu_;
  std::condition_variable exec_cv_;
  bool exec_quit_ = false;
  bool job_pending_ = false;
  bool job_done_ = false;
  RunSpec job_spec_;
  std::optional<absl::StatusOr<RunResult>> job_result_;

  std::thread exec_thread_;
  std::thread heartbeat_thread_;
};

}  // namespace kvgrid
