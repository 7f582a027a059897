// The run-queue probe behind the contention guard (common/cpu_wait.h).
#include "common/cpu_wait.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace kvgrid {
namespace {

namespace fs = std::filesystem;

TEST(CpuWait, SumsTheSecondSchedstatFieldOverThreads) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("kvgrid-cpu-wait-task-" + std::to_string(getpid()));
  fs::remove_all(dir);
  for (const auto& [tid, line] : {std::pair{"101", "5000000 2500000 7\n"}, std::pair{"102", "1 1000000 2\n"}}) {
    fs::create_directories(dir / tid);
    std::ofstream(dir / tid / "schedstat") << line;
  }
  fs::create_directories(dir / "103");  // a thread that ended between readdir and open
  auto ms = RunQueueWaitMsIn(dir.c_str());
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_DOUBLE_EQ(*ms, 3.5);
  // A kernel without scheduler statistics writes zeros: unavailable, not "never waited".
  for (const char* tid : {"101", "102"}) std::ofstream(dir / tid / "schedstat") << "0 0 0\n";
  EXPECT_EQ(RunQueueWaitMsIn(dir.c_str()).status().code(), absl::StatusCode::kUnavailable);
  fs::remove_all(dir);
  auto missing = RunQueueWaitMsIn(dir.c_str());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(missing.status().message().find(dir.string()), std::string::npos);
}

// More spinning threads than CPUs must wait for one: the probe sees it. (Asserts that the wait
// exists, not how long it is.)
TEST(CpuWait, ThreadsCompetingForTheCpusWait) {
  auto before = ProcessRunQueueWaitMs();
  if (!before.ok()) GTEST_SKIP() << before.status();  // no scheduler statistics here
  const long cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  for (long i = 0; i < 2 * cpus; ++i) {
    spinners.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Read while the spinners still exist: an ended thread leaves the sum.
  auto during = ProcessRunQueueWaitMs();
  stop = true;
  for (auto& t : spinners) t.join();
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_GT(*during - *before, 10.0);
}

}  // namespace
}  // namespace kvgrid
