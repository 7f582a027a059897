#include "coordinator/server.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "proto/rpc_common.h"

namespace kvgrid {

void CoordinatorServer::Log(const std::string& msg) const {
  if (options_.log) options_.log(msg);
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorOptions options) {
  if (options.db_path.empty()) return absl::InvalidArgumentError("coordinator: --db is required");
  if (options.token.empty()) {
    return absl::InvalidArgumentError(
        "coordinator: a bearer token is required (--token-file F or $KVGRID_TOKEN)");
  }
  if (options.lease_ms <= 0 || options.heartbeat_ms <= 0) {
    return absl::InvalidArgumentError("coordinator: lease and heartbeat intervals must be > 0");
  }
  if (options.heartbeat_ms * 2 > options.lease_ms) {
    return absl::InvalidArgumentError(absl::StrCat(
        "coordinator: heartbeat interval (", options.heartbeat_ms,
        " ms) must be at most half the lease (", options.lease_ms, " ms)"));
  }
  auto creds = rpc::MakeServerCredentials(options.tls_cert_file, options.tls_key_file);
  if (!creds.ok()) return creds.status();

  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->options_ = std::move(options);
  const CoordinatorOptions& opt = server->options_;
  // One coordinator per database: an exclusive lock on DB.lock, held for the server's life
  // (released by the kernel even after kill -9).
  const std::string lock_path = opt.db_path + ".lock";
  server->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (server->lock_fd_ < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(lock_path, ": cannot open the coordinator lock: ", std::strerror(errno)));
  }
  if (::flock(server->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = ::pread(server->lock_fd_, buf, sizeof(buf) - 1, 0);
    std::string holder = n > 0 ? std::string(buf, n) : "?";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return absl::FailedPreconditionError(absl::StrCat(
        opt.db_path, " is already served by another coordinator (pid ", holder,
        "); only one process may open the database"));
  }
  if (::ftruncate(server->lock_fd_, 0) == 0) {
    std::string pid = absl::StrCat(::getpid(), "\n");
    (void)::pwrite(server->lock_fd_, pid.data(), pid.size(), 0);
  }
  auto store = Store::Open(opt.db_path, OpenMode::kReadWrite);
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);

  CoordinatorServiceOptions sopt;
  sopt.token = opt.token;
  sopt.lease_ms = opt.lease_ms;
  sopt.heartbeat_ms = opt.heartbeat_ms;
  sopt.max_wait_ms = opt.max_wait_ms;
  sopt.poll_ms = opt.poll_ms;
  sopt.log = opt.log;
  server->service_ = std::make_unique<CoordinatorService>(server->store_.get(), sopt);

  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.AddListeningPort(opt.listen, *creds, &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "coordinator: cannot listen on ", opt.listen, " (address in use or not local?)"));
  }

  auto unfinished = server->store_->ListUnfinishedExperiments();
  if (unfinished.ok() && !unfinished->empty()) {
    std::string names;
    for (const auto& e : *unfinished) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", e.name, " (", e.done, "/", e.total,
                      " done, ", e.running, " running)");
    }
    server->Log(absl::StrCat("resuming ", unfinished->size(), " unfinished experiment(s): ",
                             names));
  }
  server->expiry_thread_ = std::thread([s = server.get()] { s->ExpiryLoop(); });
  server->Log(absl::StrCat("listening on ", server->address(),
                           opt.tls_cert_file.empty() ? " (plaintext)" : " (TLS)", ", db ",
                           opt.db_path, ", lease ", opt.lease_ms, " ms, heartbeat ",
                           opt.heartbeat_ms, " ms"));
  return server;
}

std::string CoordinatorServer::address() const {
  std::string host = options_.listen;
  auto colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", port_);
}

void CoordinatorServer::ExpiryLoop() {
  const int64_t interval =
      options_.expire_interval_ms > 0
          ? options_.expire_interval_ms
          : std::max<int64_t>(50, std::min<int64_t>(1000, options_.lease_ms / 4));
  const int64_t gone_ms = options_.worker_gone_ms > 0 ? options_.worker_gone_ms
                                                      : 3 * options_.lease_ms;
  int64_t last_worker_sweep = 0;
  int64_t last_checkpoint = rpc::NowMs();
  int64_t last_fault_log = 0;
  bool faulted = false;
  int64_t expire_after = 0;  // no lease expires before this (a grace period after a store fault)
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(interval), [&] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    const int64_t now = rpc::NowMs();
    // While the database refuses writes, heartbeats cannot be recorded either: no lease is
    // expired then, nor for one lease period after it recovers (the workers' heartbeats catch up).
    const StoreHealth health = store_->health();
    if (!health.ok) {
      if (!faulted || now - last_fault_log >= 60000) {
        Log(absl::StrCat("store not accepting writes (", health.problem, "); leasing pauses, "
                         "lease expiry is suspended, results are retried by the workers"));
        last_fault_log = now;
      }
      faulted = true;
    } else if (faulted) {
      faulted = false;
      expire_after = now + options_.lease_ms;
      Log("store accepting writes again; leasing resumes");
      service_->NotifyWork();
    }
    absl::StatusOr<int> expired = 0;
    if (!faulted && now >= expire_after) expired = store_->ExpireLeases(now);
    if (!expired.ok()) {
      if (!absl::IsUnavailable(expired.status())) {
        Log(absl::StrCat("lease expiry failed: ", expired.status().message()));
      }
    } else if (*expired > 0) {
      Log(absl::StrCat(*expired, " lease(s) expired; their runs are planned again (or failed "
                                 "after max_attempts)"));
      service_->NotifyWork();
    }
    if (!faulted && now - last_checkpoint >= 30000) {
      last_checkpoint = now;
      (void)store_->Checkpoint();  // keeps the WAL small; busy readers just make it partial
    }
    if (!faulted && now - last_worker_sweep >= gone_ms / 2) {
      last_worker_sweep = now;
      auto workers = store_->ListWorkers();
      if (workers.ok()) {
        for (const auto& w : *workers) {
          if (w.status != "gone" && now - w.last_heartbeat_at > gone_ms) {
            (void)store_->MarkWorker(w.id, "gone");
            Log(absl::StrCat("worker ", w.id, " silent for ", (now - w.last_heartbeat_at) / 1000,
                             " s: marked gone"));
          }
        }
      }
    }
    lock.lock();
  }
}

void CoordinatorServer::Shutdown(int64_t grace_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    shut_down_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  if (service_) service_->BeginShutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
    server_->Wait();
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  server_.reset();
  store_.reset();
  if (lock_fd_ >= 0) {
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  Log("stopped");
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace kvgrid
