// kvgrid bench: generation timing (TTFT, TPOT, throughput, memory, KV bytes) under a KV policy.
#include <CLI/CLI.hpp>

#include "cli/command_registry.h"
#include "cli/run_spec_flags.h"

namespace kvgrid::cli {
namespace {

std::function<int()> Setup(CLI::App& app) {
  auto f = std::make_shared<RunSpecFlags>();
  f->spec.workload = "generation";
  auto* cmd = app.add_subcommand("bench", "generation timing with a KV policy (fixed lengths, greedy)");
  AddRunSpecFlags(cmd, f.get());
  auto& g = f->spec.generation;
  cmd->add_option("--prompt-tokens", g.prompt_tokens, "prompt length (cut from the input text)")->required();
  cmd->add_option("--new-tokens", g.new_tokens, "generated tokens (EOS ignored)")->required();
  cmd->add_option("--batch", g.batch, "batch size (policies: 1)");
  cmd->add_option("--repeats", f->spec.repeats, "timed repetitions (5)");
  cmd->add_option("--warmup", f->spec.warmup, "discarded warm-up runs (2)");
  cmd->add_flag("--paired-baseline,!--no-paired-baseline", g.paired_baseline,
                "time the full cache beside the policy, interleaved, and print paired deltas "
                "with 95% intervals (default on)");
  return [f]() {
    if (f->ids_file.empty() && f->text_file.empty() && f->dataset.empty()) {
      f->dataset = "wikitext-2-raw-v1";
    }
    return ExecuteAndPrint("bench", *f);
  };
}

KVGRID_REGISTER_COMMAND(bench, "bench", Setup);

}  // namespace
}  // namespace kvgrid::cli
