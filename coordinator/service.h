// The Coordinator gRPC service (proto/kvgrid.proto) on top of the SQLite Store.
//
// Every handler first checks the bearer token (UNAUTHENTICATED otherwise), then maps the request
// to one Store call; the store makes each of them a single transaction. The check is the first
// line of each handler (KV_AUTH in service.cc, one Authenticate()) because gRPC 1.51 offers no
// place before the handlers on a plaintext port: InsecureServerCredentials aborts on
// SetAuthMetadataProcessor (GPR_ASSERT), and a server interceptor cannot refuse a call before
// its handler runs (no server-side hijacking). LeaseRun is a long-poll:
// it waits on a condition variable that submissions, failures, releases and lease expiries
// signal, and re-checks at least every `poll_ms` (runs in retry back-off become claimable by time).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "proto/kvgrid.grpc.pb.h"
#include "storage/store.h"

namespace kvgrid {

struct CoordinatorServiceOptions {
  std::string token;                 // required: every RPC must present it
  int64_t lease_ms = 30000;          // lease lifetime without a heartbeat
  int64_t heartbeat_ms = 5000;       // told to workers at registration
  int64_t max_wait_ms = 10000;       // longest LeaseRun long-poll
  int64_t poll_ms = 200;             // long-poll re-check interval
  std::function<void(const std::string&)> log;  // null: silent
};

struct CoordinatorCounters {
  std::atomic<int64_t> leases_granted{0};
  std::atomic<int64_t> results_accepted{0};
  std::atomic<int64_t> results_rejected{0};
  std::atomic<int64_t> failures_reported{0};
  std::atomic<int64_t> releases{0};
  std::atomic<int64_t> unauthenticated{0};
  std::atomic<int64_t> store_errors{0};        // any store call that returned an internal error
  std::atomic<int64_t> database_locked{0};     // ... whose message mentions locked/busy
};

class CoordinatorService final : public kvgrid::v1::Coordinator::Service {
 public:
  CoordinatorService(Store* store, CoordinatorServiceOptions options);

  // Wakes long-polls (new claimable work may exist).
  void NotifyWork();
  // Makes every pending and future long-poll return at once (server shutting down).
  void BeginShutdown();
  const CoordinatorCounters& counters() const { return counters_; }

  grpc::Status Submit(grpc::ServerContext* ctx, const v1::SubmitRequest* req,
                      v1::SubmitResponse* resp) override;
  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                      v1::StatusResponse* resp) override;
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::CancelRequest* req,
                      v1::CancelResponse* resp) override;
  grpc::Status Results(grpc::ServerContext* ctx, const v1::ResultsRequest* req,
                       v1::ResultsResponse* resp) override;
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                              v1::RegisterWorkerResponse* resp) override;
  grpc::Status LeaseRun(grpc::ServerContext* ctx, const v1::LeaseRunRequest* req,
                        v1::LeaseRunResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status CompleteRun(grpc::ServerContext* ctx, const v1::CompleteRunRequest* req,
                           v1::CompleteRunResponse* resp) override;
  grpc::Status FailRun(grpc::ServerContext* ctx, const v1::FailRunRequest* req,
                       v1::FailRunResponse* resp) override;
  grpc::Status ReleaseRun(grpc::ServerContext* ctx, const v1::ReleaseRunRequest* req,
                          v1::ReleaseRunResponse* resp) override;
  grpc::Status UnregisterWorker(grpc::ServerContext* ctx, const v1::UnregisterWorkerRequest* req,
                                v1::UnregisterWorkerResponse* resp) override;

 private:
  grpc::Status Authenticate(grpc::ServerContext* ctx, const char* method);
  grpc::Status StoreError(const absl::Status& status, const char* method);
  void Log(const std::string& msg) const;

  Store* store_;
  CoordinatorServiceOptions options_;
  CoordinatorCounters counters_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  uint64_t work_generation_ = 0;
  bool shutting_down_ = false;
};

}  // namespace kvgrid
