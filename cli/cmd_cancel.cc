// `kvgrid cancel EXPERIMENT`: planned and running runs become cancelled; workers learn it from
// their next heartbeat and a late result is rejected. Resubmitting the grid requeues them.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "cli/command_registry.h"
#include "coordinator/client.h"

namespace kvgrid::cli {
namespace {

struct CancelFlags {
  ClientFlags client;
  std::string experiment;
};

int RunCancel(const CancelFlags& f) {
  auto client = CoordinatorClient::Connect(f.client);
  absl::StatusOr<v1::CancelResponse> resp =
      client.ok() ? (*client)->Cancel(f.experiment)
                  : absl::StatusOr<v1::CancelResponse>(client.status());
  if (!resp.ok()) {
    std::fprintf(stderr, "kvgrid cancel: error: %s\n",
                 std::string(resp.status().message()).c_str());
    return 1;
  }
  std::printf("experiment %s cancelled: %d run(s) will not run\n", f.experiment.c_str(),
              resp->cancelled_runs());
  return 0;
}

std::function<int()> SetupCancel(CLI::App& app) {
  auto f = std::make_shared<CancelFlags>();
  CLI::App* sub = app.add_subcommand("cancel", "Cancel the remaining runs of an experiment");
  sub->add_option("experiment", f->experiment, "experiment name")->required();
  AddClientFlags(sub, &f->client);
  return [f]() { return RunCancel(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(cancel, "cancel", SetupCancel);

}  // namespace kvgrid::cli
