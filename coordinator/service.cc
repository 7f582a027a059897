#include "coordinator/service.h"

#include "coordinator/results_format.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "coordinator/grid/grid.h"
#include "proto/convert.h"
#include "proto/rpc_common.h"

namespace kvgrid {
namespace {

using grpc::ServerContext;
using rpc::NowMs;

void FillWorker(const WorkerView& w, v1::WorkerStatus* out) {
  out->set_worker_id(w.id);
  out->set_host(w.host);
  out->set_device(w.device);
  out->set_device_name(w.device_name);
  out->set_status(w.status);
  out->set_last_heartbeat_ms(w.last_heartbeat_at);
  out->set_current_run_key(w.current_run_key);
  out->set_runs_done(w.runs_done);
}

void FillExperiment(const ExperimentView& e, v1::ExperimentStatus* out) {
  out->set_name(e.name);
  out->set_status(e.status);
  out->set_total(e.total);
  out->set_planned(e.planned);
  out->set_running(e.running);
  out->set_done(e.done);
  out->set_failed(e.failed);
  out->set_cancelled(e.cancelled);
  out->set_submitted_at_ms(e.submitted_at);
}

std::string Peer(const ServerContext* ctx) { return ctx->peer(); }

}  // namespace

CoordinatorService::CoordinatorService(Store* store, CoordinatorServiceOptions options)
    : store_(store), options_(std::move(options)) {}

void CoordinatorService::Log(const std::string& msg) const {
  if (options_.log) options_.log(msg);
}

void CoordinatorService::NotifyWork() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++work_generation_;
  }
  work_cv_.notify_all();
}

void CoordinatorService::BeginShutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
  }
  work_cv_.notify_all();
}

grpc::Status CoordinatorService::Authenticate(ServerContext* ctx, const char* method) {
  if (rpc::CheckBearer(*ctx, options_.token)) return grpc::Status::OK;
  counters_.unauthenticated.fetch_add(1);
  bool had_header = ctx->client_metadata().count(rpc::kAuthMetadataKey) > 0;
  Log(absl::StrCat("refused ", method, " from ", Peer(ctx), ": ",
                   had_header ? "wrong bearer token" : "no bearer token"));
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      had_header ? "wrong bearer token (check --token-file / $KVGRID_TOKEN_FILE)"
                                 : "missing bearer token: pass --token-file F or set "
                                   "$KVGRID_TOKEN_FILE (the coordinator's token)");
}

grpc::Status CoordinatorService::StoreError(const absl::Status& status, const char* method) {
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAborted: {
      counters_.store_errors.fetch_add(1);
      std::string msg(status.message());
      if (absl::StrContains(msg, "locked") || absl::StrContains(msg, "SQLITE_BUSY") ||
          absl::StrContains(msg, "busy")) {
        counters_.database_locked.fetch_add(1);
      }
      Log(absl::StrCat(method, ": store error: ", msg));
      break;
    }
    default:
      break;
  }
  return rpc::ToGrpcStatus(status);
}

#define KV_AUTH(method)                                         \
  do {                                                          \
    grpc::Status auth_status_ = Authenticate(ctx, method);      \
    if (!auth_status_.ok()) return auth_status_;                \
  } while (0)

// ------------------------------------------------------------------------------- clients

