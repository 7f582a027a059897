// `kvgrid submit GRID.yaml [--wait] [--force]`: sends a grid to the coordinator, which validates
// it (errors name file:line:column), expands it and stores every run before dispatching any.
// Resubmitting an identical grid reuses finished runs; --force reruns them. --wait follows the
// experiment to the end (a progress bar on a terminal) and exits 0 only if every run is done.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cli/command_registry.h"
#include "coordinator/client.h"
#include "coordinator/results_format.h"
#include "proto/rpc_common.h"

namespace kvgrid::cli {
namespace {

struct SubmitFlags {
  ClientFlags client;
  std::string grid;
  bool wait = false;
  bool force = false;
  bool json = false;
  double poll_s = 1.0;
};

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "kvgrid submit: error: %s\n", std::string(st.message()).c_str());
  return 1;
}

// Follows `name` until nothing is planned or running. Returns the last status seen.
absl::StatusOr<v1::ExperimentStatus> Wait(CoordinatorClient& client, const std::string& name,
                                          double poll_s) {
  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  std::string last_line;
  int outage = 0;
  while (true) {
    auto status = client.Status(name);
    if (!status.ok()) {
      // The coordinator may be restarting: keep following for a while.
      if (absl::IsUnavailable(status.status()) || absl::IsDeadlineExceeded(status.status())) {
        if (outage++ == 0) {
          std::fprintf(stderr, "\nkvgrid submit: %s; still waiting\n",
                       std::string(status.status().message()).c_str());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        continue;
      }
      return status.status();
    }
    outage = 0;
    if (status->experiments_size() == 0) {
      return absl::NotFoundError(absl::StrCat("experiment ", name, " disappeared"));
    }
    const v1::ExperimentStatus& e = status->experiments(0);
    std::string line = ProgressLine(e);
    if (tty) {
      std::printf("\r%s\033[K", line.c_str());
      std::fflush(stdout);
    } else if (line != last_line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    last_line = line;
    if (IsFinished(e)) {
      if (tty) std::printf("\n");
      return e;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(poll_s * 1000)));
  }
}

int RunSubmit(const SubmitFlags& f) {
  auto text = rpc::ReadFile(f.grid);
  if (!text.ok()) return Fail(text.status());
  auto client = CoordinatorClient::Connect(f.client);
  if (!client.ok()) return Fail(client.status());
  auto resp = (*client)->Submit(*text, f.grid, f.force);
  if (!resp.ok()) return Fail(resp.status());
  for (const auto& note : resp->skipped()) {
    std::fprintf(stderr, "kvgrid submit: note: %s\n", note.c_str());
  }
  if (f.json) {
    nlohmann::json j = {{"experiment", resp->experiment()}, {"created", resp->created()},
                        {"total", resp->total()},           {"planned", resp->planned()},
                        {"reused_done", resp->reused_done()}, {"requeued", resp->requeued()},
                        {"removed", resp->removed()},
                        {"skipped", std::vector<std::string>(resp->skipped().begin(),
                                                             resp->skipped().end())}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("experiment %s %s: %d runs (%d planned, %d finished runs reused, %d requeued%s)\n",
                resp->experiment().c_str(), resp->created() ? "submitted" : "resubmitted",
                resp->total(), resp->planned(), resp->reused_done(), resp->requeued(),
                resp->removed() > 0 ? absl::StrCat(", ", resp->removed(), " removed").c_str()
                                    : "");
  }
  std::fflush(stdout);
  if (!f.wait) return 0;
  auto final_status = Wait(**client, resp->experiment(), f.poll_s);
  if (!final_status.ok()) return Fail(final_status.status());
  std::printf("experiment %s %s: %d done, %d failed, %d cancelled of %d\n",
              final_status->name().c_str(), final_status->status().c_str(), final_status->done(),
              final_status->failed(), final_status->cancelled(), final_status->total());
  return final_status->done() == final_status->total() ? 0 : 1;
}

std::function<int()> SetupSubmit(CLI::App& app) {
  auto f = std::make_shared<SubmitFlags>();
  CLI::App* sub = app.add_subcommand("submit", "Submit an experiment grid (YAML) to the coordinator");
  sub->add_option("grid", f->grid, "grid YAML file")->required();
  sub->add_flag("--wait", f->wait, "follow the experiment until every run has finished");
  sub->add_flag("--force", f->force,
                "rerun finished runs / replace a different grid with the same name");
  sub->add_flag("--json", f->json, "print the submission summary as JSON");
  sub->add_option("--poll", f->poll_s, "seconds between status checks with --wait")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  AddClientFlags(sub, &f->client);
  return [f]() { return RunSubmit(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(submit, "submit", SetupSubmit);

}  // namespace kvgrid::cli
