// kvgrid init-random-model: a checkpoint with the exact shape of a Pythia size and random weights.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/cli_util.h"
#include "cli/command_registry.h"
#include "model/engine/model_loader.h"
#include "model/pythia_presets.h"

namespace kvgrid::cli {
namespace {

struct InitArgs {
  std::string preset = "pythia-70m", out, dtype = "float16", tokenizer;
  uint64_t seed = 0;
};

std::function<int()> Setup(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  auto* cmd = app.add_subcommand("init-random-model", "write a random Pythia-shaped checkpoint (Hub layout)");
  cmd->add_option("--preset", a->preset, "shape preset")->check(CLI::IsMember(PythiaPresetNames()));
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_option("--dtype", a->dtype, "float32|float16|bfloat16");
  cmd->add_option("--seed", a->seed, "random seed");
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json to copy (default: the bundled Pythia tokenizer if present)");
  return [a]() {
    std::string tok = a->tokenizer.empty() ? BundledTokenizerPath() : a->tokenizer;
    absl::StatusOr<ModelConfig> config = PythiaPresetConfig(a->preset);
    if (!config.ok()) return Fail("init-random-model", config.status());
    absl::Status s = WriteRandomModel(*config, a->out, a->dtype, a->seed, tok);
    if (!s.ok()) return Fail("init-random-model", s);
    std::printf("%s\n", a->out.c_str());
    return 0;
  };
}

KVGRID_REGISTER_COMMAND(init_random_model, "init-random-model", Setup);

}  // namespace
}  // namespace kvgrid::cli
