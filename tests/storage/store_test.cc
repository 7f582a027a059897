#include "storage/store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvgrid_store_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "kvgrid.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Store> OpenRw() {
    auto s = Store::Open(path_, OpenMode::kReadWrite);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  static std::vector<RunSpec> Specs(int n, const std::string& device = "cpu") {
    std::vector<RunSpec> out;
    for (int i = 0; i < n; ++i) {
      RunSpec s;
      s.device = device;
      s.workload = "noop";
      s.seed = i;
      s.policy = PolicySpec{"full", {}};
      out.push_back(s);
    }
    return out;
  }

  static RunResult Result(double ppl) {
    RunResult r;
    r.AddMetric("ppl", ppl, "");
    r.AddMetric("ttft_ms", 12.5, "ms");
    r.samples.push_back({"ttft_ms", "ms", {12.0, 13.0, 12.5}});
    r.environment = {{"device", "cpu"}};
    return r;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(StoreTest, CreatesSchemaWithVersion) {
  auto store = OpenRw();
  ASSERT_NE(store, nullptr);
  auto v = store->SchemaVersion();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, kStoreSchemaVersion);
  store.reset();
  // Reopening is a no-op migration.
  store = OpenRw();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->SchemaVersion(), kStoreSchemaVersion);
  auto t = store->ExecuteReadOnlyQuery("PRAGMA journal_mode");
  // journal_mode is not in the read pragma allow-list.
  EXPECT_FALSE(t.ok());
  auto wal = store->ExecuteReadOnlyQuery(
      "SELECT name FROM sqlite_master WHERE type IN ('table','view') ORDER BY name");
  ASSERT_TRUE(wal.ok()) << wal.status();
  std::set<std::string> names;
  for (const auto& row : wal->rows) names.insert(row[0].text);
  for (const char* n : {"experiments", "runs", "results", "samples", "result_records", "workers",
                        "leases", "schema_version", "run_metrics", "run_samples"}) {
    EXPECT_TRUE(names.count(n)) << n;
  }
  EXPECT_TRUE(fs::exists(path_ + "-wal") || fs::exists(path_));
}

TEST_F(StoreTest, RefusesNewerSchema) {
  {
    auto store = OpenRw();
    ASSERT_NE(store, nullptr);
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "INSERT INTO schema_version VALUES(999, 0)", nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  for (OpenMode mode : {OpenMode::kReadWrite, OpenMode::kReadOnly}) {
    auto s = Store::Open(path_, mode);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(s.status().message().find("newer kvgrid"), std::string::npos) << s.status();
    EXPECT_NE(s.status().message().find("999"), std::string::npos) << s.status();
  }
}

TEST_F(StoreTest, RefusesForeignDatabaseAndMissingFileReadOnly) {
  auto missing = Store::Open(path_, OpenMode::kReadOnly);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(path_));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE other(x)", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto s = Store::Open(path_, OpenMode::kReadWrite);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  // Not SQLite at all.
  std::string junk = (dir_ / "junk.db").string();
  FILE* f = std::fopen(junk.c_str(), "wb");
  std::fputs("this is not a database file, clearly not one at all................", f);
  std::fclose(f);
  auto j = Store::Open(junk, OpenMode::kReadWrite);
  EXPECT_FALSE(j.ok());
}

