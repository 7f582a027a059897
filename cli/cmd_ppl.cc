// kvgrid ppl: perplexity under a KV policy with the sliding, streaming or prefill protocol.
#include <CLI/CLI.hpp>

#include "cli/command_registry.h"
#include "cli/run_spec_flags.h"

namespace kvgrid::cli {
namespace {

std::function<int()> Setup(CLI::App& app) {
  auto f = std::make_shared<RunSpecFlags>();
  f->spec.workload = "perplexity";
  f->spec.repeats = 1;
  f->spec.warmup = 0;
  auto* cmd = app.add_subcommand("ppl", "perplexity with a KV policy (sliding | streaming | prefill)");
  AddRunSpecFlags(cmd, f.get());
  auto& p = f->spec.perplexity;
  cmd->add_option("--protocol", p.protocol, "sliding|streaming|prefill")
      ->check(CLI::IsMember({"sliding", "streaming", "prefill"}))->required();
  cmd->add_option("--max-tokens", p.max_tokens, "tokens of the text used (0 = all; streaming default 4096)");
  cmd->add_option("--max-length", p.max_length, "sliding: window length (2048 for Pythia)");
  cmd->add_option("--stride", p.stride, "sliding: stride (512)");
  cmd->add_option("--context-tokens", p.context_tokens, "prefill: context compressed by the policy");
  cmd->add_option("--continuation-tokens", p.continuation_tokens, "prefill: tokens scored after it");
  return [f]() { return ExecuteAndPrint("ppl", *f); };
}

KVGRID_REGISTER_COMMAND(ppl, "ppl", Setup);

}  // namespace
}  // namespace kvgrid::cli
