// `kvgrid report`: an experiment's results as README-ready markdown (one table per dataset ×
// workload × protocol, a row per policy setting, medians with spread and N, Δ vs `full`), the runs
// that failed, a setup footer, and optional SVG plots (PPL vs cache budget, memory and TPOT vs
// context length, running NLL over token position for streaming PPL).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/store.h"

namespace kvgrid::reports {

struct ReportOptions {
  // Write SVG plots into this directory (created if needed) and link them from the markdown.
  // "" = no plots.
  std::string plots_dir;
  // How the markdown refers to plots_dir (e.g. relative to the report file). "" = plots_dir.
  std::string plots_link_prefix;
  int heading_level = 2;          // "##" for the report title, deeper levels below it
  bool include_grid_yaml = true;  // the submitted grid in a <details> block (reproducibility)
  std::string db_path;            // shown in the reproduce command ("" = omitted)
};

struct PlotFile {
  std::string filename;  // e.g. "ppl_vs_budget-wikitext-2-raw-v1-streaming.svg"
  std::string title;
  std::string svg;
};

struct RenderedReport {
  std::string markdown;
  std::vector<PlotFile> plots;  // filled when options.plots_dir is set
};

// Pure rendering from the store's views (no I/O); deterministic for the same input.
RenderedReport BuildReport(const ExperimentView& experiment, const std::vector<RunView>& runs,
                           const ReportOptions& options);

// Writes every plot into `dir` (created if missing). Errors name the file.
absl::Status WritePlots(const std::vector<PlotFile>& plots, const std::string& dir);

// Reads the experiment and its runs from `store`, renders the report and, with plots_dir set,
// writes the SVGs. NotFound when the experiment does not exist.
absl::StatusOr<std::string> RenderExperimentReport(Store& store, const std::string& experiment,
                                                   const ReportOptions& options);

}  // namespace kvgrid::reports
