// How long this process's threads were ready to run but waited for a CPU: the direct measure of
// another program competing for the cores while a timing runs. Linux keeps it per thread
// (/proc/self/task/<tid>/schedstat, second field: run-queue delay in ns); kvgrid sums it over the
// process's threads before and after a timed generation (worker/workloads/generation_timing.cc).
// Time the hypervisor steals from a VM is not in it.
#pragma once

#include "absl/status/statusor.h"

namespace kvgrid {

// Run-queue delay summed over the process's current threads, in ms since each thread started.
// Unavailable (absl::UnavailableError) where /proc/self/task/*/schedstat cannot be read or holds
// only zeros (a kernel without scheduler statistics).
absl::StatusOr<double> ProcessRunQueueWaitMs();

// Reads the same sum from `task_dir` (a /proc/<pid>/task-shaped folder); for tests.
absl::StatusOr<double> RunQueueWaitMsIn(const char* task_dir);

}  // namespace kvgrid