TEST_F(StoreTest, SubmitPersistsAllRunsAndDeduplicates) {
  auto store = OpenRw();
  auto specs = Specs(5);
  specs.push_back(specs[0]);  // duplicate point
  auto out = store->SubmitExperiment("exp", "name: exp\n", specs, 3, false, 1000);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->created);
  EXPECT_EQ(out->total, 5);
  EXPECT_EQ(out->planned, 5);
  auto p = store->Progress("exp");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->planned, 5);
  EXPECT_EQ(p->total, 5);
  EXPECT_EQ(p->status, "active");
  auto runs = store->ListRuns("exp");
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 5u);
  EXPECT_EQ((*runs)[0].run_key, RunKey(specs[0]));
  EXPECT_EQ((*runs)[0].spec_json, specs[0].CanonicalJson());
  EXPECT_EQ((*runs)[0].workload, "noop");
  EXPECT_EQ(store->SubmitExperiment("empty", "", {}, 3, false, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->GetExperiment("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, ClaimCompleteLifecycle) {
  auto store = OpenRw();
  ASSERT_TRUE(store->UpsertWorker({"w1", "host", "cpu", "Test CPU", "{}", 0}).ok());
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(2), 3, false, 0).ok());
  auto l = store->ClaimNextRun("w1", "cpu", 10000, 100);
  ASSERT_TRUE(l.ok() && l->has_value()) << l.status();
  const LeasedRun run = **l;
  EXPECT_EQ(run.attempt, 1);
  EXPECT_EQ(run.experiment, "exp");
  EXPECT_EQ(run.lease_id.size(), 32u);
  EXPECT_EQ(run.lease_expires_at, 10100);
  ASSERT_TRUE(store->ExtendLease(run.lease_id, 5000, 10000, 0.5, "repeat 1/3").ok());
  auto view = store->GetRun(run.run_id);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->status, "running");
  EXPECT_EQ(view->lease_expires_at, 15000);
  EXPECT_EQ(view->phase, "repeat 1/3");
  auto workers = store->ListWorkers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].status, "busy");
  EXPECT_EQ((*workers)[0].current_run_key, run.run_key);

  auto c = store->CompleteRun(run.run_id, run.attempt, run.lease_id, Result(20.5), "w1", 6000);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->accepted);
  EXPECT_EQ(c->reason, "recorded");
  // The same call retried (lost reply): idempotent, still accepted, nothing duplicated.
  auto again = store->CompleteRun(run.run_id, run.attempt, run.lease_id, Result(20.5), "w1", 6100);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->accepted);
  EXPECT_EQ(again->reason, "already recorded (retry)");
  view = store->GetRun(run.run_id);
  EXPECT_EQ(view->status, "done");
  EXPECT_EQ(view->attempts, 1);
  EXPECT_DOUBLE_EQ(view->metrics.at("ppl").first, 20.5);
  EXPECT_EQ(view->metrics.at("ttft_ms").second, "ms");
  EXPECT_EQ(view->samples.at("ttft_ms"), (std::vector<double>{12.0, 13.0, 12.5}));
  EXPECT_NE(view->environment_json.find("cpu"), std::string::npos);
  auto q = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM results");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->rows[0][0].text, "2");
  auto m = store->ExecuteReadOnlyQuery(
      "SELECT experiment, metric, value, unit FROM run_metrics WHERE metric = 'ppl'");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows.size(), 1u);
  EXPECT_EQ(m->rows[0][2].text, "20.5");
  EXPECT_EQ(m->rows[0][2].kind, QueryCell::kReal);
  // Heartbeat on a finished lease is refused.
  EXPECT_EQ(store->ExtendLease(run.lease_id, 6200, 1000, 1, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->ExtendLease("nope", 6200, 1000, 1, "x").code(), absl::StatusCode::kNotFound);
  workers = store->ListWorkers();
  EXPECT_EQ((*workers)[0].status, "idle");
  EXPECT_EQ((*workers)[0].runs_done, 1);
}

TEST_F(StoreTest, ClaimIsAtomicAcrossThreads) {
  auto store = OpenRw();
  constexpr int kRuns = 300;
  constexpr int kThreads = 16;
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(kRuns), 3, false, 0).ok());
  std::mutex mu;
  std::map<int64_t, int> claims;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string worker = "w" + std::to_string(t);
      while (true) {
        auto l = store->ClaimNextRun(worker, "cpu", 60000, 10);
        if (!l.ok()) { ++errors; return; }
        if (!l->has_value()) return;
        {
          std::lock_guard<std::mutex> lock(mu);
          ++claims[(*l)->run_id];
        }
        auto c = store->CompleteRun((*l)->run_id, (*l)->attempt, (*l)->lease_id, Result(1), worker, 20);
        if (!c.ok() || !c->accepted) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claims.size(), static_cast<size_t>(kRuns));
  for (const auto& [id, n] : claims) EXPECT_EQ(n, 1) << "run " << id << " claimed " << n << " times";
  auto p = store->Progress("exp");
  EXPECT_EQ(p->done, kRuns);
  EXPECT_EQ(p->status, "done");
}