grpc::Status CoordinatorService::Submit(ServerContext* ctx, const v1::SubmitRequest* req,
                                        v1::SubmitResponse* resp) {
  KV_AUTH("Submit");
  std::string filename = req->filename().empty() ? "<submitted grid>" : req->filename();
  auto grid = ParseGridYaml(req->grid_yaml(), filename);
  if (!grid.ok()) {
    Log(absl::StrCat("rejected grid from ", Peer(ctx), ": ", grid.status().message()));
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(grid.status().message()));
  }
  auto outcome = store_->SubmitExperiment(grid->name, grid->yaml, grid->runs, grid->max_attempts,
                                          req->force(), NowMs());
  if (!outcome.ok()) return StoreError(outcome.status(), "Submit");
  resp->set_experiment(grid->name);
  resp->set_created(outcome->created);
  resp->set_total(outcome->total);
  resp->set_planned(outcome->planned);
  resp->set_reused_done(outcome->reused_done);
  resp->set_requeued(outcome->requeued);
  resp->set_removed(outcome->removed);
  for (const auto& note : grid->skipped) resp->add_skipped(note);
  Log(absl::StrCat("experiment ", grid->name, (outcome->created ? " submitted" : " resubmitted"),
                   ": ", outcome->total, " runs (", outcome->planned, " planned, ",
                   outcome->reused_done, " reused, ", outcome->requeued, " requeued",
                   req->force() ? ", forced" : "", ")"));
  NotifyWork();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Status(ServerContext* ctx, const v1::StatusRequest* req,
                                        v1::StatusResponse* resp) {
  KV_AUTH("Status");
  resp->set_now_ms(NowMs());
  const StoreHealth health = store_->health();
  if (!health.ok) {
    resp->set_store_problem(health.problem);
    resp->set_store_problem_since_ms(health.since_ms);
  }
  if (!req->experiment().empty()) {
    auto exp = store_->GetExperiment(req->experiment());
    if (!exp.ok()) return StoreError(exp.status(), "Status");
    auto progress = store_->Progress(req->experiment());
    if (!progress.ok()) return StoreError(progress.status(), "Status");
    auto* e = resp->add_experiments();
    FillExperiment(*exp, e);
    // Progress is the fresher count (same transaction as its worker list).
    e->set_status(progress->status);
    e->set_total(progress->total);
    e->set_planned(progress->planned);
    e->set_running(progress->running);
    e->set_done(progress->done);
    e->set_failed(progress->failed);
    e->set_cancelled(progress->cancelled);
    for (const auto& w : progress->workers) FillWorker(w, e->add_workers());
    return grpc::Status::OK;
  }
  auto exps = store_->ListExperiments();
  if (!exps.ok()) return StoreError(exps.status(), "Status");
  for (const auto& exp : *exps) {
    auto* e = resp->add_experiments();
    FillExperiment(exp, e);
    if (exp.status == "active") {
      auto progress = store_->Progress(exp.name);
      if (progress.ok()) {
        for (const auto& w : progress->workers) FillWorker(w, e->add_workers());
      }
    }
  }
  auto workers = store_->ListWorkers();
  if (!workers.ok()) return StoreError(workers.status(), "Status");
  for (const auto& w : *workers) FillWorker(w, resp->add_workers());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Cancel(ServerContext* ctx, const v1::CancelRequest* req,
                                        v1::CancelResponse* resp) {
  KV_AUTH("Cancel");
  if (req->experiment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "Cancel: experiment name is empty");
  }
  auto n = store_->CancelExperiment(req->experiment(), NowMs());
  if (!n.ok()) return StoreError(n.status(), "Cancel");
  resp->set_cancelled_runs(*n);
  Log(absl::StrCat("experiment ", req->experiment(), " cancelled by ", Peer(ctx), ": ", *n,
                   " runs"));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Results(ServerContext* ctx, const v1::ResultsRequest* req,
                                         v1::ResultsResponse* resp) {
  KV_AUTH("Results");
  auto exp = store_->GetExperiment(req->experiment());
  if (!exp.ok()) return StoreError(exp.status(), "Results");
  auto runs = store_->ListRuns(req->experiment());
  if (!runs.ok()) return StoreError(runs.status(), "Results");
  *resp = ResultsFromStore(*exp, *runs, req->include_samples());
  return grpc::Status::OK;
}

// ------------------------------------------------------------------------------- workers

grpc::Status CoordinatorService::RegisterWorker(ServerContext* ctx,
                                                const v1::RegisterWorkerRequest* req,
                                                v1::RegisterWorkerResponse* resp) {
  KV_AUTH("RegisterWorker");
  const auto& w = req->worker();
  if (w.worker_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "RegisterWorker: worker_id is empty");
  }
  if (w.device().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("RegisterWorker ", w.worker_id(), ": device is empty"));
  }
  nlohmann::json info;
  info["memory_bytes"] = w.memory_bytes();
  info["pid"] = w.pid();
  nlohmann::json versions = nlohmann::json::object();
  for (const auto& [k, v] : w.software_versions()) versions[k] = v;
  info["software_versions"] = versions;
  auto caps = nlohmann::json::parse(w.capabilities_json(), nullptr, false);
  info["capabilities"] = caps.is_discarded() ? nlohmann::json(w.capabilities_json()) : caps;
  info["peer"] = Peer(ctx);
  WorkerInfo wi;
  wi.id = w.worker_id();
  wi.host = w.host();
  wi.device = w.device();
  wi.device_name = w.device_name();
  wi.info_json = info.dump();
  wi.now_ms = NowMs();
  absl::Status st = store_->UpsertWorker(wi);
  if (!st.ok()) return StoreError(st, "RegisterWorker");
  resp->set_worker_id(w.worker_id());
  resp->set_heartbeat_interval_ms(options_.heartbeat_ms);
  resp->set_lease_ms(options_.lease_ms);
  resp->set_max_wait_ms(options_.max_wait_ms);
  Log(absl::StrCat("worker ", w.worker_id(), " registered (", w.device(),
                   w.device_name().empty() ? "" : absl::StrCat(", ", w.device_name()), ") from ",
                   Peer(ctx)));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::LeaseRun(ServerContext* ctx, const v1::LeaseRunRequest* req,
                                          v1::LeaseRunResponse* resp) {
  KV_AUTH("LeaseRun");
  if (req->worker_id().empty() || req->device().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "LeaseRun: worker_id and device are required");
  }
  // Unknown workers (e.g. a fresh database) must register first.
  absl::Status hb = store_->WorkerHeartbeat(req->worker_id(), NowMs());
  if (!hb.ok()) return StoreError(hb, "LeaseRun");

  const int64_t wait_ms = std::clamp<int64_t>(req->wait_ms(), 0, options_.max_wait_ms);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (true) {
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutting_down_) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator shutting down");
      }
      generation = work_generation_;
    }
    auto claimed = store_->ClaimNextRun(req->worker_id(), req->device(), options_.lease_ms,
                                        NowMs());
    if (!claimed.ok()) return StoreError(claimed.status(), "LeaseRun");
    if (claimed->has_value()) {
      const LeasedRun& run = **claimed;
      if (ctx->IsCancelled()) {
        // The worker gave up waiting; hand the run straight back so it is not stuck until expiry.
        (void)store_->ReleaseRun(run.lease_id, NowMs());
        NotifyWork();
        return grpc::Status(grpc::StatusCode::CANCELLED, "LeaseRun cancelled by the worker");
      }
      resp->set_has_run(true);
      auto* lease = resp->mutable_lease();
      lease->set_lease_id(run.lease_id);
      lease->set_run_id(run.run_id);
      lease->set_attempt(run.attempt);
      lease->set_experiment(run.experiment);
      lease->set_expires_at_ms(run.lease_expires_at);
      resp->mutable_spec()->set_canonical_json(run.spec_json);
      resp->mutable_spec()->set_run_key(run.run_key);
      counters_.leases_granted.fetch_add(1);
      return grpc::Status::OK;
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline || ctx->IsCancelled()) {
      resp->set_has_run(false);
      return grpc::Status::OK;
    }
    std::unique_lock<std::mutex> lock(mu_);
    auto wake = std::min(deadline, now + std::chrono::milliseconds(options_.poll_ms));
    work_cv_.wait_until(lock, wake,
                        [&] { return shutting_down_ || work_generation_ != generation; });
  }
}

