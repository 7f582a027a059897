#include "core/run_lifecycle.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvgrid::lifecycle {

int64_t RetryBackoffMs(int64_t attempts_used) {
  const int64_t doublings = std::min<int64_t>(std::max<int64_t>(attempts_used - 1, 0), 6);
  return std::min<int64_t>(1000LL << doublings, 60000);
}

Next AfterFailure(const std::string& error, bool retryable, int64_t attempts_used,
                  int64_t max_attempts, int64_t now_ms) {
  if (retryable && attempts_used < max_attempts) {
    return {true, now_ms + RetryBackoffMs(attempts_used), error};
  }
  return {false, 0, retryable ? absl::StrCat(error, " (gave up after ", attempts_used, " attempts)") : error};
}

Next AfterLeaseExpired(const std::string& worker_id, int64_t attempts_used, int64_t max_attempts,
                       int64_t times_expired) {
  if (attempts_used >= max_attempts) {
    return {false, 0, absl::StrCat("lease expired ", times_expired, " times (last worker ", worker_id, ")")};
  }
  return {true, 0, absl::StrCat("lease expired (worker ", worker_id, ")")};
}

ResultVerdict JudgeResult(const ResultContext& c) {
  if (c.run_status == "done") {
    return c.recorded_by_this_lease ? ResultVerdict::kAlreadyRecorded : ResultVerdict::kDuplicate;
  }
  if (c.run_status == "cancelled" || c.experiment_cancelled) return ResultVerdict::kCancelled;
  if (c.attempt <= c.attempt_base) return ResultVerdict::kSuperseded;
  return c.lease_is_current ? ResultVerdict::kRecord : ResultVerdict::kRecordLate;
}

bool Accepted(ResultVerdict v) {
  return v == ResultVerdict::kAlreadyRecorded || v == ResultVerdict::kRecord ||
         v == ResultVerdict::kRecordLate;
}

const char* LeaseOutcome(ResultVerdict v) {
  switch (v) {
    case ResultVerdict::kAlreadyRecorded: return "";
    case ResultVerdict::kDuplicate: return "duplicate";
    case ResultVerdict::kCancelled: return "cancelled";
    case ResultVerdict::kSuperseded: return "superseded";
    case ResultVerdict::kRecord: return "completed";
    case ResultVerdict::kRecordLate: return "late_completed";
  }
  return "";
}

const char* Explain(ResultVerdict v) {
  switch (v) {
    case ResultVerdict::kAlreadyRecorded: return "already recorded (retry)";
    case ResultVerdict::kDuplicate: return "duplicate";
    case ResultVerdict::kCancelled: return "cancelled";
    case ResultVerdict::kSuperseded: return "superseded by a forced resubmission";
    case ResultVerdict::kRecord: return "recorded";
    case ResultVerdict::kRecordLate: return "late result accepted (lease expired)";
  }
  return "";
}

}  // namespace kvgrid::lifecycle
