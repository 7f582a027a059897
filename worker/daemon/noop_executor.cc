#include "worker/daemon/noop_executor.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/host_name.h"

namespace kvgrid {
namespace {

class NoopExecutor final : public RunExecutor {
 public:
  explicit NoopExecutor(std::string device) : device_(std::move(device)) {}

  absl::StatusOr<RunResult> Execute(const RunSpec& spec, const ProgressFn& progress) override {
    if (spec.workload != "noop") {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", RunKey(spec), ": the noop executor runs only workload 'noop', not '",
          spec.workload, "' (start the worker with --executor engine)"));
    }
    if (spec.noop_ms < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("run ", RunKey(spec), ": noop_ms must be >= 0, got ", spec.noop_ms));
    }
    const auto start = std::chrono::steady_clock::now();
    const int64_t slice = 50;
    int64_t slept = 0;
    if (progress) progress(0.0, "noop");
    while (slept < spec.noop_ms) {
      int64_t step = std::min(slice, spec.noop_ms - slept);
      std::this_thread::sleep_for(std::chrono::milliseconds(step));
      slept += step;
      if (progress) progress(static_cast<double>(slept) / spec.noop_ms, "noop");
    }
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count();
    RunResult r;
    r.Add(metric::kNoopMs, static_cast<double>(spec.noop_ms));
    r.Add(metric::kElapsedMs, elapsed_ms);
    r.Add(metric::kRepeats, static_cast<double>(spec.repeats));
    r.AddSamples(metric::kElapsedMs, {elapsed_ms});
    r.environment = {{"device", device_},     {"device_name", "noop"},
                     {"executor", "noop"},    {"host", HostName()},
                     {"config", spec.ToJson()}};
    return r;
  }

  nlohmann::json Capabilities() const override {
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page_size = sysconf(_SC_PAGE_SIZE);
    return {{"device", device_},
            {"device_name", "noop executor"},
            {"memory_bytes", pages > 0 && page_size > 0
                                 ? static_cast<int64_t>(pages) * page_size
                                 : int64_t{0}},
            {"executor", "noop"}};
  }

 private:
  std::string device_;
};

}  // namespace

std::unique_ptr<RunExecutor> MakeNoopExecutor(const std::string& device) {
  return std::make_unique<NoopExecutor>(device);
}

}  // namespace kvgrid
