#include "worker/daemon/worker_daemon.h"

#include <google/protobuf/stubs/common.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>
#include <random>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/atomic_file.h"
#include "absl/strings/str_format.h"
#include "proto/convert.h"
#include "common/host_name.h"

namespace kvgrid {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string Timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return buf;
}

bool IsFatal(const grpc::Status& st) {
  return st.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
         st.error_code() == grpc::StatusCode::PERMISSION_DENIED;
}

}  // namespace

WorkerDaemon::WorkerDaemon(WorkerDaemonOptions options, RunExecutor* executor)
    : options_(std::move(options)), executor_(executor) {
  worker_id_ = options_.worker_id.empty()
                   ? absl::StrCat(HostName(), ":", ::getpid(), ":", options_.device)
                   : options_.worker_id;
}

WorkerDaemon::~WorkerDaemon() {
  Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_heartbeat_ = true;
  }
  cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    exec_quit_ = true;
  }
  exec_cv_.notify_all();
  if (exec_thread_.joinable()) exec_thread_.join();
}

void WorkerDaemon::Log(const std::string& msg) const {
  if (options_.log) {
    options_.log(msg);
    return;
  }
  std::fprintf(stderr, "%s [worker %s] %s\n", Timestamp().c_str(), worker_id_.c_str(),
               msg.c_str());
}

WorkerDaemonStats WorkerDaemon::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void WorkerDaemon::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (drain_ || stop_) return;
    drain_ = true;
    drain_started_ms_ = rpc::NowMs();
    if (lease_ctx_ != nullptr) lease_ctx_->TryCancel();
  }
  Log(absl::StrCat("draining: no new runs; the current one is finished within ",
                   options_.drain_timeout_ms / 1000, " s or handed back"));
  cv_.notify_all();
  exec_cv_.notify_all();
}

void WorkerDaemon::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    if (lease_ctx_ != nullptr) lease_ctx_->TryCancel();
  }
  cv_.notify_all();
  exec_cv_.notify_all();
}

bool WorkerDaemon::Sleep(int64_t ms, bool wake_on_drain) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, std::chrono::milliseconds(ms),
                       [&] { return stop_ || (wake_on_drain && drain_); });
}

int64_t WorkerDaemon::NextBackoff() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  int64_t step;
  {
    std::lock_guard<std::mutex> lock(mu_);
    step = backoff_step_++;
  }
  double base = static_cast<double>(options_.initial_backoff_ms) * std::pow(2.0, std::min<int64_t>(step, 20));
  base = std::min(base, static_cast<double>(options_.max_backoff_ms));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  return std::max<int64_t>(1, static_cast<int64_t>(base * jitter(rng)));
}

void WorkerDaemon::ResetBackoff() {
  std::lock_guard<std::mutex> lock(mu_);
  backoff_step_ = 0;
}

void WorkerDaemon::NoteOutage(const grpc::Status& st, const char* what) {
  bool first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = !in_outage_;
    in_outage_ = true;
  }
  if (first) {
    Log(absl::StrCat(what, ": coordinator ", options_.coordinator, " unavailable (",
                     st.error_message(), "); retrying with back-off"));
  }
}

void WorkerDaemon::NoteRecovered() {
  bool was;
  {
    std::lock_guard<std::mutex> lock(mu_);
    was = in_outage_;
    in_outage_ = false;
    if (was) ++stats_.reconnects;
  }
  if (was) Log(absl::StrCat("coordinator ", options_.coordinator, " reachable again"));
}

