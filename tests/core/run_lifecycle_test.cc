// The run lifecycle rules (core/run_lifecycle.h), one transition at a time. The store's tests
// (tests/storage) check the same rules through SQLite.
#include "core/run_lifecycle.h"

#include <gtest/gtest.h>

namespace kvgrid::lifecycle {
namespace {

TEST(RunLifecycle, RetryBackOffDoublesFromOneSecondUpToAMinute) {
  EXPECT_EQ(RetryBackoffMs(0), 1000);
  EXPECT_EQ(RetryBackoffMs(1), 1000);
  EXPECT_EQ(RetryBackoffMs(2), 2000);
  EXPECT_EQ(RetryBackoffMs(3), 4000);
  EXPECT_EQ(RetryBackoffMs(7), 60000);  // 64 s capped
  EXPECT_EQ(RetryBackoffMs(100), 60000);
}

TEST(RunLifecycle, AFailureIsRetriedWhileAttemptsRemainAndOnlyIfRetryable) {
  Next n = AfterFailure("worker crashed", /*retryable=*/true, /*used=*/1, /*max=*/3, /*now=*/5000);
  EXPECT_TRUE(n.retry);
  EXPECT_EQ(n.not_before_ms, 6000);
  EXPECT_EQ(n.error, "worker crashed");
  n = AfterFailure("worker crashed", true, 3, 3, 5000);
  EXPECT_FALSE(n.retry);
  EXPECT_EQ(n.error, "worker crashed (gave up after 3 attempts)");
  n = AfterFailure("unknown policy 'x'", /*retryable=*/false, 1, 3, 5000);
  EXPECT_FALSE(n.retry);
  EXPECT_EQ(n.error, "unknown policy 'x'");
}

TEST(RunLifecycle, AnExpiredLeaseRequeuesAtOnceUntilTheAttemptsAreSpent) {
  Next n = AfterLeaseExpired("host:1:cpu", 1, 2, 1);
  EXPECT_TRUE(n.retry);
  EXPECT_EQ(n.not_before_ms, 0);
  EXPECT_EQ(n.error, "lease expired (worker host:1:cpu)");
  n = AfterLeaseExpired("host:2:cpu", 2, 2, 2);
  EXPECT_FALSE(n.retry);
  EXPECT_EQ(n.error, "lease expired 2 times (last worker host:2:cpu)");
}

TEST(RunLifecycle, EveryResultVerdict) {
  auto judge = [](ResultContext c) { return JudgeResult(c); };
  ResultContext running{"running", false, 2, 0, true, false};
  EXPECT_EQ(judge(running), ResultVerdict::kRecord);
  ResultContext late = running;
  late.lease_is_current = false;  // expired; re-leased to another worker or re-planned
  EXPECT_EQ(judge(late), ResultVerdict::kRecordLate);
  late.run_status = "planned";
  EXPECT_EQ(judge(late), ResultVerdict::kRecordLate);
  ResultContext done{"done", false, 2, 0, false, true};
  EXPECT_EQ(judge(done), ResultVerdict::kAlreadyRecorded);
  done.recorded_by_this_lease = false;
  EXPECT_EQ(judge(done), ResultVerdict::kDuplicate);
  ResultContext cancelled = running;
  cancelled.experiment_cancelled = true;
  EXPECT_EQ(judge(cancelled), ResultVerdict::kCancelled);
  cancelled = running;
  cancelled.run_status = "cancelled";
  EXPECT_EQ(judge(cancelled), ResultVerdict::kCancelled);
  ResultContext old = running;
  old.attempt_base = 2;  // a forced resubmission came after this attempt was leased
  EXPECT_EQ(judge(old), ResultVerdict::kSuperseded);

  for (ResultVerdict v : {ResultVerdict::kAlreadyRecorded, ResultVerdict::kRecord, ResultVerdict::kRecordLate}) {
    EXPECT_TRUE(Accepted(v)) << Explain(v);
  }
  for (ResultVerdict v : {ResultVerdict::kDuplicate, ResultVerdict::kCancelled, ResultVerdict::kSuperseded}) {
    EXPECT_FALSE(Accepted(v)) << Explain(v);
    EXPECT_STRNE(LeaseOutcome(v), "") << Explain(v);
  }
  EXPECT_STREQ(LeaseOutcome(ResultVerdict::kRecordLate), "late_completed");
  EXPECT_STREQ(Explain(ResultVerdict::kSuperseded), "superseded by a forced resubmission");
}

}  // namespace
}  // namespace kvgrid::lifecycle
