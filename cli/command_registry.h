// Subcommand registry for the `kvgrid` binary. Each cli/cmd_*.cc file registers its subcommand
// with a static KVGRID_REGISTER_COMMAND(...) so main.cc never needs editing when one is added.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI { class App; }

namespace kvgrid::cli {

// `setup` adds the subcommand to `app` and returns the callback run when it is selected.
// The callback returns the process exit code (0 ok, 1 failure, 2 usage error).
struct CommandRegistration {
  std::string name;
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<CommandRegistration>& CommandRegistry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::function<std::function<int()>(CLI::App&)> setup) {
    CommandRegistry().push_back({std::move(name), std::move(setup)});
  }
};

#define KVGRID_REGISTER_COMMAND(ident, name, setup_fn) \
  static ::kvgrid::cli::CommandRegistrar kvgrid_cmd_registrar_##ident(name, setup_fn)

}  // namespace kvgrid::cli
