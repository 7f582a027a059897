// The rules of a run's life on the coordinator, as named transitions: what happens to a run when
// its worker reports a failure, when its lease expires, and when a result arrives. Pure
// decisions — no SQL, no clock: storage/store.cc applies them inside its transactions, and
// tests/core/run_lifecycle_test.cc checks every rule.
//
//   planned  --lease------------------------------------------> running
//   running  --result of the current lease--------------------> done
//   running  --result of an expired lease, nobody else done---> done (the newer lease superseded)
//   running  --failure, retryable, attempts left--------------> planned after RetryBackoffMs
//   running  --failure, fatal or attempts spent---------------> failed
//   running  --lease expired, attempts left-------------------> planned at once
//   running  --lease expired, attempts spent------------------> failed
//   running  --release (worker shutting down)-----------------> planned, the attempt not counted
//   any      --cancel / forced resubmission-------------------> cancelled / planned (older
//                                                               attempts' results superseded)
#pragma once

#include <cstdint>
#include <string>

namespace kvgrid::lifecycle {

// Wait before re-leasing a run whose `attempts_used`-th attempt failed: 1 s, 2 s, 4 s, ... 60 s.
int64_t RetryBackoffMs(int64_t attempts_used);

// Where a failed or expired run goes next.
struct Next {
  bool retry = false;         // back to planned; false: failed for good
  int64_t not_before_ms = 0;  // retry: the earliest time it may be leased again
  std::string error;          // what the run records
};

// A worker reported `error` for the run's `attempts_used`-th attempt (of `max_attempts`).
Next AfterFailure(const std::string& error, bool retryable, int64_t attempts_used,
                  int64_t max_attempts, int64_t now_ms);

// The run's lease ran out without a heartbeat (its worker died or hung); `times_expired` counts
// this expiry among the run's attempts.
Next AfterLeaseExpired(const std::string& worker_id, int64_t attempts_used, int64_t max_attempts,
                       int64_t times_expired);

// What a result delivered under a lease means for its run.
enum class ResultVerdict {
  kAlreadyRecorded,  // this lease's result arrived before (a retried RPC): accepted, nothing new
  kDuplicate,        // another attempt finished the run: rejected
  kCancelled,        // the run or its experiment was cancelled: rejected
  kSuperseded,       // the attempt predates a forced resubmission: rejected
  kRecord,           // the current lease's result: recorded
  kRecordLate,       // the lease had expired but nobody else finished: recorded
};

struct ResultContext {
  std::string run_status;            // planned | running | done | failed | cancelled
  bool experiment_cancelled = false;
  int64_t attempt = 0;               // the lease's attempt
  int64_t attempt_base = 0;          // attempts before the last forced resubmission
  bool lease_is_current = false;     // the run is running under this very lease
  bool recorded_by_this_lease = false;  // done, with this lease's result of this attempt
};

ResultVerdict JudgeResult(const ResultContext& c);
bool Accepted(ResultVerdict v);
// How the lease ends ("completed", "late_completed", "duplicate", "cancelled", "superseded";
// "" for kAlreadyRecorded, whose lease ended the first time).
const char* LeaseOutcome(ResultVerdict v);
// What the worker is told.
const char* Explain(ResultVerdict v);

}  // namespace kvgrid::lifecycle
