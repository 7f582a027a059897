// In-process tests of the Coordinator service, the worker daemon and the result formats: a real
// gRPC server on a loopback port, raw stubs to drive exact protocol sequences, and WorkerDaemons
// with fake executors. Bounded waits; no timing assertions.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "reports/markdown_table.h"
#include "coordinator/client.h"
#include "coordinator/results_format.h"
#include "coordinator/server.h"
#include "proto/kvgrid.grpc.pb.h"
#include "proto/rpc_common.h"
#include "worker/daemon/noop_executor.h"
#include "worker/daemon/worker_daemon.h"

namespace kvgrid {
namespace {

using Clock = std::chrono::steady_clock;

bool WaitFor(const std::function<bool()>& pred, double timeout_s) {
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

std::string NoopGrid(const std::string& name, int runs, int ms, int max_attempts = 3) {
  return absl::StrCat("name: ", name,
                      "\nmodel: {id: EleutherAI/pythia-70m-deduped, revision: main, dtype: "
                      "float32}\ndevice: cpu\nmax_attempts: ",
                      max_attempts, "\ndatasets:\n  - {name: wikitext-2-raw-v1, split: test, samples: ",
                      runs, "}\nworkloads:\n  noop: {ms: ", ms,
                      "}\ngrid:\n  policy:\n    - {name: full}\n");
}

class FakeExecutor : public RunExecutor {
 public:
  explicit FakeExecutor(std::function<absl::StatusOr<RunResult>(const RunSpec&)> fn)
      : fn_(std::move(fn)) {}
  absl::StatusOr<RunResult> Execute(const RunSpec& spec, const ProgressFn&) override {
    return fn_(spec);
  }
  nlohmann::json Capabilities() const override {
    return {{"device", "cpu"}, {"device_name", "fake"}, {"memory_bytes", 1}, {"fake_version", "1"}};
  }

 private:
  std::function<absl::StatusOr<RunResult>(const RunSpec&)> fn_;
};

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvgrid-coord-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    token_ = "test-token";
  }
  void TearDown() override {
    server_.reset();
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)std::system(cmd.c_str());
  }

  void Start(int64_t lease_ms = 2000, int64_t heartbeat_ms = 200, int port = 0,
             int64_t max_wait_ms = 500, int64_t poll_ms = 200) {
    CoordinatorOptions opt;
    opt.db_path = dir_ + "/db.sqlite";
    opt.listen = absl::StrCat("127.0.0.1:", port);
    opt.token = token_;
    opt.lease_ms = lease_ms;
    opt.heartbeat_ms = heartbeat_ms;
    opt.max_wait_ms = max_wait_ms;
    opt.poll_ms = poll_ms;
    opt.expire_interval_ms = 50;
    auto s = CoordinatorServer::Start(opt);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    auto channel = rpc::MakeChannel(server_->address(), {});
    ASSERT_TRUE(channel.ok());
    stub_ = v1::Coordinator::NewStub(*channel);
  }

  void Prepare(grpc::ClientContext* ctx, bool with_token = true) {
    rpc::PrepareContext(ctx, with_token ? token_ : "", std::chrono::milliseconds(10000));
  }

