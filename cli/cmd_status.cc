// `kvgrid status [EXPERIMENT]`: progress per experiment (planned, running, done, failed,
// cancelled) with the workers that hold or completed its runs; every registered worker when no
// experiment is named. --json prints the coordinator's answer as JSON.
#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <memory>

#include "cli/command_registry.h"
#include "coordinator/client.h"
#include "coordinator/results_format.h"

namespace kvgrid::cli {
namespace {

struct StatusFlags {
  ClientFlags client;
  std::string experiment;
  bool json = false;
};

int RunStatus(const StatusFlags& f) {
  auto client = CoordinatorClient::Connect(f.client);
  absl::StatusOr<v1::StatusResponse> status =
      client.ok() ? (*client)->Status(f.experiment)
                  : absl::StatusOr<v1::StatusResponse>(client.status());
  if (!status.ok()) {
    std::fprintf(stderr, "kvgrid status: error: %s\n",
                 std::string(status.status().message()).c_str());
    return 1;
  }
  if (f.json) {
    std::string out;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(*status, &out, opts);
    std::printf("%s\n", out.c_str());
    return 0;
  }
  std::printf("%s", FormatStatus(*status).c_str());
  return 0;
}

std::function<int()> SetupStatus(CLI::App& app) {
  auto f = std::make_shared<StatusFlags>();
  CLI::App* sub = app.add_subcommand("status", "Show experiment progress and workers");
  sub->add_option("experiment", f->experiment, "experiment name (default: all)");
  sub->add_flag("--json", f->json, "machine-readable output");
  AddClientFlags(sub, &f->client);
  return [f]() { return RunStatus(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(status, "status", SetupStatus);

}  // namespace kvgrid::cli
