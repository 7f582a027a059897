// `kvgrid policies`: every KV policy with its parameters, read from the schema the grid and the
// engine validate against (core/policy_spec.h), so the list cannot drift from what runs.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_join.h"
#include "cli/command_registry.h"
#include "core/policy_spec.h"

namespace kvgrid::cli {
namespace {

std::string TypeOf(const ParamSchema& p) {
  switch (p.type) {
    case ParamType::kInt: return "integer";
    case ParamType::kReal: return "number";
    case ParamType::kEnum: return absl::StrJoin(p.choices, "|");
    case ParamType::kIntList: return "integer list";
  }
  return "?";
}

int RunPolicies(const std::string& only) {
  bool found = false;
  for (const PolicySchema& s : AllPolicySchemas()) {
    if (!only.empty() && s.name != only) continue;
    found = true;
    std::cout << s.name << " — " << s.summary << "\n";
    for (const ParamSchema& p : s.params) {
      std::cout << "    " << p.key << " (" << TypeOf(p);
      if (p.required) std::cout << ", required";
      if (!p.default_value.empty()) std::cout << ", default " << p.default_value;
      std::cout << "): " << p.help << "\n";
    }
    if (s.budget.at_budget && !s.budget.at_budget(256).empty()) {
      std::cout << "    budget set by " << absl::StrJoin(s.budget.keys, ", ") << "; 256 tokens: "
                << s.name << ":" << s.budget.at_budget(256) << "\n";
    }
  }
  if (!found) {
    std::cerr << "kvgrid policies: unknown policy '" << only << "'\n";
    return 2;
  }
  return 0;
}

std::function<int()> SetupPolicies(CLI::App& app) {
  auto only = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("policies", "List the KV policies and their parameters");
  sub->add_option("name", *only, "show only this policy");
  return [only]() { return RunPolicies(*only); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(policies, "policies", SetupPolicies);

}  // namespace kvgrid::cli