absl::Status WorkerDaemon::Register() {
  v1::RegisterWorkerRequest req;
  auto* w = req.mutable_worker();
  w->set_worker_id(worker_id_);
  w->set_host(HostName());
  w->set_device(options_.device);
  w->set_pid(::getpid());
  if (capabilities_.is_object()) {
    if (capabilities_.contains("device_name") && capabilities_["device_name"].is_string()) {
      w->set_device_name(capabilities_["device_name"].get<std::string>());
    }
    if (capabilities_.contains("memory_bytes") && capabilities_["memory_bytes"].is_number()) {
      w->set_memory_bytes(capabilities_["memory_bytes"].get<int64_t>());
    }
    for (auto it = capabilities_.begin(); it != capabilities_.end(); ++it) {
      const std::string& k = it.key();
      if (k.size() > 8 && k.compare(k.size() - 8, 8, "_version") == 0 && it->is_string()) {
        (*w->mutable_software_versions())[k.substr(0, k.size() - 8)] = it->get<std::string>();
      }
    }
  }
  (*w->mutable_software_versions())["kvgrid"] = "0.1.0";
  (*w->mutable_software_versions())["grpc"] = grpc::Version();
  (*w->mutable_software_versions())["protobuf"] =
      google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION);
  w->set_capabilities_json(capabilities_.dump());

  v1::RegisterWorkerResponse resp;
  grpc::ClientContext ctx;
  rpc::PrepareContext(&ctx, options_.token, std::chrono::milliseconds(options_.rpc_timeout_ms));
  grpc::Status st = stub_->RegisterWorker(&ctx, req, &resp);
  if (!st.ok()) {
    return rpc::FromGrpcStatus(st, absl::StrCat("coordinator ", options_.coordinator,
                                                " RegisterWorker"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    registered_ = true;
    ++register_generation_;
    if (resp.heartbeat_interval_ms() > 0) heartbeat_ms_ = resp.heartbeat_interval_ms();
    if (resp.max_wait_ms() > 0) max_wait_ms_ = resp.max_wait_ms();
  }
  cv_.notify_all();
  Log(absl::StrCat("registered with ", options_.coordinator, " (device ", options_.device,
                   w->device_name().empty() ? "" : absl::StrCat(", ", w->device_name()),
                   "; heartbeat ", resp.heartbeat_interval_ms(), " ms, lease ", resp.lease_ms(),
                   " ms)"));
  return absl::OkStatus();
}

absl::Status WorkerDaemon::Run() {
  if (executor_ == nullptr) return absl::InvalidArgumentError("worker: no executor");
  auto channel = rpc::MakeChannel(options_.coordinator, options_.security,
                                  options_.own_connection);
  if (!channel.ok()) return channel.status();
  channel_ = *channel;
  stub_ = v1::Coordinator::NewStub(channel_);
  capabilities_ = executor_->Capabilities();
  if (!exec_thread_.joinable()) exec_thread_ = std::thread([this] { ExecLoop(); });
  if (!heartbeat_thread_.joinable()) heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });

  absl::Status result = absl::OkStatus();
  int runs = 0;
  auto idle_since = Clock::now();
  while (true) {
    bool registered;
    int64_t wait_ms;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || drain_) break;
      registered = registered_;
      wait_ms = std::min(options_.lease_wait_ms, max_wait_ms_);
    }
    if (options_.max_runs > 0 && runs >= options_.max_runs) {
      Log(absl::StrCat("ran ", runs, " run(s) (--max-runs): exiting"));
      break;
    }
    if (!registered) {
      absl::Status st = Register();
      if (!st.ok()) {
        if (absl::IsUnauthenticated(st) || absl::IsPermissionDenied(st) ||
            absl::IsInvalidArgument(st)) {
          result = st;
          break;
        }
        NoteOutage(grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(st.message())),
                   "RegisterWorker");
        Sleep(NextBackoff(), /*wake_on_drain=*/true);
        continue;
      }
      NoteRecovered();
      ResetBackoff();
      OfferSpooledResults();  // results an earlier daemon could not deliver come first
    }

    v1::LeaseRunRequest req;
    req.set_worker_id(worker_id_);
    req.set_device(options_.device);
    req.set_wait_ms(wait_ms);
    v1::LeaseRunResponse resp;
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, options_.token,
                        std::chrono::milliseconds(wait_ms + options_.rpc_timeout_ms));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_ || drain_) break;
      lease_ctx_ = &ctx;
    }
    const auto t0 = Clock::now();
    grpc::Status st = stub_->LeaseRun(&ctx, req, &resp);
    const double lease_ms = MsSince(t0);
    {
      std::lock_guard<std::mutex> lock(mu_);
      lease_ctx_ = nullptr;
    }
    if (!st.ok()) {
      if (IsFatal(st)) {
        result = rpc::FromGrpcStatus(st, absl::StrCat("coordinator ", options_.coordinator));
        break;
      }
      if (st.error_code() == grpc::StatusCode::CANCELLED) continue;  // Drain/Stop
      if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
        Log(absl::StrCat("coordinator does not know this worker (", st.error_message(),
                         "): registering again"));
        std::lock_guard<std::mutex> lock(mu_);
        registered_ = false;
        continue;
      }
      NoteOutage(st, "LeaseRun");
      Sleep(NextBackoff(), /*wake_on_drain=*/true);
      continue;
    }
    NoteRecovered();
    ResetBackoff();
    if (!resp.has_run()) {
      if (options_.exit_when_idle_ms > 0 &&
          MsSince(idle_since) >= static_cast<double>(options_.exit_when_idle_ms)) {
        Log(absl::StrCat("no work for ", options_.exit_when_idle_ms / 1000,
                         " s (--exit-when-idle): exiting"));
        break;
      }
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.leases;
      stats_.lease_rpc_ms += lease_ms;
    }
    ExecuteLease(resp);
    ++runs;
    idle_since = Clock::now();
    if (execution_abandoned_.load()) break;
  }

  if (!execution_abandoned_.load() && stub_ != nullptr) {
    bool registered;
    {
      std::lock_guard<std::mutex> lock(mu_);
      registered = registered_;
    }
    if (registered) {
      v1::UnregisterWorkerRequest req;
      req.set_worker_id(worker_id_);
      v1::UnregisterWorkerResponse resp;
      grpc::ClientContext ctx;
      rpc::PrepareContext(&ctx, options_.token, std::chrono::milliseconds(2000));
      (void)stub_->UnregisterWorker(&ctx, req, &resp);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_heartbeat_ = true;
  }
  cv_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  return result;
}