  std::unique_ptr<CoordinatorClient> Client() {
    ClientOptions o;
    o.address = server_->address();
    o.token = token_;
    auto c = CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok());
    return std::move(*c);
  }

  void Register(const std::string& id) {
    v1::RegisterWorkerRequest req;
    req.mutable_worker()->set_worker_id(id);
    req.mutable_worker()->set_device("cpu");
    v1::RegisterWorkerResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    ASSERT_TRUE(stub_->RegisterWorker(&ctx, req, &resp).ok());
  }

  v1::LeaseRunResponse Lease(const std::string& id, int64_t wait_ms = 2000) {
    v1::LeaseRunRequest req;
    req.set_worker_id(id);
    req.set_device("cpu");
    req.set_wait_ms(wait_ms);
    v1::LeaseRunResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status st = stub_->LeaseRun(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  v1::CompleteRunResponse Complete(const std::string& id, const v1::Lease& lease, double value) {
    v1::CompleteRunRequest req;
    req.set_worker_id(id);
    req.set_lease_id(lease.lease_id());
    req.set_run_id(lease.run_id());
    req.set_attempt(lease.attempt());
    auto* m = req.mutable_result()->add_metrics();
    m->set_name("x");
    m->set_value(value);
    m->set_unit("ms");
    req.mutable_result()->set_environment_json(absl::StrCat("{\"worker\":\"", id, "\"}"));
    v1::CompleteRunResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status st = stub_->CompleteRun(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  std::string dir_, token_;
  std::unique_ptr<CoordinatorServer> server_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(CoordinatorServiceTest, EveryRpcRequiresTheBearerToken) {
  Start();
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, /*with_token=*/false);
    v1::StatusResponse resp;
    EXPECT_EQ(stub_->Status(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, false);
    v1::SubmitRequest req;
    req.set_grid_yaml(NoopGrid("x", 1, 0));
    v1::SubmitResponse resp;
    EXPECT_EQ(stub_->Submit(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, false);
    v1::RegisterWorkerRequest req;
    req.mutable_worker()->set_worker_id("w");
    req.mutable_worker()->set_device("cpu");
    v1::RegisterWorkerResponse resp;
    EXPECT_EQ(stub_->RegisterWorker(&ctx, req, &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    rpc::PrepareContext(&ctx, "wrong", std::chrono::milliseconds(5000));
    v1::LeaseRunRequest req;
    req.set_worker_id("w");
    req.set_device("cpu");
    v1::LeaseRunResponse resp;
    EXPECT_EQ(stub_->LeaseRun(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(server_->service().counters().unauthenticated.load(), 4);
  auto exps = server_->store().ListExperiments();
  ASSERT_TRUE(exps.ok());
  EXPECT_TRUE(exps->empty());
}

TEST_F(CoordinatorServiceTest, UnknownWorkerMustRegisterBeforeLeasing) {
  Start();
  v1::LeaseRunRequest req;
  req.set_worker_id("stranger");
  req.set_device("cpu");
  v1::LeaseRunResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  EXPECT_EQ(stub_->LeaseRun(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorServiceTest, LongPollReturnsTheRunSubmittedWhileWaiting) {
  // An 8 s long poll that re-checks the store only every 8 s: the run submitted while it waits
  // must wake it (Submit notifies waiting leases), not the deadline or the periodic re-check.
  // Without the wake-up the poll would return the run only after 8 s, so the bound below is a
  // functional check, not a timing benchmark.
  Start(/*lease_ms=*/30000, /*heartbeat_ms=*/200, /*port=*/0, /*max_wait_ms=*/8000,
        /*poll_ms=*/8000);
  Register("w");
  v1::LeaseRunResponse got;
  const auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point returned;
  std::thread poller([&] {
    got = Lease("w", /*wait_ms=*/8000);
    returned = std::chrono::steady_clock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto client = Client();
  ASSERT_TRUE(client->Submit(NoopGrid("poll", 1, 0), "poll.yaml", false).ok());
  poller.join();
  ASSERT_TRUE(got.has_run()) << "the long poll ended without the run submitted during it";
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(returned - start).count(), 6000)
      << "the long poll was not woken by the submission";
  EXPECT_EQ(got.lease().experiment(), "poll");
  EXPECT_EQ(got.lease().attempt(), 1);
  EXPECT_FALSE(got.spec().canonical_json().empty());
}

TEST_F(CoordinatorServiceTest, LateResultOfAnExpiredLeaseFirstValidCompletionWins) {
  Start(/*lease_ms=*/300, /*heartbeat_ms=*/100);
  Register("slow");
  Register("fast");
  ASSERT_TRUE(Client()->Submit(NoopGrid("late", 1, 0), "late.yaml", false).ok());
  v1::LeaseRunResponse first = Lease("slow");
  ASSERT_TRUE(first.has_run());
  // No heartbeat: the lease expires and the run is leased again.
  v1::LeaseRunResponse second;
  ASSERT_TRUE(WaitFor(
      [&] {
        second = Lease("fast", 100);
        return second.has_run();
      },
      20));
  EXPECT_EQ(second.lease().run_id(), first.lease().run_id());
  EXPECT_EQ(second.lease().attempt(), 2);

  // The expired lease's heartbeat is told its lease is gone.
  {
    v1::HeartbeatRequest req;
    req.set_worker_id("slow");
    req.set_lease_id(first.lease().lease_id());
    v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    ASSERT_TRUE(stub_->Heartbeat(&ctx, req, &resp).ok());
    EXPECT_FALSE(resp.lease_valid());
    EXPECT_FALSE(resp.reason().empty());
  }
  // The slow worker reports first: a valid measurement, accepted; the re-lease loses.
  v1::CompleteRunResponse late = Complete("slow", first.lease(), 1.0);
  EXPECT_TRUE(late.accepted()) << late.reason();
  EXPECT_TRUE(absl::StrContains(late.reason(), "late")) << late.reason();
  v1::CompleteRunResponse dup = Complete("fast", second.lease(), 2.0);
  EXPECT_FALSE(dup.accepted());
  EXPECT_EQ(dup.reason(), "duplicate");
  // A retry of the accepted call (lost reply) is answered accepted again, nothing rewritten.
  v1::CompleteRunResponse retry = Complete("slow", first.lease(), 1.0);
  EXPECT_TRUE(retry.accepted());
  EXPECT_EQ(retry.reason(), "already recorded (retry)");

  auto runs = server_->store().ListRuns("late");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].status, "done");
  EXPECT_EQ((*runs)[0].result_attempt.value_or(0), 1);
  EXPECT_DOUBLE_EQ((*runs)[0].metrics.at("x").first, 1.0);
}

TEST_F(CoordinatorServiceTest, HeartbeatTellsTheWorkerItsExperimentWasCancelled) {
  Start();
  Register("w");
  ASSERT_TRUE(Client()->Submit(NoopGrid("c", 3, 0), "c.yaml", false).ok());
  v1::LeaseRunResponse leased = Lease("w");
  ASSERT_TRUE(leased.has_run());
  auto cancelled = Client()->Cancel("c");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->cancelled_runs(), 3);
  v1::HeartbeatRequest req;
  req.set_worker_id("w");
  req.set_lease_id(leased.lease().lease_id());
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  ASSERT_TRUE(stub_->Heartbeat(&ctx, req, &resp).ok());
  EXPECT_FALSE(resp.lease_valid());
  EXPECT_TRUE(resp.cancelled()) << resp.reason();
  v1::CompleteRunResponse late = Complete("w", leased.lease(), 1);
  EXPECT_FALSE(late.accepted());
  EXPECT_EQ(late.reason(), "cancelled");
  EXPECT_FALSE(Lease("w", 100).has_run());
}

TEST_F(CoordinatorServiceTest, RetryableFailuresAreRetriedThenTheRunFails) {
  Start();
  std::atomic<int> calls{0};
  FakeExecutor failing([&](const RunSpec&) -> absl::StatusOr<RunResult> {
    ++calls;
    return absl::InternalError("out of memory (simulated)");
  });
  WorkerDaemonOptions opt;
  opt.coordinator = server_->address();
  opt.token = token_;
  opt.worker_id = "flaky";
  opt.lease_wait_ms = 200;
  opt.log = [](const std::string&) {};
  WorkerDaemon daemon(opt, &failing);
  std::thread t([&] { EXPECT_TRUE(daemon.Run().ok()); });
  ASSERT_TRUE(Client()->Submit(NoopGrid("flaky", 1, 0, /*max_attempts=*/2), "f.yaml", false).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = server_->store().Progress("flaky");
        return p.ok() && p->failed == 1;
      },
      30));
  daemon.Drain();
  t.join();
  EXPECT_EQ(calls.load(), 2);
  auto runs = server_->store().ListRuns("flaky");
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ((*runs)[0].status, "failed");
  EXPECT_EQ((*runs)[0].attempts, 2);
  EXPECT_TRUE(absl::StrContains((*runs)[0].error, "out of memory")) << (*runs)[0].error;
}

TEST_F(CoordinatorServiceTest, InvalidArgumentFailuresAreNotRetried) {
  Start();
  auto noop = MakeNoopExecutor("cpu");
  std::atomic<int> calls{0};
  FakeExecutor invalid([&](const RunSpec&) -> absl::StatusOr<RunResult> {
    ++calls;
    return absl::InvalidArgumentError("policy knorm: keep_ratio out of range");
  });
  WorkerDaemonOptions opt;
  opt.coordinator = server_->address();
  opt.token = token_;
  opt.worker_id = "strict";
  opt.lease_wait_ms = 200;
  opt.log = [](const std::string&) {};
  WorkerDaemon daemon(opt, &invalid);
  std::thread t([&] { EXPECT_TRUE(daemon.Run().ok()); });
  ASSERT_TRUE(Client()->Submit(NoopGrid("strict", 1, 0, 3), "s.yaml", false).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = server_->store().Progress("strict");
        return p.ok() && p->failed == 1;
      },
      30));
  daemon.Drain();
  t.join();
  EXPECT_EQ(calls.load(), 1);
  auto runs = server_->store().ListRuns("strict");
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ((*runs)[0].attempts, 1);
  EXPECT_TRUE(absl::StrContains((*runs)[0].error, "keep_ratio")) << (*runs)[0].error;
}

TEST_F(CoordinatorServiceTest, ComputedResultSurvivesACoordinatorRestart) {
  Start(/*lease_ms=*/5000, /*heartbeat_ms=*/200);
  const int port = server_->port();
  std::atomic<bool> restart_requested{false};
  std::atomic<bool> restarted{false};
  // The executor takes the coordinator down while it computes, and waits until it is gone.
  FakeExecutor ex([&](const RunSpec&) -> absl::StatusOr<RunResult> {
    restart_requested = true;
    WaitFor([&] { return restarted.load(); }, 30);
    RunResult r;
    r.AddMetric("x", 42, "");
    return r;
  });
  WorkerDaemonOptions opt;
  opt.coordinator = server_->address();
  opt.token = token_;
  opt.worker_id = "survivor";
  opt.lease_wait_ms = 200;
  opt.initial_backoff_ms = 50;
  opt.max_backoff_ms = 200;
  opt.log = [](const std::string&) {};
  WorkerDaemon daemon(opt, &ex);
  std::thread t([&] { EXPECT_TRUE(daemon.Run().ok()); });
  ASSERT_TRUE(Client()->Submit(NoopGrid("survive", 1, 0), "s.yaml", false).ok());
  ASSERT_TRUE(WaitFor([&] { return restart_requested.load(); }, 30));
  server_->Shutdown();
  server_.reset();
  restarted = true;  // the result is computed while no coordinator listens
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Start(5000, 200, port);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = server_->store().Progress("survive");
        return p.ok() && p->done == 1;
      },
      30));
  daemon.Drain();
  t.join();
  auto runs = server_->store().ListRuns("survive");
  ASSERT_TRUE(runs.ok());
  EXPECT_EQ((*runs)[0].worker_id, "survivor");
  EXPECT_EQ((*runs)[0].attempts, 1);
  EXPECT_DOUBLE_EQ((*runs)[0].metrics.at("x").first, 42);
  EXPECT_GE(daemon.stats().reconnects, 1);
}

TEST_F(CoordinatorServiceTest, MalformedGridIsRejectedWithLocationAndNothingStored) {
  Start();
  auto r = Client()->Submit("name: x\nmodel: {id: m}\nbogus: 1\n", "broken.yaml", false);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(r.status()));
  EXPECT_TRUE(absl::StartsWith(r.status().message(), "broken.yaml:")) << r.status();
  auto exps = server_->store().ListExperiments();
  ASSERT_TRUE(exps.ok());
  EXPECT_TRUE(exps->empty());
}

TEST_F(CoordinatorServiceTest, ResultsJsonCarriesTheDocumentedFields) {
  Start();
  auto noop = MakeNoopExecutor("cpu");
  WorkerDaemonOptions opt;
  opt.coordinator = server_->address();
  opt.token = token_;
  opt.worker_id = "w";
  opt.lease_wait_ms = 200;
  opt.log = [](const std::string&) {};
  WorkerDaemon daemon(opt, noop.get());
  std::thread t([&] { EXPECT_TRUE(daemon.Run().ok()); });
  ASSERT_TRUE(Client()->Submit(NoopGrid("fmt", 2, 1), "fmt.yaml", false).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = server_->store().Progress("fmt");
        return p.ok() && p->done == 2;
      },
      30));
  daemon.Drain();
  t.join();
  auto results = Client()->Results("fmt", /*include_samples=*/true);
  ASSERT_TRUE(results.ok());
  nlohmann::json j = ResultsToJson(*results);
  ASSERT_EQ(j.size(), 2u);
  for (const char* key : {"run_key", "status", "attempts", "policy", "dataset", "worker",
                          "metrics", "spec", "environment", "samples"}) {
    EXPECT_TRUE(j[0].contains(key)) << key << " in " << j[0].dump();
  }
  EXPECT_EQ(j[0]["policy"], "full");
  EXPECT_EQ(j[0]["worker"], "w");
  EXPECT_TRUE(j[0]["metrics"]["elapsed_ms"].is_number());
  EXPECT_EQ(j[0]["spec"]["workload"], "noop");
  std::string csv = ResultsToCsv(*results);
  EXPECT_TRUE(absl::StrContains(csv, "elapsed_ms")) << csv;
  auto md = FormatResults(*results, "md");
  ASSERT_TRUE(md.ok());
  // A pipe table (reports/markdown_table): one row per run, the metric's unit in its header.
  auto tables = reports::ParseMarkdownTables(*md);
  ASSERT_EQ(tables.size(), 1u) << *md;
  EXPECT_EQ(tables[0].headers.front(), "run_key");
  ASSERT_GE(tables[0].Column("elapsed_ms (ms)"), 0) << *md;
  EXPECT_EQ(tables[0].rows.size(), static_cast<size_t>(results->runs_size()));
  EXPECT_FALSE(FormatResults(*results, "xml").ok());
}