TEST_F(StoreTest, TwoConnectionsDoNotReportLocked) {
  // A second read-write Store on the same file (as a restarted coordinator overlapping with a
  // dying one would): writes interleave without "database is locked".
  auto a = OpenRw();
  auto b = OpenRw();
  ASSERT_TRUE(a->SubmitExperiment("exp", "y", Specs(100), 3, false, 0).ok());
  std::atomic<int> errors{0};
  std::atomic<int> claimed{0};
  auto work = [&](Store* s, const std::string& w) {
    while (true) {
      auto l = s->ClaimNextRun(w, "cpu", 60000, 1);
      if (!l.ok()) { ++errors; ADD_FAILURE() << l.status(); return; }
      if (!l->has_value()) return;
      ++claimed;
      auto c = s->CompleteRun((*l)->run_id, (*l)->attempt, (*l)->lease_id, Result(1), w, 2);
      if (!c.ok()) { ++errors; ADD_FAILURE() << c.status(); }
    }
  };
  std::thread t1(work, a.get(), "wa"), t2(work, b.get(), "wb"), t3(work, a.get(), "wc"),
      t4(work, b.get(), "wd");
  t1.join(); t2.join(); t3.join(); t4.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claimed.load(), 100);
}

// A write lock held by another connection past the busy timeout: the write fails as Unavailable
// naming the file, the store's health says so, and the next write that gets through clears it.
TEST_F(StoreTest, LockHeldPastTheTimeoutIsUnavailableAndShowsInHealth) {
  auto s = OpenRw();
  WorkerInfo w;
  w.id = "w";
  w.now_ms = 1;
  ASSERT_TRUE(s->UpsertWorker(w).ok());
  EXPECT_TRUE(s->health().ok);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  absl::Status st = s->WorkerHeartbeat("w", 2);
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_NE(st.message().find("busy"), std::string::npos) << st;
  EXPECT_NE(st.message().find(path_), std::string::npos) << st;
  StoreHealth h = s->health();
  EXPECT_FALSE(h.ok);
  EXPECT_NE(h.problem.find("busy"), std::string::npos) << h.problem;
  EXPECT_GT(h.since_ms, 0);
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  ASSERT_TRUE(s->WorkerHeartbeat("w", 3).ok());
  EXPECT_TRUE(s->health().ok);
  EXPECT_EQ(s->health().failed_writes, 1);
}

// Damaged pages: refused on open (read-write and read-only) with the path and the way out.
TEST_F(StoreTest, DamagedFileIsRefusedOnOpenWithTheWayOut) {
  {
    auto s = OpenRw();
    ASSERT_TRUE(s->SubmitExperiment("exp", "y", Specs(200), 3, false, 0).ok());
  }
  const auto size = fs::file_size(path_);
  ASSERT_GT(size, 4096u * 4);
  {
    FILE* f = std::fopen(path_.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, static_cast<long>(size / 4096 / 2 * 4096 + 16), SEEK_SET);
    std::string junk(3000, '\x5a');
    std::fwrite(junk.data(), 1, junk.size(), f);
    std::fclose(f);
  }
  for (OpenMode mode : {OpenMode::kReadOnly, OpenMode::kReadWrite}) {
    auto s = Store::Open(path_, mode);
    ASSERT_FALSE(s.ok());
    EXPECT_TRUE(absl::IsDataLoss(s.status())) << s.status();
    EXPECT_NE(s.status().message().find(path_ + " is corrupt"), std::string::npos) << s.status();
    EXPECT_NE(s.status().message().find("kvgrid db recover"), std::string::npos) << s.status();
  }
}

TEST_F(StoreTest, DeviceMatching) {
  auto store = OpenRw();
  std::vector<RunSpec> specs = Specs(1, "cuda");
  auto cpu = Specs(1, "cpu");
  auto any = Specs(1, "auto");
  cpu[0].seed = 10;
  any[0].seed = 20;
  auto cuda1 = Specs(1, "cuda:1");
  cuda1[0].seed = 30;
  specs.push_back(cpu[0]);
  specs.push_back(any[0]);
  specs.push_back(cuda1[0]);
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", specs, 3, false, 0).ok());
  auto c1 = store->ClaimNextRun("cpu-w", "cpu", 1000, 0);
  ASSERT_TRUE(c1.ok() && c1->has_value());
  EXPECT_EQ((*c1)->run_key, RunKey(cpu[0]));
  auto c2 = store->ClaimNextRun("cpu-w2", "cpu", 1000, 0);
  EXPECT_EQ((*c2)->run_key, RunKey(any[0]));
  auto c3 = store->ClaimNextRun("cpu-w3", "cpu", 1000, 0);
  ASSERT_TRUE(c3.ok());
  EXPECT_FALSE(c3->has_value());
  auto g0 = store->ClaimNextRun("gpu0", "cuda:0", 1000, 0);
  EXPECT_EQ((*g0)->run_key, RunKey(specs[0]));
  auto g0b = store->ClaimNextRun("gpu0b", "cuda", 1000, 0);
  EXPECT_FALSE(g0b->has_value());  // cuda:1 run is not for cuda:0
  auto g1 = store->ClaimNextRun("gpu1", "cuda:1", 1000, 0);
  EXPECT_EQ((*g1)->run_key, RunKey(cuda1[0]));
}

