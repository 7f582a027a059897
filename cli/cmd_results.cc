// `kvgrid results EXPERIMENT [--format csv|json|md] [--db FILE]`: every run of an experiment with its status,
// attempts, policy, dataset, worker and metrics. json: an array with one object per run
// (run_key, status, attempts, policy, dataset, workload, device, worker, error, metrics {name:
// value}, units, spec, result_attempt, environment; samples with --samples). From the
// coordinator, or with --db straight from a SQLite database (read-only; no coordinator needed,
// as after `kvgrid run`).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <memory>

#include "cli/command_registry.h"
#include "coordinator/client.h"
#include "coordinator/results_format.h"

namespace kvgrid::cli {
namespace {

struct ResultsFlags {
  ClientFlags client;
  std::string experiment;
  std::string format = "md";
  std::string output;
  bool samples = false;
  std::string db;
};

int RunResults(const ResultsFlags& f) {
  auto fail = [](const absl::Status& st) {
    std::fprintf(stderr, "kvgrid results: error: %s\n", std::string(st.message()).c_str());
    return 1;
  };
  absl::StatusOr<v1::ResultsResponse> results;
  if (!f.db.empty()) {
    auto store = Store::Open(f.db, OpenMode::kReadOnly);
    if (!store.ok()) return fail(store.status());
    auto exp = (*store)->GetExperiment(f.experiment);
    if (!exp.ok()) return fail(exp.status());
    auto runs = (*store)->ListRuns(f.experiment);
    if (!runs.ok()) return fail(runs.status());
    results = ResultsFromStore(*exp, *runs, f.samples);
  } else {
    auto client = CoordinatorClient::Connect(f.client);
    if (!client.ok()) return fail(client.status());
    results = (*client)->Results(f.experiment, f.samples);
  }
  if (!results.ok()) return fail(results.status());
  auto text = FormatResults(*results, f.format);
  if (!text.ok()) return fail(text.status());
  if (f.output.empty() || f.output == "-") {
    std::fwrite(text->data(), 1, text->size(), stdout);
    return 0;
  }
  std::ofstream out(f.output, std::ios::binary);
  out << *text;
  if (!out) return fail(absl::InternalError(f.output + ": cannot write"));
  return 0;
}

std::function<int()> SetupResults(CLI::App& app) {
  auto f = std::make_shared<ResultsFlags>();
  CLI::App* sub = app.add_subcommand("results", "Print the runs and metrics of an experiment");
  sub->add_option("experiment", f->experiment, "experiment name")->required();
  sub->add_option("--format", f->format, "csv | json | md")
      ->capture_default_str()
      ->check(CLI::IsMember({"csv", "json", "md"}));
  sub->add_option("-o,--output", f->output, "write to this file instead of stdout");
  sub->add_flag("--samples", f->samples, "include raw per-repetition samples (json)");
  sub->add_option("--db", f->db, "read this SQLite database directly (no coordinator)");
  AddClientFlags(sub, &f->client);
  return [f]() { return RunResults(*f); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(results, "results", SetupResults);

}  // namespace kvgrid::cli