TEST_F(CoordinatorServiceTest, OnlyOneCoordinatorMayOpenADatabase) {
  Start();
  CoordinatorOptions opt;
  opt.db_path = dir_ + "/db.sqlite";
  opt.listen = "127.0.0.1:0";
  opt.token = token_;
  auto second = CoordinatorServer::Start(opt);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "already served")) << second.status();
  server_->Shutdown();
  auto third = CoordinatorServer::Start(opt);
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST(RpcCommonTest, TokenFilesAndBearerChecks) {
  char tmpl[] = "/tmp/kvgrid-token-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/t";
  const std::string token = rpc::GenerateToken();
  EXPECT_EQ(token.size(), 64u);
  ASSERT_TRUE(rpc::WriteTokenFile(path, token).ok());
  auto read = rpc::ReadTokenFile(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, token);
  EXPECT_FALSE(rpc::ReadTokenFile(std::string(tmpl) + "/missing").ok());
  EXPECT_TRUE(absl::StrContains(rpc::ReadTokenFile(std::string(tmpl) + "/missing").status().message(),
                                "/missing"));
  ::setenv("KVGRID_TOKEN", "from-env", 1);
  ::unsetenv("KVGRID_TOKEN_FILE");
  auto env = rpc::ResolveToken("");
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(*env, "from-env");
  auto flag = rpc::ResolveToken(path);
  ASSERT_TRUE(flag.ok());
  EXPECT_EQ(*flag, token);
  ::unsetenv("KVGRID_TOKEN");
  ::unsetenv("KVGRID_COORDINATOR");
  EXPECT_EQ(rpc::ResolveCoordinatorAddress(""), "127.0.0.1:50051");
  EXPECT_EQ(rpc::ResolveCoordinatorAddress("h:1"), "h:1");
  std::string cmd = std::string("rm -rf '") + tmpl + "'";
  (void)std::system(cmd.c_str());
}

// What `kvgrid status` and `kvgrid run` print while the database refuses writes.
TEST(StatusFormat, StoreProblemIsShownWithItsAgeAndCounts) {
  v1::StatusResponse status;
  status.set_now_ms(70000);
  auto* e = status.add_experiments();
  e->set_name("exp");
  e->set_status("active");
  e->set_total(10);
  e->set_done(4);
  e->set_running(2);
  std::string clean = FormatStatus(status);
  EXPECT_EQ(clean.find("WARNING"), std::string::npos) << clean;
  status.set_store_problem("database /d/k.db: disk full while committing (0.0 KiB free on its filesystem)");
  status.set_store_problem_since_ms(10000);
  std::string out = FormatStatus(status);
  EXPECT_NE(out.find("WARNING: store NOT accepting writes for 60 s"), std::string::npos) << out;
  EXPECT_NE(out.find("disk full"), std::string::npos) << out;
  EXPECT_NE(out.find("exp"), std::string::npos) << out;
  EXPECT_EQ(StoreProblemLine("", 0, 1), "");
  EXPECT_NE(ProgressLine(*e).find("4/10 done, 2 running"), std::string::npos) << ProgressLine(*e);
}

}  // namespace
}  // namespace kvgrid
