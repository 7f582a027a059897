// Flags shared by `kvgrid ppl` and `kvgrid bench`: they build a RunSpec and run it through the
// same engine executor a worker uses, so `--json` prints exactly the record a worker reports.
#pragma once

#include <memory>
#include <string>

#include "core/run_spec.h"

namespace CLI { class App; }

namespace kvgrid::cli {

struct RunSpecFlags {
  RunSpec spec;
  std::string policy = "full";  // --policy; FinishRunSpec parses it into spec.policy
  std::string kv_dtype = "model";  // --kv-dtype; FinishRunSpec parses it into spec.kv_dtype
  std::string ids_file, text_file, dataset, path;
  int64_t sample = 0;
  bool json = false;
  int threads = 0;
};

// Adds --model --revision --ids --text --dataset --sample --dataset-path --policy
// --position-mode --kv-dtype --dtype --device --threads --json to `cmd`.
void AddRunSpecFlags(CLI::App* cmd, RunSpecFlags* flags);
// Fills spec.dataset from the input flags; returns an error message or "".
std::string FinishRunSpec(RunSpecFlags* flags);
// Runs the spec through MakeEngineExecutor and prints it (JSON or a short table).
int ExecuteAndPrint(const std::string& command, RunSpecFlags& flags);

}  // namespace kvgrid::cli