TEST_F(StoreTest, LeaseExpiryRequeuesAndLateCompletionAcceptedOnce) {
  auto store = OpenRw();
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(1), 3, false, 0).ok());
  auto a = **store->ClaimNextRun("A", "cpu", 1000, 0);
  // Not yet expired.
  EXPECT_EQ(*store->ExpireLeases(500), 0);
  EXPECT_EQ(*store->ExpireLeases(1500), 1);
  auto v = store->GetRun(a.run_id);
  EXPECT_EQ(v->status, "planned");
  EXPECT_EQ(v->attempt, 1);
  // A's heartbeat now fails: its lease was expired and the run re-queued.
  auto hb = store->ExtendLease(a.lease_id, 1600, 1000, 0.9, "x");
  EXPECT_EQ(hb.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(hb.message().find("expired"), std::string::npos) << hb;
  auto b = **store->ClaimNextRun("B", "cpu", 1000, 1700);
  EXPECT_EQ(b.run_id, a.run_id);
  EXPECT_EQ(b.attempt, 2);
  // A reports late: valid measurement, accepted; the run is done.
  auto late = store->CompleteRun(a.run_id, a.attempt, a.lease_id, Result(7), "A", 1800);
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(late->accepted);
  EXPECT_NE(late->reason.find("late"), std::string::npos);
  // B's heartbeat is refused, and B's completion is a duplicate.
  EXPECT_EQ(store->ExtendLease(b.lease_id, 1900, 1000, 0.5, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  auto dup = store->CompleteRun(b.run_id, b.attempt, b.lease_id, Result(8), "B", 2000);
  ASSERT_TRUE(dup.ok());
  EXPECT_FALSE(dup->accepted);
  EXPECT_EQ(dup->reason, "duplicate");
  v = store->GetRun(a.run_id);
  EXPECT_EQ(v->status, "done");
  EXPECT_EQ(v->result_attempt, 1);
  EXPECT_EQ(v->worker_id, "A");
  EXPECT_DOUBLE_EQ(v->metrics.at("ppl").first, 7);
  auto n = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM result_records");
  EXPECT_EQ(n->rows[0][0].text, "1");
  auto r = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM results WHERE attempt = 2");
  EXPECT_EQ(r->rows[0][0].text, "0");
}

TEST_F(StoreTest, MaxAttemptsFromExpiryAndFailures) {
  auto store = OpenRw();
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(1), 2, false, 0).ok());
  auto a = **store->ClaimNextRun("A", "cpu", 100, 0);
  EXPECT_EQ(*store->ExpireLeases(200), 1);
  auto b = **store->ClaimNextRun("B", "cpu", 100, 300);
  EXPECT_EQ(b.attempt, 2);
  EXPECT_EQ(*store->ExpireLeases(500), 1);
  auto v = store->GetRun(a.run_id);
  EXPECT_EQ(v->status, "failed");
  EXPECT_NE(v->error.find("lease expired 2 times"), std::string::npos) << v->error;
  EXPECT_EQ(store->Progress("exp")->status, "failed");
  EXPECT_FALSE(store->ClaimNextRun("C", "cpu", 100, 600)->has_value());

  // Retryable failures back off, then give up at max_attempts.
  ASSERT_TRUE(store->SubmitExperiment("exp2", "y", Specs(1, "auto"), 3, false, 0).ok());
  auto r1 = **store->ClaimNextRun("C", "cpu", 1000, 1000);
  ASSERT_TRUE(store->FailRun(r1.run_id, r1.attempt, r1.lease_id, "oom", true, 1000).ok());
  v = store->GetRun(r1.run_id);
  EXPECT_EQ(v->status, "planned");
  EXPECT_EQ(v->not_before, 2000);  // 1 s back-off after the first attempt
  EXPECT_FALSE(store->ClaimNextRun("C", "cpu", 1000, 1500)->has_value());
  auto r2 = **store->ClaimNextRun("C", "cpu", 1000, 2000);
  ASSERT_TRUE(store->FailRun(r2.run_id, r2.attempt, r2.lease_id, "oom", true, 2000).ok());
  EXPECT_EQ(store->GetRun(r1.run_id)->not_before, 4000);  // 2 s
  // A stale lease cannot fail the run.
  EXPECT_EQ(store->FailRun(r1.run_id, r1.attempt, r1.lease_id, "x", true, 2000).code(),
            absl::StatusCode::kFailedPrecondition);
  auto r3 = **store->ClaimNextRun("C", "cpu", 1000, 4000);
  ASSERT_TRUE(store->FailRun(r3.run_id, r3.attempt, r3.lease_id, "oom", true, 4000).ok());
  v = store->GetRun(r1.run_id);
  EXPECT_EQ(v->status, "failed");
  EXPECT_EQ(v->attempts, 3);
  EXPECT_NE(v->error.find("oom"), std::string::npos);

  // Non-retryable: failed at once.
  ASSERT_TRUE(store->SubmitExperiment("exp3", "y", Specs(1, "cuda"), 3, false, 0).ok());
  auto r4 = **store->ClaimNextRun("G", "cuda", 1000, 0);
  ASSERT_TRUE(store->FailRun(r4.run_id, r4.attempt, r4.lease_id, "bad spec", false, 10).ok());
  EXPECT_EQ(store->GetRun(r4.run_id)->status, "failed");
  EXPECT_EQ(store->GetRun(r4.run_id)->error, "bad spec");
}