grpc::Status CoordinatorService::Heartbeat(ServerContext* ctx, const v1::HeartbeatRequest* req,
                                           v1::HeartbeatResponse* resp) {
  KV_AUTH("Heartbeat");
  const int64_t now = NowMs();
  absl::Status hb = store_->WorkerHeartbeat(req->worker_id(), now);
  if (absl::IsNotFound(hb)) {
    resp->set_reregister(true);
  } else if (!hb.ok()) {
    return StoreError(hb, "Heartbeat");
  }
  if (req->draining() && hb.ok()) (void)store_->MarkWorker(req->worker_id(), "draining");
  if (req->lease_id().empty()) return grpc::Status::OK;
  absl::Status ext = store_->ExtendLease(req->lease_id(), now, options_.lease_ms,
                                         req->progress(), req->phase());
  if (ext.ok()) {
    resp->set_lease_valid(true);
    resp->set_lease_expires_at_ms(now + options_.lease_ms);
    return grpc::Status::OK;
  }
  if (absl::IsFailedPrecondition(ext) || absl::IsNotFound(ext)) {
    resp->set_lease_valid(false);
    resp->set_reason(std::string(ext.message()));
    resp->set_cancelled(absl::StrContains(ext.message(), "cancel"));
    return grpc::Status::OK;
  }
  return StoreError(ext, "Heartbeat");
}

