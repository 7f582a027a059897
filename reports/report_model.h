// Internal to reports/: the report's model — runs parsed from the store, grouped into tables
// (GroupKey) and rows (RowKey), the summaries and Δ cells of a row, and the number formatting
// every table and plot shares. report.cc builds tables and plots from it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/paired_delta.h"
#include "core/metric_catalog.h"
#include "core/policy_spec.h"
#include "core/run_spec.h"
#include "reports/statistics.h"
#include "storage/store.h"

namespace kvgrid::reports {

using nlohmann::json;

inline constexpr double kMiB = 1024.0 * 1024.0;

inline constexpr size_t kMaxErrorChars = 300;

inline constexpr size_t kMaxCurvePoints = 800;

// Formatting
std::string Fmt(double v);

// Decimals that Fmt() would use for v, so a median and its spread print alike.
int Decimals(double v);

std::string FmtInt(double v);

std::string FormatSummary(const Summary& s, double scale = 1.0);

std::string FormatDelta(std::optional<double> value, std::optional<double> base);

std::string UtcDate(int64_t ms);

std::string JsonScalar(const json& j);

std::string Heading(int level, const std::string& text);

std::string SanitizeFileName(const std::string& s);

// A run's policy as the report shows it: its name and each parameter's canonical text
// (core/policy_spec.h's parser and formatting; a spec this build no longer accepts keeps only its
// name).
struct PolicyText {
  std::string text;  // canonical text, or as stored when this build refuses it
  std::string name;
  std::map<std::string, std::string> params;
  std::optional<PolicySpec> spec;  // nullopt when this build refuses the text
};

// A run's policy from its spec, or from the runs table's text when the spec cannot be read (a
// policy this build does not know).
PolicyText PolicyTextOf(const PolicySpec& spec);
PolicyText ParsePolicyText(const std::string& text);

// Parameters that set the cache budget (the x axis of "PPL vs budget": the schema's BudgetRule);
// other parameters that vary tell the lines apart (e.g. streaming_llm's sink_tokens).
std::set<std::string> BudgetKeys(const std::string& policy);

// Runs, tables and rows
struct Run {
  const RunView* view = nullptr;
  RunSpec spec;
  bool spec_ok = false;
  std::string spec_error;
  PolicyText policy;
  json env = json::object();

  const std::vector<double>* Samples(const std::string& name) const {
    auto it = view->samples.find(name);
    if (it == view->samples.end() || it->second.empty()) return nullptr;
    return &it->second;
  }
  std::optional<double> Metric(const std::string& name) const {
    auto it = view->metrics.find(name);
    if (it == view->metrics.end()) return std::nullopt;
    return it->second.first;
  }
  const std::vector<double>* Samples(const MetricDef& m) const { return Samples(std::string(m.name)); }
  std::optional<double> Metric(const MetricDef& m) const { return Metric(std::string(m.name)); }
};

int WorkloadRank(const std::string& w);

int ProtocolRank(const std::string& p);

int PositionRank(const std::string& p);

struct GroupKey {
  int workload_rank = 0;
  std::string workload;
  int dataset_rank = 0;
  std::string dataset, split, path;
  int64_t sample = 0;
  std::string model, revision, dtype, device;
  int protocol_rank = 0;
  std::string protocol;
  std::vector<int64_t> params;  // protocol settings that matter for this workload/protocol

  auto Tie() const {
    return std::tie(workload_rank, workload, dataset_rank, dataset, split, sample, path, model,
                    revision, dtype, device, protocol_rank, protocol, params);
  }
  bool operator<(const GroupKey& o) const { return Tie() < o.Tie(); }
};

// The paired Δ a generation run measured against `full` in the same process (`delta` and its
// _ci_low/_ci_high bounds, generation_timing.h); the first run of the row that has it.
std::optional<PairedDelta> PairedOf(const std::vector<const Run*>& runs, const MetricDef& delta);

struct RowKey {
  int full_rank = 1;  // 0 for the baseline `full`
  std::string policy_name;
  double budget = 0;
  std::string policy;
  int kv_rank = 0;                  // the model's dtype first, then int8, int4, int2
  std::string kv_dtype = "model";   // KvDtype::ToString()
  int position_rank = 0;
  std::string position_mode;
  int64_t prefill_chunk = 0;  // 0 = whole prompt
  auto Tie() const {
    return std::tie(full_rank, policy_name, budget, policy, kv_rank, kv_dtype, position_rank,
                    position_mode, prefill_chunk);
  }
  bool operator<(const RowKey& o) const { return Tie() < o.Tie(); }
  // The full cache in the model's dtype: what every other row is compared with.
  bool is_full_cache() const { return policy_name == "full" && kv_dtype == "model"; }
};

struct Row {
  RowKey key;
  std::vector<const Run*> runs;
};

struct Group {
  GroupKey key;
  std::map<RowKey, Row> rows;
};

std::string ProtocolSettings(const RunSpec& s);

std::optional<double> Budget(const Run& r);

// The values of one metric over a row: raw samples of the same name when the runs kept them
// (timings: one per repeat), else the metric value of each run.
Summary MetricSummary(const Row& row, const std::string& name, double scale = 1.0);

Summary MetricSummary(const Row& row, const MetricDef& m, double scale = 1.0);

// Decode throughput per repeat: new_tokens / (TTFT + (new_tokens − 1) · TPOT), which is exactly
// generated tokens / total generation time by metrics.md's definitions. Falls back to a stored
// series or the stored metric.
Summary ThroughputSummary(const Row& row);

struct PplCell {
  std::optional<double> central;
  std::string text;
};

PplCell PplOf(const Row& row);

std::optional<double> Central(const Summary& s);

// The row's policy in backticks, marked † when TimedUnderContention (kContentionNote says why).
std::string PolicyCell(const Row& row);
// Whether a run of the row kept repeats the contention guard could not re-time quietly
// (metric disturbed_repeats > 0).
bool TimedUnderContention(const Row& row);
extern const char kContentionNote[];

// A timing Δ cell (delta: kDeltaTtftPct, ...): the row's paired Δ with its interval when its
// run measured one, else the change of `central` vs `base`, marked ᵘ (unpaired) on a policy row.
// Sets *paired / *unpaired when it shows one.
std::string TimingDeltaCell(const Row& r, const MetricDef& delta, const Row* base,
                            const std::function<std::optional<double>(const Row&)>& central,
                            bool* paired, bool* unpaired);

// A table's baseline: its `full` row, preferring original positions, then the unchunked prompt.
const Row* BaselineRow(const Group& grp);

}  // namespace kvgrid::reports
