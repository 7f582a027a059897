// The report's plots, from its tables' groups (report_model.h): per perplexity table, PPL against
// the cache budget (one line per policy setting, the full cache as reference lines) and the
// running mean NLL over a stream; across the generation tables of one setup, KV bytes, peak
// memory and TPOT against the context length. SVG through svg_plot.h. No torch.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "reports/report.h"
#include "reports/report_model.h"

namespace kvgrid::reports {

struct PlotLabels {
  // A run's line name, leaving out the parameters in `exclude` (the budget keys on a budget axis).
  std::function<std::string(const Run& run, const std::set<std::string>& exclude)> label;
  // The subtitle of a group's plots: model, device, dataset, and the protocol if asked.
  std::function<std::string(const GroupKey& group, const RunSpec& spec, bool with_protocol)> subtitle;
  bool multi_mode = false;  // name the full-cache reference lines by positional mode
};

struct ReportPlots {
  std::vector<PlotFile> files;     // unique, file-system-safe names
  std::vector<std::string> notes;  // plots that could not be drawn, and why
};

ReportPlots BuildReportPlots(const std::map<GroupKey, Group>& groups, const PlotLabels& labels);

}  // namespace kvgrid::reports