TEST_F(StoreTest, ReleaseDoesNotCostAnAttempt) {
  auto store = OpenRw();
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(1), 1, false, 0).ok());
  auto a = **store->ClaimNextRun("A", "cpu", 1000, 0);
  ASSERT_TRUE(store->ReleaseRun(a.lease_id, 10).ok());
  EXPECT_EQ(store->ReleaseRun(a.lease_id, 10).code(), absl::StatusCode::kFailedPrecondition);
  auto v = store->GetRun(a.run_id);
  EXPECT_EQ(v->status, "planned");
  EXPECT_EQ(v->attempts, 0);
  auto b = **store->ClaimNextRun("B", "cpu", 1000, 20);
  EXPECT_EQ(b.attempt, 1);
  ASSERT_TRUE(store->CompleteRun(b.run_id, b.attempt, b.lease_id, Result(3), "B", 30)->accepted);
}

TEST_F(StoreTest, CancelStopsRemainingRunsAndInvalidatesLeases) {
  auto store = OpenRw();
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(3), 3, false, 0).ok());
  auto a = **store->ClaimNextRun("A", "cpu", 1000, 0);
  auto n = store->CancelExperiment("exp", 10);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3);
  EXPECT_EQ(store->CancelExperiment("nope", 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(store->ClaimNextRun("B", "cpu", 1000, 20)->has_value());
  auto hb = store->ExtendLease(a.lease_id, 30, 1000, 0.1, "x");
  EXPECT_EQ(hb.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(hb.message().find("cancelled"), std::string::npos);
  auto c = store->CompleteRun(a.run_id, a.attempt, a.lease_id, Result(1), "A", 40);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->accepted);
  EXPECT_EQ(c->reason, "cancelled");
  auto p = store->Progress("exp");
  EXPECT_EQ(p->cancelled, 3);
  EXPECT_EQ(p->status, "cancelled");
  EXPECT_TRUE(store->ListUnfinishedExperiments()->empty());
  // An identical resubmission re-plans the cancelled runs.
  auto again = store->SubmitExperiment("exp", "y", Specs(3), 3, false, 50);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->requeued, 3);
  EXPECT_EQ(store->Progress("exp")->status, "active");
  EXPECT_TRUE(store->ClaimNextRun("B", "cpu", 1000, 60)->has_value());
}

