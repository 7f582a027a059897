// The coordinator process: owns the SQLite store (the only process that opens it), serves the
// Coordinator gRPC service, and runs the background thread that expires leases of silent workers
// and marks long-silent workers gone. Restarting it resumes every unfinished experiment: planned
// runs are claimable at once, runs left running by a dead coordinator keep their leases (their
// workers' heartbeats extend them) or expire normally.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/service.h"
#include "storage/store.h"

namespace grpc { class Server; }

namespace kvgrid {

struct CoordinatorOptions {
  std::string db_path;                  // SQLite file (created and migrated if needed)
  std::string listen = "127.0.0.1:50051";  // "127.0.0.1:0" picks a free port (see port())
  std::string token;                    // required, non-empty
  std::string tls_cert_file, tls_key_file;  // TLS when both are set
  int64_t lease_ms = 30000;
  int64_t heartbeat_ms = 5000;
  int64_t max_wait_ms = 10000;          // LeaseRun long-poll cap
  int64_t poll_ms = 200;                // long-poll re-check interval besides new-work wake-ups
  int64_t expire_interval_ms = 0;       // 0: min(1000, lease_ms / 4)
  int64_t worker_gone_ms = 0;           // 0: 3 * lease_ms without a heartbeat -> "gone"
  std::function<void(const std::string&)> log;  // null: silent
};

class CoordinatorServer {
 public:
  // Takes the database's coordinator lock (DB.lock; FailedPrecondition if another coordinator
  // holds it), opens the store, starts listening and the expiry thread.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(CoordinatorOptions options);
  ~CoordinatorServer();  // Shutdown()

  int port() const { return port_; }
  std::string address() const;  // host:port actually bound
  Store& store() { return *store_; }
  CoordinatorService& service() { return *service_; }

  // Stops accepting calls, ends long-polls, waits up to `grace_ms` for calls in flight, stops the
  // expiry thread and closes the store. Idempotent.
  void Shutdown(int64_t grace_ms = 2000);

 private:
  CoordinatorServer() = default;
  void ExpiryLoop();
  void Log(const std::string& msg) const;

  CoordinatorOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int lock_fd_ = -1;  // exclusive flock on DB.lock
  std::thread expiry_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool shut_down_ = false;
};

}  // namespace kvgrid