void WorkerDaemon::ExecuteLease(const v1::LeaseRunResponse& leased) {
  const v1::Lease& lease = leased.lease();
  const std::string& run_key = leased.spec().run_key();
  auto parsed = nlohmann::json::parse(leased.spec().canonical_json(), nullptr, false);
  absl::StatusOr<RunSpec> spec =
      parsed.is_discarded()
          ? absl::StatusOr<RunSpec>(absl::InvalidArgumentError(
                absl::StrCat("run ", run_key, ": run spec is not valid JSON")))
          : RunSpec::FromJson(parsed);
  if (!spec.ok()) {
    ReportFailure(lease, run_key,
                  absl::InvalidArgumentError(absl::StrCat("run ", run_key, ": ",
                                                          spec.status().message())));
    return;
  }
  Log(absl::StrCat("run ", run_key, " (", lease.experiment(), ", attempt ", lease.attempt(),
                   "): ", spec->workload, " ", spec->policy.ToString()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = CurrentLease{lease.lease_id(), lease.run_id(), lease.attempt(), run_key, 0.0,
                            "starting", true};
  }
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    job_spec_ = *spec;
    job_result_.reset();
    job_done_ = false;
    job_pending_ = true;
  }
  exec_cv_.notify_all();
  const auto t0 = Clock::now();

  bool done = false;
  std::string hand_back_reason;
  while (!done) {
    {
      std::unique_lock<std::mutex> lock(exec_mu_);
      exec_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return job_done_; });
      done = job_done_;
    }
    if (done) break;
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      hand_back_reason = "worker stopping";
      break;
    }
    if (drain_ && rpc::NowMs() - drain_started_ms_ >= options_.drain_timeout_ms) {
      hand_back_reason = "worker draining: run not finished within the drain timeout";
      break;
    }
  }
  if (!done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      current_.reset();
    }
    execution_abandoned_.store(true);
    HandBack(lease, hand_back_reason);
    return;
  }

  absl::StatusOr<RunResult> result = absl::InternalError("no result");
  {
    std::lock_guard<std::mutex> lock(exec_mu_);
    result = std::move(*job_result_);
    job_result_.reset();
    job_done_ = false;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.execute_ms += MsSince(t0);
  }
  if (result.ok()) {
    ReportResult(lease, run_key, *result);
  } else {
    ReportFailure(lease, run_key, result.status());
  }
  std::lock_guard<std::mutex> lock(mu_);
  current_.reset();
}