TEST_F(StoreTest, ResubmitReusesDoneRunsAndForceReruns) {
  auto store = OpenRw();
  auto specs = Specs(3);
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", specs, 1, false, 0).ok());
  auto r1 = **store->ClaimNextRun("A", "cpu", 1000, 0);
  ASSERT_TRUE(store->CompleteRun(r1.run_id, r1.attempt, r1.lease_id, Result(5), "A", 1)->accepted);
  auto r2 = **store->ClaimNextRun("A", "cpu", 1000, 2);
  ASSERT_TRUE(store->FailRun(r2.run_id, r2.attempt, r2.lease_id, "boom", false, 3).ok());
  // Identical grid (comments/whitespace differ: hash is over run keys).
  auto same = store->SubmitExperiment("exp", "# changed comment\ny", specs, 1, false, 10);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_FALSE(same->created);
  EXPECT_EQ(same->reused_done, 1);
  EXPECT_EQ(same->requeued, 1);
  EXPECT_EQ(same->planned, 0);
  auto runs = *store->ListRuns("exp");
  EXPECT_EQ(runs[0].status, "done");
  EXPECT_EQ(runs[1].status, "planned");
  EXPECT_EQ(runs[1].attempts, 0);  // new round: max_attempts applies afresh
  EXPECT_EQ(runs[2].status, "planned");
  // A different grid under the same name is refused ...
  auto other = Specs(4);
  auto refused = store->SubmitExperiment("exp", "z", other, 1, false, 20);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find("--force"), std::string::npos);
  EXPECT_EQ(store->ListRuns("exp")->size(), 3u);  // nothing stored
  // ... unless forced: every run re-planned, old results kept keyed by attempt.
  auto forced = store->SubmitExperiment("exp", "z", other, 1, true, 30);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->requeued, 3);
  EXPECT_EQ(forced->planned, 1);
  runs = *store->ListRuns("exp");
  ASSERT_EQ(runs.size(), 4u);
  for (const auto& r : runs) {
    EXPECT_EQ(r.status, "planned");
    EXPECT_TRUE(r.metrics.empty());
  }
  auto old = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM results WHERE run_id = " +
                                         std::to_string(r1.run_id));
  EXPECT_EQ(old->rows[0][0].text, "2");
  // The rerun completes with a higher attempt; the old round's rows stay.
  std::optional<LeasedRun> rr;
  while (true) {
    auto l = **store->ClaimNextRun("A", "cpu", 1000, 40);
    if (l.run_id == r1.run_id) { rr = l; break; }
    ASSERT_TRUE(store->CompleteRun(l.run_id, l.attempt, l.lease_id, Result(1), "A", 41)->accepted);
  }
  EXPECT_EQ(rr->attempt, 2);
  ASSERT_TRUE(store->CompleteRun(rr->run_id, rr->attempt, rr->lease_id, Result(6), "A", 50)->accepted);
  EXPECT_DOUBLE_EQ(store->GetRun(r1.run_id)->metrics.at("ppl").first, 6);
  old = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM results WHERE run_id = " +
                                    std::to_string(r1.run_id));
  EXPECT_EQ(old->rows[0][0].text, "4");
  // A late result from a superseded (pre-force) lease is not accepted.
  auto stale = store->CompleteRun(r1.run_id, r1.attempt, r1.lease_id, Result(9), "A", 60);
  ASSERT_TRUE(stale.ok());
  EXPECT_FALSE(stale->accepted);
}

TEST_F(StoreTest, ForceSupersedesRunningLease) {
  auto store = OpenRw();
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(1), 3, false, 0).ok());
  auto a = **store->ClaimNextRun("A", "cpu", 1000, 0);
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(1), 3, true, 10).ok());
  EXPECT_EQ(store->ExtendLease(a.lease_id, 20, 1000, 0, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  auto c = store->CompleteRun(a.run_id, a.attempt, a.lease_id, Result(1), "A", 30);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->accepted);
  EXPECT_EQ(store->GetRun(a.run_id)->status, "planned");
}

