// kvgrid: one binary, git-style subcommands (see README "Usage").
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>

#include "cli/command_registry.h"
#include "common/blas_check.h"
#include "common/malloc_tuning.h"

namespace kvgrid::cli {
std::vector<CommandRegistration>& CommandRegistry() {
  static std::vector<CommandRegistration> registry;
  return registry;
}
}  // namespace kvgrid::cli

int main(int argc, char** argv) {
  kvgrid::EnsureBlasUsesCpuFeatures(argv);  // may restart the process with the right BLAS core
  kvgrid::RetainFreedMemoryForReuse();
  CLI::App app{"kvgrid: KV-cache compression experiments on Pythia (GPT-NeoX)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvgrid 0.1.0");
  auto& registry = kvgrid::cli::CommandRegistry();
  std::sort(registry.begin(), registry.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands;
  for (auto& reg : registry) {
    auto run = reg.setup(app);
    commands.emplace_back(app.get_subcommand(reg.name), std::move(run));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return e.get_exit_code() == 0 ? 0 : (code == 0 ? 0 : 2);
  }
  for (auto& [sub, run] : commands) {
    if (sub != nullptr && sub->parsed()) {
      try {
        return run();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kvgrid %s: error: %s\n", sub->get_name().c_str(), e.what());
        return 1;
      }
    }
  }
  return 2;
}