void WorkerDaemon::ExecLoop() {
  while (true) {
    RunSpec spec;
    {
      std::unique_lock<std::mutex> lock(exec_mu_);
      exec_cv_.wait(lock, [&] { return exec_quit_ || job_pending_; });
      if (!job_pending_) return;  // quit
      spec = job_spec_;
      job_pending_ = false;
    }
    ProgressFn progress = [this](double fraction, const std::string& phase) {
      std::lock_guard<std::mutex> lock(mu_);
      if (current_.has_value()) {
        current_->progress = fraction;
        current_->phase = phase;
      }
    };
    absl::StatusOr<RunResult> result = absl::InternalError("executor did not run");
    try {
      result = executor_->Execute(spec, progress);
    } catch (const std::exception& e) {
      result = absl::InternalError(absl::StrCat("executor threw: ", e.what()));
    } catch (...) {
      result = absl::InternalError("executor threw a non-standard exception");
    }
    {
      std::lock_guard<std::mutex> lock(exec_mu_);
      job_result_ = std::move(result);
      job_done_ = true;
    }
    exec_cv_.notify_all();
  }
}

void WorkerDaemon::ReportResult(const v1::Lease& lease, const std::string& run_key,
                                const RunResult& result) {
  v1::CompleteRunRequest req;
  req.set_worker_id(worker_id_);
  req.set_lease_id(lease.lease_id());
  req.set_run_id(lease.run_id());
  req.set_attempt(lease.attempt());
  ToProto(result, req.mutable_result());
  std::string spool_file;
  if (!options_.spool_dir.empty()) {
    spool_file = absl::StrCat(options_.spool_dir, "/", lease.lease_id(), ".result");
    std::error_code ec;
    std::filesystem::create_directories(options_.spool_dir, ec);
    absl::Status st = WriteFileAtomically(spool_file, req.SerializeAsString());
    if (!st.ok()) {
      Log(absl::StrCat("run ", run_key, ": cannot spool the result (", st.message(), "); keeping it in memory"));
      spool_file.clear();
    }
  }
  if (!OfferResult(req, run_key, spool_file) && spool_file.empty()) {
    // Stopped with nowhere to keep it: print the record so it is not lost.
    Log(absl::StrCat("run ", run_key, " result NOT delivered (worker stopped before the "
                     "coordinator took it); record: ", result.ToJson().dump()));
  }
}

bool WorkerDaemon::OfferResult(const v1::CompleteRunRequest& req, const std::string& run_key,
                               const std::string& spool_file) {
  const auto t0 = Clock::now();
  int tries = 0;
  while (true) {
    ++tries;
    v1::CompleteRunResponse resp;
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, options_.token, std::chrono::milliseconds(options_.rpc_timeout_ms));
    grpc::Status st = stub_->CompleteRun(&ctx, req, &resp);
    if (st.ok()) {
      NoteRecovered();
      ResetBackoff();
      {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.complete_rpc_ms += MsSince(t0);
        ++(resp.accepted() ? stats_.accepted : stats_.rejected);
      }
      Log(absl::StrCat("run ", run_key, " result ", resp.accepted() ? "accepted" : "rejected",
                       ": ", resp.reason(),
                       tries > 1 ? absl::StrCat(" (after ", tries, " tries)") : ""));
      if (!spool_file.empty()) ::unlink(spool_file.c_str());
      return true;
    }
    if (!rpc::IsTransient(st) && !IsFatal(st)) {
      // NOT_FOUND / FAILED_PRECONDITION / INVALID_ARGUMENT: the coordinator will never take it.
      Log(absl::StrCat("run ", run_key, " result refused by the coordinator: ",
                       st.error_message()));
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.rejected;
      if (!spool_file.empty()) ::unlink(spool_file.c_str());
      return true;
    }
    NoteOutage(st, "CompleteRun");
    bool give_up;
    {
      std::lock_guard<std::mutex> lock(mu_);
      give_up = stop_ || IsFatal(st) ||
                (drain_ && rpc::NowMs() - drain_started_ms_ >= options_.drain_timeout_ms);
    }
    if (give_up) {
      if (!spool_file.empty()) {
        Log(absl::StrCat("run ", run_key, ": result not yet taken (", st.error_message(),
                         "); kept in ", spool_file, ", offered again when a worker starts with this spool"));
      }
      return false;
    }
    Sleep(NextBackoff(), /*wake_on_drain=*/true);
  }
}

void WorkerDaemon::OfferSpooledResults() {
  if (options_.spool_dir.empty()) return;
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(options_.spool_dir, ec)) {
    if (e.path().extension() == ".result") files.push_back(e.path().string());
  }
  for (const auto& f : files) {
    absl::StatusOr<std::string> bytes = ReadFileToString(f);
    v1::CompleteRunRequest req;
    if (!bytes.ok() || !req.ParseFromString(*bytes)) {
      Log(absl::StrCat("spooled result ", f, " is unreadable; left in place"));
      continue;
    }
    req.set_worker_id(worker_id_);
    Log(absl::StrCat("offering the spooled result of run ", req.run_id(), " (", f, ")"));
    if (!OfferResult(req, absl::StrCat("#", req.run_id()), f)) return;
  }
}

