// What a worker daemon calls to execute one run. The engine-backed implementation lives in
// worker/workloads (LibTorch); the daemon (worker/daemon) only sees this interface. No torch.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/run_result.h"
#include "core/run_spec.h"

namespace kvgrid {

// Progress in [0,1] plus a short phase label ("loading model", "prefill", "repeat 3/5").
using ProgressFn = std::function<void(double fraction, const std::string& phase)>;

class RunExecutor {
 public:
  virtual ~RunExecutor() = default;
  // Runs `spec` to completion. Must not throw; every failure is a Status naming its cause.
  virtual absl::StatusOr<RunResult> Execute(const RunSpec& spec, const ProgressFn& progress) = 0;
  // Describes the device this executor runs on ({"device":"cpu","device_name":...,
  // "memory_bytes":..., "libtorch_version":...}) for worker registration.
  virtual nlohmann::json Capabilities() const = 0;
};

// The real executor: keeps the last model loaded across runs of the same model and dtype.
// Defined in worker/workloads (requires LibTorch). `threads`: intra-op threads for runs whose spec
// says `threads: 0` (0 = every core of the machine; `kvgrid run --workers N` gives each worker
// cores / N); the count used is recorded in every result's environment.
std::unique_ptr<RunExecutor> MakeEngineExecutor(const std::string& device, int threads = 0);

}  // namespace kvgrid