grpc::Status CoordinatorService::CompleteRun(ServerContext* ctx,
                                             const v1::CompleteRunRequest* req,
                                             v1::CompleteRunResponse* resp) {
  KV_AUTH("CompleteRun");
  RunResult result = FromProto(req->result());
  auto outcome = store_->CompleteRun(req->run_id(), req->attempt(), req->lease_id(), result,
                                     req->worker_id(), NowMs());
  if (!outcome.ok()) return StoreError(outcome.status(), "CompleteRun");
  resp->set_accepted(outcome->accepted);
  resp->set_reason(outcome->reason);
  if (outcome->accepted) {
    counters_.results_accepted.fetch_add(1);
  } else {
    counters_.results_rejected.fetch_add(1);
    Log(absl::StrCat("result of run ", req->run_id(), " attempt ", req->attempt(), " from ",
                     req->worker_id(), " rejected: ", outcome->reason));
  }
  if (outcome->reason != "recorded") {
    Log(absl::StrCat("run ", req->run_id(), " attempt ", req->attempt(), " from ",
                     req->worker_id(), ": ", outcome->reason));
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::FailRun(ServerContext* ctx, const v1::FailRunRequest* req,
                                         v1::FailRunResponse*) {
  KV_AUTH("FailRun");
  absl::Status st = store_->FailRun(req->run_id(), req->attempt(), req->lease_id(), req->error(),
                                    req->retryable(), NowMs());
  if (!st.ok()) return StoreError(st, "FailRun");
  counters_.failures_reported.fetch_add(1);
  Log(absl::StrCat("run ", req->run_id(), " attempt ", req->attempt(), " failed on ",
                   req->worker_id(), req->retryable() ? " (retryable)" : " (permanent)", ": ",
                   req->error()));
  NotifyWork();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ReleaseRun(ServerContext* ctx, const v1::ReleaseRunRequest* req,
                                            v1::ReleaseRunResponse*) {
  KV_AUTH("ReleaseRun");
  absl::Status st = store_->ReleaseRun(req->lease_id(), NowMs());
  if (!st.ok()) return StoreError(st, "ReleaseRun");
  counters_.releases.fetch_add(1);
  Log(absl::StrCat("worker ", req->worker_id(), " handed back lease ", req->lease_id(),
                   req->reason().empty() ? "" : absl::StrCat(" (", req->reason(), ")")));
  NotifyWork();
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::UnregisterWorker(ServerContext* ctx,
                                                  const v1::UnregisterWorkerRequest* req,
                                                  v1::UnregisterWorkerResponse*) {
  KV_AUTH("UnregisterWorker");
  absl::Status st = store_->MarkWorker(req->worker_id(), "gone");
  if (!st.ok() && !absl::IsNotFound(st)) return StoreError(st, "UnregisterWorker");
  Log(absl::StrCat("worker ", req->worker_id(), " left"));
  return grpc::Status::OK;
}

#undef KV_AUTH

}  // namespace kvgrid
