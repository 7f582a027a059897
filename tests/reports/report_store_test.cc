// The report from a real SQLite database filled through the Store API with the fake grid
// (submit, claim, complete/fail as a worker would), opened read-only as `kvgrid report` does.
// The grid-on-the-fixture-model variant needs the engine executor (wired by the lead).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "reports/readme_section.h"
#include "reports/report.h"
#include "storage/store.h"
#include "tests/reports/report_checks.h"

namespace kvgrid::reports {
namespace {

using namespace ::kvgrid::reports::testing;  // NOLINT

class ReportStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("reports_store_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    db_ = (dir_ / "kvgrid.db").string();
    runs_ = FakeGrid();
    auto store = Store::Open(db_, OpenMode::kReadWrite);
    ASSERT_TRUE(store.ok()) << store.status();
    Store& s = **store;
    std::vector<RunSpec> specs;
    for (const auto& r : runs_) specs.push_back(r.spec);
    auto sub = s.SubmitExperiment(kFakeExperiment, kFakeGridYaml, specs, /*max_attempts=*/1,
                                  /*force=*/false, /*now_ms=*/1700000000000);
    ASSERT_TRUE(sub.ok()) << sub.status();
    ASSERT_EQ(sub->total, static_cast<int>(runs_.size()));
    ASSERT_TRUE(s.UpsertWorker({"testhost:1:cpu", "testhost", "cpu", "Fake CPU @ 2.0GHz", "{}",
                                1700000000000})
                    .ok());
    int64_t now = 1700000001000;
    for (size_t i = 0; i < runs_.size(); ++i) {
      auto lease = s.ClaimNextRun("testhost:1:cpu", "cpu", 60000, now);
      ASSERT_TRUE(lease.ok()) << lease.status();
      ASSERT_TRUE(lease->has_value());
      const LeasedRun& l = **lease;
      const FakeRun* run = nullptr;
      for (const auto& r : runs_) {
        if (RunKey(r.spec) == l.run_key) run = &r;
      }
      ASSERT_NE(run, nullptr) << l.run_key;
      now += 1000;
      if (run->fails) {
        ASSERT_TRUE(s.FailRun(l.run_id, l.attempt, l.lease_id, run->error, /*retryable=*/false, now).ok());
      } else {
        auto c = s.CompleteRun(l.run_id, l.attempt, l.lease_id, run->result, "testhost:1:cpu", now);
        ASSERT_TRUE(c.ok()) << c.status();
        ASSERT_TRUE(c->accepted) << c->reason;
      }
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::string db_;
  std::vector<FakeRun> runs_;
};

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST_F(ReportStoreTest, ReportFromReadOnlyStoreMatchesStoredValues) {
  auto store = Store::Open(db_, OpenMode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status();
  ReportOptions opt;
  opt.plots_dir = (dir_ / "plots").string();
  opt.plots_link_prefix = "plots";
  auto md = RenderExperimentReport(**store, kFakeExperiment, opt);
  ASSERT_TRUE(md.ok()) << md.status();
  CheckFakeGridReport(*md, runs_);
  EXPECT_NE(md->find("--db " + db_), std::string::npos);
  // The plots were written and are the ones BuildReport describes.
  std::vector<PlotFile> plots;
  for (const auto& e : std::filesystem::directory_iterator(dir_ / "plots")) {
    plots.push_back({e.path().filename().string(), "", ReadFile(e.path())});
  }
  CheckFakeGridPlots(plots);
}

TEST_F(ReportStoreTest, ReadmeSectionRewriteIsIdempotentAndLeavesTheRestAlone) {
  auto store = Store::Open(db_, OpenMode::kReadOnly);
  ASSERT_TRUE(store.ok()) << store.status();
  auto md = RenderExperimentReport(**store, kFakeExperiment, ReportOptions{});
  ASSERT_TRUE(md.ok()) << md.status();
  const std::string head = "# Project\n\nSome text, kept byte for byte.  \n\n<!-- kvgrid:results -->";
  const std::string tail = "<!-- /kvgrid:results -->\n\n## Later\n\nMore text\n";
  auto readme = dir_ / "README.md";
  {
    std::ofstream out(readme, std::ios::binary);
    out << head << "\nstale\n" << tail;
  }
  ASSERT_TRUE(RewriteReadmeSection(readme.string(), "results", *md).ok());
  std::string first = ReadFile(readme);
  EXPECT_EQ(first.substr(0, head.size()), head);
  EXPECT_EQ(first.substr(first.size() - tail.size()), tail);
  EXPECT_EQ(first.find("stale"), std::string::npos);
  // A second report from the same database gives the same file.
  auto md2 = RenderExperimentReport(**store, kFakeExperiment, ReportOptions{});
  ASSERT_TRUE(md2.ok());
  bool changed = true;
  ASSERT_TRUE(RewriteReadmeSection(readme.string(), "results", *md2, &changed).ok());
  EXPECT_FALSE(changed);
  EXPECT_EQ(ReadFile(readme), first);
  CheckFakeGridReport(first, runs_);
}

TEST_F(ReportStoreTest, UnknownExperimentIsNotFound) {
  auto store = Store::Open(db_, OpenMode::kReadOnly);
  ASSERT_TRUE(store.ok());
  auto md = RenderExperimentReport(**store, "no-such-experiment", ReportOptions{});
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvgrid::reports