TEST_F(StoreTest, ReadOnlyStoreAndQueryRefuseWrites) {
  {
    auto store = OpenRw();
    ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(2), 3, false, 0).ok());
  }
  auto ro_or = Store::Open(path_, OpenMode::kReadOnly);
  ASSERT_TRUE(ro_or.ok()) << ro_or.status();
  auto& ro = *ro_or;
  EXPECT_TRUE(ro->read_only());
  EXPECT_EQ(ro->SubmitExperiment("x", "y", Specs(1), 3, false, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ro->ClaimNextRun("w", "cpu", 1, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ro->ListRuns("exp")->size(), 2u);
  for (const char* bad : {"DELETE FROM runs", "UPDATE runs SET status = 'done'",
                          "INSERT INTO workers(id, registered_at, last_heartbeat_at) VALUES('x',0,0)",
                          "DROP TABLE runs", "CREATE TABLE t(x)", "ATTACH DATABASE 'other.db' AS o",
                          "PRAGMA journal_mode = DELETE", "PRAGMA user_version = 5", "BEGIN",
                          "SELECT 1; DELETE FROM runs", "SELECT 1; SELECT 2", "VACUUM", ""}) {
    auto r = ro->ExecuteReadOnlyQuery(bad);
    EXPECT_FALSE(r.ok()) << "accepted: " << bad;
  }
  auto ok = ro->ExecuteReadOnlyQuery("SELECT run_key, status FROM runs ORDER BY id; -- trailing");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->columns, (std::vector<std::string>{"run_key", "status"}));
  EXPECT_EQ(ok->rows.size(), 2u);
  auto info = ro->ExecuteReadOnlyQuery("PRAGMA table_info(runs)");
  EXPECT_TRUE(info.ok()) << info.status();
  auto limited = ro->ExecuteReadOnlyQuery("SELECT id FROM runs", 1);
  EXPECT_EQ(limited->rows.size(), 1u);
  auto nulls = ro->ExecuteReadOnlyQuery("SELECT NULL, 1, 2.5, 'x'");
  EXPECT_EQ(nulls->rows[0][0].kind, QueryCell::kNull);
  EXPECT_EQ(nulls->rows[0][1].kind, QueryCell::kInteger);
  EXPECT_EQ(nulls->rows[0][2].text, "2.5");
  EXPECT_EQ(nulls->rows[0][3].kind, QueryCell::kText);
  // The read-write store's query path refuses writes too.
  auto rw = OpenRw();
  EXPECT_FALSE(rw->ExecuteReadOnlyQuery("DELETE FROM runs").ok());
  EXPECT_EQ(rw->ListRuns("exp")->size(), 2u);
}

TEST_F(StoreTest, WorkersAndProgress) {
  auto store = OpenRw();
  ASSERT_TRUE(store->UpsertWorker({"w1", "h1", "cpu", "CPU", R"({"threads":2})", 5}).ok());
  ASSERT_TRUE(store->UpsertWorker({"w2", "h2", "cuda:0", "H100", "{}", 5}).ok());
  ASSERT_TRUE(store->WorkerHeartbeat("w1", 50).ok());
  EXPECT_EQ(store->WorkerHeartbeat("zz", 50).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(2, "auto"), 3, false, 0).ok());
  auto a = **store->ClaimNextRun("w1", "cpu", 1000, 60);
  auto b = **store->ClaimNextRun("w2", "cuda:0", 1000, 60);
  ASSERT_TRUE(store->CompleteRun(b.run_id, b.attempt, b.lease_id, Result(1), "w2", 70)->accepted);
  auto p = store->Progress("exp");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->running, 1);
  EXPECT_EQ(p->done, 1);
  ASSERT_EQ(p->workers.size(), 2u);
  EXPECT_EQ(p->workers[0].id, "w1");
  EXPECT_EQ(p->workers[0].current_run_key, a.run_key);
  EXPECT_EQ(p->workers[0].last_heartbeat_at, 60);
  EXPECT_EQ(p->workers[1].runs_done, 1);
  EXPECT_EQ(p->workers[1].device_name, "H100");
  ASSERT_TRUE(store->MarkWorker("w1", "draining").ok());
  EXPECT_EQ(store->MarkWorker("w1", "bogus").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(store->MarkWorker("w2", "gone").ok());
  auto ws = *store->ListWorkers();
  EXPECT_EQ(ws[0].status, "draining");
  EXPECT_EQ(ws[1].status, "gone");
  auto unfinished = store->ListUnfinishedExperiments();
  ASSERT_EQ(unfinished->size(), 1u);
  EXPECT_EQ((*unfinished)[0].name, "exp");
}