void WorkerDaemon::ReportFailure(const v1::Lease& lease, const std::string& run_key,
                                 const absl::Status& error) {
  const bool retryable = !absl::IsInvalidArgument(error);
  Log(absl::StrCat("run ", run_key, " failed", retryable ? "" : " (not retryable)", ": ",
                   error.ToString()));
  v1::FailRunRequest req;
  req.set_worker_id(worker_id_);
  req.set_lease_id(lease.lease_id());
  req.set_run_id(lease.run_id());
  req.set_attempt(lease.attempt());
  req.set_error(error.ToString());
  req.set_retryable(retryable);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.failed;
  }
  for (int tries = 0; tries < 1000; ++tries) {
    v1::FailRunResponse resp;
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, options_.token, std::chrono::milliseconds(options_.rpc_timeout_ms));
    grpc::Status st = stub_->FailRun(&ctx, req, &resp);
    if (st.ok()) {
      NoteRecovered();
      ResetBackoff();
      return;
    }
    if (!rpc::IsTransient(st)) {
      Log(absl::StrCat("run ", run_key, ": FailRun not taken: ", st.error_message()));
      return;
    }
    NoteOutage(st, "FailRun");
    // Without the report the lease simply expires and the run is retried; do not block forever.
    if (!Sleep(NextBackoff(), /*wake_on_drain=*/false)) return;
  }
}

bool WorkerDaemon::HandBack(const v1::Lease& lease, const std::string& reason) {
  Log(absl::StrCat("handing back lease ", lease.lease_id(), ": ", reason));
  v1::ReleaseRunRequest req;
  req.set_worker_id(worker_id_);
  req.set_lease_id(lease.lease_id());
  req.set_reason(reason);
  for (int tries = 0; tries < 3; ++tries) {
    v1::ReleaseRunResponse resp;
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, options_.token, std::chrono::milliseconds(2000));
    grpc::Status st = stub_->ReleaseRun(&ctx, req, &resp);
    if (st.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.released;
      return true;
    }
    if (!rpc::IsTransient(st)) {
      Log(absl::StrCat("ReleaseRun not taken: ", st.error_message()));
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  Log("coordinator unreachable: the lease will expire and the run be re-leased");
  return false;
}

void WorkerDaemon::HeartbeatLoop() {
  std::string invalid_logged_for;
  while (true) {
    v1::HeartbeatRequest req;
    int64_t interval;
    {
      std::unique_lock<std::mutex> lock(mu_);
      interval = heartbeat_ms_;
      // Wakes early on quit and on (re-)registration, which may change the interval.
      const int64_t seen_generation = register_generation_;
      cv_.wait_for(lock, std::chrono::milliseconds(interval), [&] {
        return quit_heartbeat_ || register_generation_ != seen_generation;
      });
      if (quit_heartbeat_) return;
      if (!registered_) continue;
      req.set_worker_id(worker_id_);
      req.set_draining(drain_);
      if (current_.has_value()) {
        req.set_lease_id(current_->lease_id);
        req.set_progress(current_->progress);
        req.set_phase(current_->phase);
      }
    }
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, options_.token,
                        std::chrono::milliseconds(std::max<int64_t>(interval, 1000)));
    grpc::Status st = stub_->Heartbeat(&ctx, req, &resp);
    if (!st.ok()) continue;  // the main loop reports outages; the lease may expire meanwhile
    std::string log_msg;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.heartbeats;
      if (!req.lease_id().empty() && !resp.lease_valid() && current_.has_value() &&
          current_->lease_id == req.lease_id() && current_->valid) {
        current_->valid = false;
        ++stats_.lease_invalidations;
        log_msg = absl::StrCat("lease of run ", current_->run_key, " no longer valid (",
                               resp.reason(), ")",
                               resp.cancelled() ? ": experiment cancelled" : "",
                               "; the result will still be offered");
      }
    }
    if (!log_msg.empty()) Log(log_msg);
    if (resp.reregister()) {
      Log("coordinator does not know this worker: registering again");
      (void)Register();
    }
  }
}

}  // namespace kvgrid
