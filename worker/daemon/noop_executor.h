// A torch-free RunExecutor for scheduler tests and the load test: a run with workload "noop"
// sleeps `noop_ms` (reporting progress) and returns a few metrics. Any other workload is refused
// with InvalidArgument (the daemon reports that as a permanent failure).
#pragma once

#include <memory>
#include <string>

#include "worker/run_executor.h"

namespace kvgrid {

// `device` is what the executor advertises ("cpu", "cuda:0", ...); nothing runs on it.
std::unique_ptr<RunExecutor> MakeNoopExecutor(const std::string& device = "cpu");

}  // namespace kvgrid