TEST_F(StoreTest, SurvivesReopenMidGrid) {
  int64_t run_id = 0;
  std::string lease;
  {
    auto store = OpenRw();
    ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(3), 3, false, 0).ok());
    auto a = **store->ClaimNextRun("A", "cpu", 1000, 0);
    run_id = a.run_id;
    lease = a.lease_id;
    auto b = **store->ClaimNextRun("A", "cpu", 1000, 0);
    ASSERT_TRUE(store->CompleteRun(b.run_id, b.attempt, b.lease_id, Result(1), "A", 5)->accepted);
  }
  auto store = OpenRw();
  auto unfinished = *store->ListUnfinishedExperiments();
  ASSERT_EQ(unfinished.size(), 1u);
  EXPECT_EQ(unfinished[0].running, 1);
  EXPECT_EQ(unfinished[0].done, 1);
  EXPECT_EQ(unfinished[0].planned, 1);
  // The worker still holding its lease keeps working after the restart.
  EXPECT_TRUE(store->ExtendLease(lease, 500, 1000, 0.5, "x").ok());
  auto l = store->GetRun(run_id);
  EXPECT_EQ(l->status, "running");
}

TEST_F(StoreTest, Kill9OfTheWriterLosesNothingCommitted) {
  constexpr int kRuns = 400;
  {
    auto store = OpenRw();
    ASSERT_TRUE(store->SubmitExperiment("exp", "y", Specs(kRuns), 3, false, 0).ok());
  }
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The "coordinator": claims and completes as fast as it can until it is killed.
    auto s = Store::Open(path_, OpenMode::kReadWrite);
    if (!s.ok()) _exit(3);
    for (int i = 0;; ++i) {
      auto l = (*s)->ClaimNextRun("w", "cpu", 1000, 10);
      if (!l.ok()) _exit(4);
      if (!l->has_value()) _exit(0);
      if (i % 3 == 0) continue;  // leave some runs running (their worker "dies" too)
      auto c = (*s)->CompleteRun((*l)->run_id, (*l)->attempt, (*l)->lease_id, Result(i), "w", 20);
      if (!c.ok()) _exit(5);
    }
  }
  // Kill it mid-grid, once some work is committed.
  {
    auto ro = Store::Open(path_, OpenMode::kReadOnly);
    ASSERT_TRUE(ro.ok()) << ro.status();
    for (int i = 0; i < 20000; ++i) {
      auto q = (*ro)->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM runs WHERE status = 'done'");
      ASSERT_TRUE(q.ok()) << q.status();
      if (std::stoi(q->rows[0][0].text) >= 50) break;
      usleep(1000);
    }
  }
  kill(child, SIGKILL);
  int wstatus = 0;
  waitpid(child, &wstatus, 0);
  // Restart: consistent state, every run finishes, each result recorded exactly once.
  auto store = OpenRw();
  ASSERT_NE(store, nullptr);
  auto check = store->ExecuteReadOnlyQuery(R"sql(
    SELECT (SELECT COUNT(*) FROM runs WHERE status = 'done'),
           (SELECT COUNT(*) FROM result_records),
           (SELECT COUNT(*) FROM runs r WHERE r.status = 'done' AND NOT EXISTS
              (SELECT 1 FROM results x WHERE x.run_id = r.id AND x.attempt = r.result_attempt)),
           (SELECT COUNT(*) FROM runs WHERE status = 'running' AND lease_id IS NULL))sql");
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->rows[0][0].text, check->rows[0][1].text);
  EXPECT_EQ(check->rows[0][2].text, "0");
  EXPECT_EQ(check->rows[0][3].text, "0");
  ASSERT_TRUE(store->ExpireLeases(5000).ok());
  while (true) {
    auto l = store->ClaimNextRun("w2", "cpu", 1000, 6000);
    ASSERT_TRUE(l.ok()) << l.status();
    if (!l->has_value()) break;
    ASSERT_TRUE(store->CompleteRun((*l)->run_id, (*l)->attempt, (*l)->lease_id, Result(1), "w2",
                                   6001)->accepted);
  }
  auto p = store->Progress("exp");
  EXPECT_EQ(p->done, kRuns);
  EXPECT_EQ(p->status, "done");
  auto records = store->ExecuteReadOnlyQuery("SELECT COUNT(*) FROM result_records");
  EXPECT_EQ(records->rows[0][0].text, std::to_string(kRuns));
}

}  // namespace
}  // namespace kvgrid
