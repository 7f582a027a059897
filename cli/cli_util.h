// Small helpers shared by the subcommands: files, id lists, JSON output, threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvgrid::cli {

absl::StatusOr<std::string> ReadFile(const std::string& path);
// Whitespace-separated integers; the error names the file and the offending token.
absl::StatusOr<std::vector<int64_t>> ReadIdsFile(const std::string& path);
// Prints "kvgrid <cmd>: error: <status>" to stderr and returns 1.
int Fail(const std::string& command, const absl::Status& status);
// Torch intra-op threads: `requested` > 0, else $KVGRID_THREADS, else every core.
int ConfigureThreads(int requested);

}  // namespace kvgrid::cli
